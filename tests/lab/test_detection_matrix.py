"""The detection matrix: for each lab flavour, the healthy lab passes every check, and each fault
makes exactly the checks it breaks fail — with a diagnosis naming the broken part — while every
other check still passes. This is the project's main quality measure (DESIGN.md, "Testing").

Each scenario runs the real suite (`pytest checks/ ...`) in a subprocess against one shared lab
per flavour, the way a user would, and reads its JUnit XML.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import requires_root

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [requires_root, pytest.mark.lab]

FLAVORS = ("vpc-cni", "flannel")


@dataclass
class Outcome:
    test: str    # test function name
    params: str  # the id inside the brackets
    outcome: str  # passed | failed | skipped | error
    message: str


@dataclass
class LabUnderTest:
    name: str
    env: dict[str, str]
    status: dict
    targets: list[dict]  # the pods the suite is pointed at

    def pod(self, key: str) -> dict:
        return next(p for p in self.status["pods"] if f"{p['namespace']}/{p['name']}" == key)


def _worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw").replace("gw", "")[:2]


def _start(flavor: str) -> LabUnderTest:
    from netconform.lab.cli import lab_env, start_lab, stop_lab
    from netconform.lab.state import read_json

    name = f"dm{flavor[0]}{_worker_suffix()}{os.getpid() % 1000}"
    paths = start_lab(name, flavor)
    try:
        status = read_json(paths.status)
        apps = [p for p in status["pods"] if not p["host_network"] and p["namespace"] != "kube-system"]
        nodes = [n["name"] for n in status["nodes"]]
        web = [p for p in apps if p["name"].startswith("web-")]
        # Sources on both nodes, incl. the faults' default targets (first and last web pod), the
        # StatefulSet pod and, in vpc-cni, an SGFP pod.
        chosen = [web[0], next(p for p in apps if p["name"] == "db-0"), web[-1]]
        chosen += [p for p in apps if p["name"].startswith("payments-") and p["node"] == nodes[-1]][:1]
        return LabUnderTest(name, {**os.environ, **lab_env(paths)}, status, chosen)
    except BaseException:
        stop_lab(name)
        raise


@pytest.fixture(scope="module")
def labs():
    """One lab per flavour, made on first use and removed when the module ends."""
    from netconform.lab.cli import stop_lab

    made: dict[str, LabUnderTest] = {}
    yield made
    for lab in made.values():
        stop_lab(lab.name)


@pytest.fixture
def lab(labs, flavor) -> LabUnderTest:
    if flavor not in labs:
        labs[flavor] = _start(flavor)
    return labs[flavor]


# Each flavour's scenarios stay on one xdist worker (one lab each; the flavours run side by side).
FLAVOR_PARAMS = [pytest.param(f, marks=pytest.mark.xdist_group(f"matrix-{f}")) for f in FLAVORS]


def run_suite(lab: LabUnderTest, tmp_path: Path) -> list[Outcome]:
    """Run the suite against the lab; the outcomes from its results.json (the product's own record),
    whose `diagnosis` is exactly the check's sentence — no traceback or parameter repr in it that
    could name the broken part for the check."""
    reports = tmp_path / "reports"
    argv = [sys.executable, "-m", "pytest", "checks/", "-q", "-p", "no:cacheprovider", "-n", "3",
            "--probe-timeout", "1", "--report-dir", str(reports),
            "--service", "kube-system/kube-dns", "--service", "default/kubernetes", "--service", "default/web"]
    for p in lab.targets:
        argv += ["--pod", f"{p['namespace']}/{p['name']}"]
    proc = subprocess.run(argv, cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=600)
    found = sorted(reports.glob("*/results.json"))
    assert len(found) == 1, (f"the suite wrote {len(found)} results.json (exit {proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    outcomes = []
    for r in json.loads(found[0].read_text())["results"]:
        test, _, params = r["nodeid"].split("::")[-1].partition("[")
        outcomes.append(Outcome(test, params.rstrip("]"), r["outcome"], r.get("diagnosis") or ""))
    assert outcomes, f"the suite ran no check:\n{proc.stdout[-3000:]}"
    return outcomes


# -- what each fault breaks ------------------------------------------------------------------------
Rule = Callable[[Outcome], bool]


def _src(o: Outcome, key: str) -> bool:
    """The check ran from pod `key` (its id starts with the pod)."""
    return o.params == key or o.params.startswith(key + "-")


def _expect_gateway_down(lab: LabUnderTest, target: str) -> tuple[Rule, Rule]:
    name = target.split("/")[1]
    # The route and its veth are intact: only forwarding stops. A pod reaching its own Service
    # endpoint never crosses its host veth, so that one still works.
    must = lambda o: (_src(o, target) and o.test != "test_gateway_route"
                      and not (o.test == "test_service_endpoint" and f"-{name}(" in o.params)) or (
        o.test.startswith("test_pod_to_pod") and o.params.endswith("-to-" + target)) or (
        o.test == "test_service_endpoint" and f"-{name}(" in o.params and not _src(o, target))
    # A share of default/web's connections time out (the target is one of its endpoints). The
    # ClusterIP check's parallel attempts make a pass near-certain (p < 1e-8 of all missing the
    # live ones); should chance still fail it, its diagnosis must name the cut-off pod.
    may = lambda o: o.test == "test_service_clusterip" and "default/web:" in o.params
    return must, may


def _expect_dns_down(lab, target) -> tuple[Rule, Rule]:
    must = lambda o: o.test.startswith("test_dns_") or (
        o.test.startswith("test_service_") and "kube-system/kube-dns:" in o.params)
    return must, lambda o: False


def _expect_dns_replica_down(lab, target) -> tuple[Rule, Rule]:
    name = target.split("/")[1]
    must = lambda o: (o.test == "test_dns_replica" and f"-{name}-" in o.params) or (
        o.test == "test_service_endpoint" and "kube-system/kube-dns:" in o.params and f"-{name}(" in o.params)
    # Queries through the kube-dns ClusterIP land on the dead replica when kube-proxy picks it:
    # dns.resolves asks once per name, as the pod's resolver does, so it fails by chance (and must
    # then name the replica); the ClusterIP checks retry until chance is ruled out, but may too.
    may = lambda o: o.test in ("test_dns_resolves", "test_dns_nxdomain", "test_dns_clusterip") or (
        o.test == "test_service_clusterip" and "kube-system/kube-dns:" in o.params)
    return must, may


def _expect_dns_udp_blocked(lab, target) -> tuple[Rule, Rule]:
    must = lambda o: (o.test.startswith("test_dns_") and o.params.endswith("-udp")) or (
        o.test.startswith("test_service_") and "kube-system/kube-dns:53/udp" in o.params)
    return must, lambda o: False


def _expect_apiserver_endpoint_down(lab, target) -> tuple[Rule, Rule]:
    must = lambda o: (o.test in ("test_apiserver_endpoint", "test_apiserver_node_endpoint")
                      and o.params.endswith(f"-{target}:443")) or (
        o.test == "test_service_endpoint" and o.params.endswith(f"-{target}:443"))
    return must, lambda o: False


def _expect_service_endpoint_down(lab, target) -> tuple[Rule, Rule]:
    name = target.split("/")[1]
    must = lambda o: (o.test == "test_pod_to_pod_tcp" and o.params.endswith("-to-" + target)) or (
        o.test == "test_service_endpoint" and f"default/web:80/tcp-{name}(" in o.params)
    return must, lambda o: False


def _expect_kube_dns_dnat_missing(lab, target) -> tuple[Rule, Rule]:
    on_node = [f"{p['namespace']}/{p['name']}" for p in lab.targets if p["node"] == target]
    must = lambda o: any(_src(o, k) for k in on_node) and (
        o.test in ("test_dns_resolves", "test_dns_nxdomain", "test_dns_clusterip")
        or (o.test == "test_service_clusterip" and "kube-system/kube-dns:" in o.params))
    return must, lambda o: False


@dataclass
class Scenario:
    fault: str
    target: Callable[[LabUnderTest], str]
    expect: Callable[[LabUnderTest, str], tuple[Rule, Rule]]
    diagnosis: tuple[str, ...]  # words every failing check's message must contain (target: {target})


def _first_web(lab):
    return next(f"{p['namespace']}/{p['name']}" for p in lab.targets if p["name"].startswith("web-"))


def _last_web(lab):
    return [f"{p['namespace']}/{p['name']}" for p in lab.targets if p["name"].startswith("web-")][-1]


def _coredns(lab) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in lab.status["pods"] if p["name"].startswith("coredns-")]


SCENARIOS = {
    "gateway-down": Scenario("gateway-down", _first_web, _expect_gateway_down, ("{target}",)),
    "dns-down": Scenario("dns-down", lambda lab: "", _expect_dns_down, ("coredns",)),
    "dns-replica-down": Scenario("dns-replica-down", lambda lab: _coredns(lab)[0], _expect_dns_replica_down,
                                 ("{name}",)),
    "dns-udp-blocked": Scenario("dns-udp-blocked", lambda lab: "", _expect_dns_udp_blocked, ("UDP", "coredns")),
    "apiserver-endpoint-down": Scenario("apiserver-endpoint-down", lambda lab: lab.status["apiserver_endpoints"][0],
                                        _expect_apiserver_endpoint_down, ("{target}",)),
    "service-endpoint-down": Scenario("service-endpoint-down", _last_web, _expect_service_endpoint_down,
                                      ("{name}", "refused")),
    "kube-dns-dnat-missing": Scenario("kube-dns-dnat-missing", lambda lab: lab.status["nodes"][0]["name"],
                                      _expect_kube_dns_dnat_missing, ("{target}", "kube-proxy rules for")),
}


# Skips that mean "not applicable here" whatever the fault: the lab is IPv4-only and sends
# nothing outside unless asked.
NOT_APPLICABLE = ("has no IPv6 address", "no external target")


def _names(o: Outcome, words: list[str]) -> bool:
    """The diagnosis names every one of `words` (case aside: "53/udp" names UDP)."""
    return all(w.lower() in o.message.lower() for w in words)


def _unexpected(outcomes: list[Outcome], must: Rule, may: Rule, names: list[str] = ()) -> list[str]:
    """Everything that is not exactly the scenario: a check that `may` fail by chance is allowed
    to only when its diagnosis names the broken part (every word of `names`)."""
    problems = []
    for o in outcomes:
        if o.outcome == "error":
            problems.append(f"ERROR (the suite broke) {o.test}[{o.params}]: {o.message[:300]}")
        elif o.outcome == "failed" and not must(o) and may(o) and not _names(o, names):
            problems.append(f"chance failure that does not name {names} {o.test}[{o.params}]: {o.message[:400]}")
        elif o.outcome == "failed" and not (must(o) or may(o)):
            problems.append(f"false alarm {o.test}[{o.params}]: {o.message[:300]}")
        elif o.outcome == "passed" and must(o):
            problems.append(f"missed fault {o.test}[{o.params}]")
        elif o.outcome == "skipped" and not any(r in o.message for r in NOT_APPLICABLE):
            problems.append(f"unexpected skip {o.test}[{o.params}]: {o.message[:200]}")
    return problems


@pytest.mark.parametrize("flavor", FLAVOR_PARAMS)
def test_healthy_lab_passes_every_check(lab, tmp_path):
    outcomes = run_suite(lab, tmp_path)
    problems = _unexpected(outcomes, lambda o: False, lambda o: False)
    assert not problems, "\n".join(problems)
    ran = {o.test for o in outcomes if o.outcome == "passed"}
    # every check family actually ran (not skipped away)
    for t in ("test_gateway_route", "test_gateway_reachable", "test_apiserver_clusterip", "test_apiserver_endpoint",
              "test_apiserver_node_clusterip", "test_dns_resolves", "test_dns_nxdomain", "test_dns_clusterip",
              "test_dns_replica", "test_pod_to_pod_icmp", "test_pod_to_pod_tcp", "test_service_clusterip",
              "test_service_endpoint"):
        assert t in ran, f"{t} never passed on the healthy lab"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("flavor", FLAVOR_PARAMS)
def test_fault_is_detected_exactly(lab, scenario, tmp_path, record_property):
    from netconform.lab.cli import lab_fault, lab_heal

    sc = SCENARIOS[scenario]
    target = sc.target(lab)
    lab_fault(lab.name, sc.fault, target)
    try:
        outcomes = run_suite(lab, tmp_path)
    finally:
        lab_heal(lab.name, None)
    must, may = sc.expect(lab, target)
    words = [w.format(target=target, name=target.split("/")[-1]) for w in sc.diagnosis]
    problems = _unexpected(outcomes, must, may, words)
    assert not problems, f"{sc.fault} ({target}):\n" + "\n".join(problems)
    failed = [o for o in outcomes if o.outcome == "failed"]
    assert failed, f"{sc.fault} made no check fail"
    # How often chance was involved (JUnit property): the count the closing notes report.
    record_property("chance_failures", sum(1 for o in failed if not must(o)))
    for o in failed:
        assert _names(o, words), f"{o.test}[{o.params}] diagnosis does not name {words}: {o.message[:400]}"
