"""Every lab fault, applied and healed, changes exactly what it says — observed from inside the
lab's namespaces with the product's own probes (node-local runner), one shared lab per flavour.

Each test first shows the healthy baseline (so a probe that can never succeed cannot pass a
"broken" check), then the broken state, including the neighbours the fault must not touch, then
the healed state. Every test heals what it applied in `finally`; an autouse fixture heals
anything left over, so a failing test never leaks a fault into the next one.
"""
# The probes are lambdas over loop variables, but `expect` calls them at once (never later):
# ruff: noqa: B023
from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from tests.conftest import requires_root
from tests.lab.conftest import FLAVORS, RunningLab, cli, run_probe

pytestmark = [requires_root, pytest.mark.lab]

FAIL_TIMEOUT = 1.0  # seconds a probe waits where no answer is the expected outcome
OK_TIMEOUT = 10.0  # where an answer is expected: generous (a loaded machine), only a failure waits it out
EXPECT_WITHIN = 120.0  # how long `expect` keeps probing until the state it expects shows


@pytest.fixture(scope="module", params=FLAVORS)
def flab(request, lab) -> RunningLab:
    return lab(request.param)


@pytest.fixture(autouse=True)
def no_fault_survives(flab):
    """Start from and return to a healthy lab, whatever the test did."""
    from netconform.lab.cli import lab_heal

    if flab.read_status()["faults"]:
        lab_heal(flab.name, None)
    yield
    lab_heal(flab.name, None)
    assert flab.read_status()["faults"] == []


# -- probes from inside the namespaces -----------------------------------------------------------
def expect(what: str, run: Callable[[], Any], ok: Callable[[Any], bool], within: float = EXPECT_WITHIN) -> Any:
    """Run the probe until `ok(result)` (retries absorb a lost datagram, a server that is still
    closing, a reply a loaded machine made late); fail with the last result after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = run()
        if ok(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: got {json.dumps(result, default=str)[:1500]}")
        time.sleep(0.2)


def ping(src: dict, dst: str, timeout: float = FAIL_TIMEOUT) -> dict:
    return run_probe(src["netns"], "icmp:ping", dst=dst, count=2, timeout=timeout, interval=0.05)


def tcp(src: dict, ip: str, port: int, timeout: float = FAIL_TIMEOUT) -> dict:
    return run_probe(src["netns"], "tcp:connect", ip=ip, port=port, timeout=timeout)


def dns(lab: RunningLab, src: dict, server: str, *, tcp: bool, timeout: float = FAIL_TIMEOUT) -> dict:
    name = f"kubernetes.default.svc.{lab.status['cluster_domain']}."
    return run_probe(src["netns"], "dns:query", server=server, name=name, tcp=tcp, timeout=timeout)


def livez(lab: RunningLab, src: dict, ip: str, timeout: float = FAIL_TIMEOUT) -> dict:
    return run_probe(src["netns"], "https:get", ip=ip, port=443, path="/livez",
                     ca_pem=lab.ca_pem, timeout=timeout)


def answered(lab: RunningLab) -> Callable[[dict], bool]:
    return lambda r: r["ok"] and r["answers"] == [lab.status["kubernetes_service_ip"]]


def no_answer(r: dict) -> bool:
    return not r["ok"] and r["rcode"] is None


def client(lab: RunningLab) -> dict:
    """db-0: an ordinary pod that is no fault's default target (first node, both flavours)."""
    return lab.pod("shop/db-0")


def key(p: dict) -> str:
    return f"{p['namespace']}/{p['name']}"


def faults_in_status(lab: RunningLab) -> list[tuple[str, str]]:
    return [(f["name"], f["target"]) for f in lab.read_status()["faults"]]


# -- one fault at a time -----------------------------------------------------------------------------
def test_gateway_down(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    target = flab.web_pods[0]  # the fault's default target
    node = flab.node(target["node"])
    neighbour = next(p for p in flab.pods(node=node["name"]) if p is not target)
    far = next(p for p in flab.pods() if p["node"] != node["name"])
    for src in (target, neighbour):
        expect(f"healthy: {key(src)} pings its node", lambda: ping(src, node["ip"], OK_TIMEOUT), lambda r: r["ok"])
        expect(f"healthy: {key(src)} reaches kube-proxy healthz on its node",
               lambda: tcp(src, node["ip"], 10256, OK_TIMEOUT), lambda r: r["ok"])
    try:
        rec = lab_fault(flab.name, "gateway-down")["result"]
        assert (rec["name"], rec["target"]) == ("gateway-down", key(target))
        expect("fault: the target cannot ping its node", lambda: ping(target, node["ip"]),
               lambda r: not r["ok"] and r["received"] == 0)
        expect("fault: the target cannot connect to its node", lambda: tcp(target, node["ip"], 10256),
               lambda r: not r["ok"])
        expect("fault: nothing is forwarded for the target (pod on another node)", lambda: ping(target, far["ip"]),
               lambda r: not r["ok"])
        expect(f"fault: {key(neighbour)} on the same node still pings the node",
               lambda: ping(neighbour, node["ip"], OK_TIMEOUT), lambda r: r["ok"])
        expect(f"fault: {key(neighbour)} still connects to the node",
               lambda: tcp(neighbour, node["ip"], 10256, OK_TIMEOUT), lambda r: r["ok"])
        expect(f"fault: {key(neighbour)} still reaches a pod on another node",
               lambda: ping(neighbour, far["ip"], OK_TIMEOUT), lambda r: r["ok"])
    finally:
        lab_heal(flab.name, "gateway-down")
    expect("healed: the target pings its node again", lambda: ping(target, node["ip"], OK_TIMEOUT), lambda r: r["ok"])
    expect("healed: the target connects to its node again", lambda: tcp(target, node["ip"], 10256, OK_TIMEOUT),
           lambda r: r["ok"])
    expect("healed: the target reaches a pod on another node", lambda: ping(target, far["ip"], OK_TIMEOUT),
           lambda r: r["ok"])


def test_dns_down(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    servers = [p["ip"] for p in flab.coredns_pods]
    assert len(servers) == 2
    for ip in servers:
        for over_tcp in (False, True):
            expect(f"healthy: CoreDNS {ip} answers (tcp={over_tcp})",
                   lambda: dns(flab, src, ip, tcp=over_tcp, timeout=OK_TIMEOUT), answered(flab))
    try:
        lab_fault(flab.name, "dns-down")
        for ip in servers:
            for over_tcp in (False, True):
                expect(f"fault: CoreDNS {ip} gives no answer (tcp={over_tcp})",
                       lambda: dns(flab, src, ip, tcp=over_tcp), no_answer)
        expect("fault: the kube-dns ClusterIP gives no answer",
               lambda: dns(flab, src, flab.status["dns_service_ip"], tcp=False), no_answer)
        # only DNS: the CoreDNS pods themselves are still there
        for p in flab.coredns_pods:
            expect(f"fault: the CoreDNS pod {p['ip']} still answers ping", lambda: ping(src, p["ip"], OK_TIMEOUT),
                   lambda r: r["ok"])
    finally:
        lab_heal(flab.name, "dns-down")
    for ip in servers:
        for over_tcp in (False, True):
            expect(f"healed: CoreDNS {ip} answers (tcp={over_tcp})",
                   lambda: dns(flab, src, ip, tcp=over_tcp, timeout=OK_TIMEOUT), answered(flab))


def test_dns_replica_down(flab):
    """One replica stops answering while the other, and the ClusterIP through it, still do."""
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    down, up = flab.coredns_pods  # the fault's default target is the first
    kube_dns = flab.status["dns_service_ip"]
    try:
        rec = lab_fault(flab.name, "dns-replica-down")["result"]
        assert rec["target"] == key(down)
        for over_tcp in (False, True):
            expect(f"fault: CoreDNS {down['ip']} gives no answer (tcp={over_tcp})",
                   lambda: dns(flab, src, down["ip"], tcp=over_tcp), no_answer)
            expect(f"fault: CoreDNS {up['ip']} still answers (tcp={over_tcp})",
                   lambda: dns(flab, src, up["ip"], tcp=over_tcp, timeout=OK_TIMEOUT), answered(flab))
        # kube-dns still balances onto the dead replica: some queries through it fail, some answer
        results = [dns(flab, src, kube_dns, tcp=True, timeout=OK_TIMEOUT) for _ in range(40)]
        assert any(answered(flab)(r) for r in results) and any(no_answer(r) for r in results), \
            [r["error_kind"] or r["rcode"] for r in results]
        expect("fault: the dead replica's pod still answers ping", lambda: ping(src, down["ip"], OK_TIMEOUT),
               lambda r: r["ok"])
    finally:
        lab_heal(flab.name, "dns-replica-down")
    expect(f"healed: CoreDNS {down['ip']} answers again",
           lambda: dns(flab, src, down["ip"], tcp=False, timeout=OK_TIMEOUT), answered(flab))


def test_dns_udp_blocked(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    servers = [p["ip"] for p in flab.coredns_pods]
    for ip in servers:
        expect(f"healthy: CoreDNS {ip} answers over UDP",
               lambda: dns(flab, src, ip, tcp=False, timeout=OK_TIMEOUT), answered(flab))
    try:
        lab_fault(flab.name, "dns-udp-blocked")
        for ip in servers:
            expect(f"fault: UDP/53 to {ip} times out", lambda: dns(flab, src, ip, tcp=False),
                   lambda r: no_answer(r) and r["error_kind"] == "timeout")
            expect(f"fault: TCP/53 to {ip} still answers",
                   lambda: dns(flab, src, ip, tcp=True, timeout=OK_TIMEOUT), answered(flab))
    finally:
        lab_heal(flab.name, "dns-udp-blocked")
    for ip in servers:
        expect(f"healed: CoreDNS {ip} answers over UDP again",
               lambda: dns(flab, src, ip, tcp=False, timeout=OK_TIMEOUT), answered(flab))


def test_apiserver_endpoint_down(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    down_ip, other_ip = flab.status["apiserver_endpoints"]  # the fault's default target is the first

    def healthy(r: dict) -> bool:
        cert = r.get("peer_cert") or {}
        return r["ok"] and r["status"] == 200 and cert.get("verified") is True and \
            cert.get("issuer") == "CN=netconform-lab-ca"

    for ip in (down_ip, other_ip):
        expect(f"healthy: {ip}/livez is 200 with a certificate from the lab CA",
               lambda: livez(flab, src, ip, OK_TIMEOUT), healthy)
    try:
        rec = lab_fault(flab.name, "apiserver-endpoint-down")["result"]
        assert rec["target"] == down_ip
        expect(f"fault: {down_ip}/livez fails (nothing listens)", lambda: livez(flab, src, down_ip),
               lambda r: not r["ok"] and r["status"] is None and r["error_kind"] == "refused")
        expect(f"fault: the other endpoint {other_ip}/livez is still 200",
               lambda: livez(flab, src, other_ip, OK_TIMEOUT), healthy)
        expect(f"fault: {down_ip} itself is still reachable (only the apiserver is down)",
               lambda: ping(src, down_ip, OK_TIMEOUT), lambda r: r["ok"])
    finally:
        lab_heal(flab.name, "apiserver-endpoint-down")
    expect(f"healed: {down_ip}/livez is 200 again", lambda: livez(flab, src, down_ip, OK_TIMEOUT), healthy)


def test_service_endpoint_down(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    web = flab.web_pods
    target = web[-1]  # the fault's default target: the last web pod (last node)
    port = 8080
    for p in web:
        expect(f"healthy: {key(p)} accepts on :{port}", lambda: tcp(src, p["ip"], port, OK_TIMEOUT),
               lambda r: r["ok"])
    try:
        rec = lab_fault(flab.name, "service-endpoint-down")["result"]
        assert rec["target"] == key(target)
        expect(f"fault: {key(target)} refuses :{port}", lambda: tcp(src, target["ip"], port),
               lambda r: not r["ok"] and r["error_kind"] == "refused")
        for p in web[:-1]:
            expect(f"fault: the other web pod {key(p)} still accepts", lambda: tcp(src, p["ip"], port, OK_TIMEOUT),
                   lambda r: r["ok"])
        expect(f"fault: {key(target)} itself is still up (pings)", lambda: ping(src, target["ip"], OK_TIMEOUT),
               lambda r: r["ok"])
    finally:
        lab_heal(flab.name, "service-endpoint-down")
    expect(f"healed: {key(target)} accepts again", lambda: tcp(src, target["ip"], port, OK_TIMEOUT),
           lambda r: r["ok"])


def test_kube_dns_dnat_missing(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    broken_node = flab.node(0)  # the fault's default target
    on_broken = client(flab)
    assert on_broken["node"] == broken_node["name"]
    on_other = next(p for p in flab.web_pods if p["node"] != broken_node["name"])
    cluster_ip = flab.status["dns_service_ip"]
    for src in (on_broken, on_other):
        expect(f"healthy: the kube-dns ClusterIP answers {key(src)}",
               lambda: dns(flab, src, cluster_ip, tcp=False, timeout=OK_TIMEOUT), answered(flab))
    try:
        rec = lab_fault(flab.name, "kube-dns-dnat-missing")["result"]
        assert rec["target"] == broken_node["name"]
        for over_tcp in (False, True):
            expect(f"fault: no answer from the ClusterIP on {broken_node['name']} (tcp={over_tcp})",
                   lambda: dns(flab, on_broken, cluster_ip, tcp=over_tcp), no_answer)
            expect(f"fault: the ClusterIP still answers on the other node (tcp={over_tcp})",
                   lambda: dns(flab, on_other, cluster_ip, tcp=over_tcp, timeout=OK_TIMEOUT), answered(flab))
        for p in flab.coredns_pods:  # only the service rules are gone: CoreDNS pods answer directly
            expect(f"fault: CoreDNS pod {p['ip']} still answers {key(on_broken)} directly",
                   lambda: dns(flab, on_broken, p["ip"], tcp=False, timeout=OK_TIMEOUT), answered(flab))
    finally:
        lab_heal(flab.name, "kube-dns-dnat-missing")
    expect(f"healed: the ClusterIP answers on {broken_node['name']} again",
           lambda: dns(flab, on_broken, cluster_ip, tcp=False, timeout=OK_TIMEOUT), answered(flab))


# -- faults together and in status ------------------------------------------------------------------
def test_two_faults_combine_and_heal_separately(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    src = client(flab)
    dns_ip = flab.coredns_pods[0]["ip"]
    target = flab.web_pods[-1]
    try:
        lab_fault(flab.name, "dns-udp-blocked")
        lab_fault(flab.name, "service-endpoint-down")
        assert faults_in_status(flab) == [("dns-udp-blocked", ""), ("service-endpoint-down", key(target))]
        expect("both: UDP DNS times out", lambda: dns(flab, src, dns_ip, tcp=False), no_answer)
        expect("both: the endpoint refuses", lambda: tcp(src, target["ip"], 8080),
               lambda r: r["error_kind"] == "refused")

        healed = lab_heal(flab.name, "dns-udp-blocked")["result"]
        assert [h["name"] for h in healed] == ["dns-udp-blocked"]
        assert faults_in_status(flab) == [("service-endpoint-down", key(target))]
        expect("one healed: UDP DNS answers", lambda: dns(flab, src, dns_ip, tcp=False, timeout=OK_TIMEOUT),
               answered(flab))
        expect("one healed: the other fault stays (endpoint still refuses)",
               lambda: tcp(src, target["ip"], 8080), lambda r: r["error_kind"] == "refused")

        lab_fault(flab.name, "dns-down")
        r = cli("heal", "--all", "--name", flab.name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("healed ") and "service-endpoint-down" in r.stdout and "dns-down" in r.stdout
        assert faults_in_status(flab) == []
        expect("all healed: the endpoint accepts", lambda: tcp(src, target["ip"], 8080, OK_TIMEOUT), lambda r: r["ok"])
        expect("all healed: DNS answers", lambda: dns(flab, src, dns_ip, tcp=False, timeout=OK_TIMEOUT),
               answered(flab))
        r = cli("heal", "--all", "--name", flab.name)
        assert (r.returncode, r.stdout.strip()) == (0, "healed nothing (no fault was active)")
    finally:
        lab_heal(flab.name, None)


def test_status_lists_active_faults_with_targets(flab):
    from netconform.lab.cli import lab_fault, lab_heal

    pod = flab.web_pods[-1]
    endpoint = flab.status["apiserver_endpoints"][1]
    node = flab.node(-1)["name"]
    applied = [("gateway-down", key(pod)), ("apiserver-endpoint-down", endpoint), ("kube-dns-dnat-missing", node)]
    try:
        r = cli("fault", "gateway-down", "--target", key(pod), "--name", flab.name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("applied gateway-down: ") and key(pod) in r.stdout
        for name, target in applied[1:]:
            assert lab_fault(flab.name, name, target)["result"]["target"] == target
        lab_fault(flab.name, "gateway-down", key(pod))  # applying twice: listed once
        r = cli("status", "--json", "--name", flab.name)
        assert r.returncode == 0, r.stderr
        faults = json.loads(r.stdout)["faults"]
        assert [(f["name"], f["target"]) for f in faults] == applied
        assert all(f["target"] in f["description"] for f in faults)
        text = cli("status", "--name", flab.name).stdout
        for name, target in applied:
            assert f"fault {name} {target}:" in text

        lab_heal(flab.name, "apiserver-endpoint-down")
        assert faults_in_status(flab) == [applied[0], applied[2]]
    finally:
        lab_heal(flab.name, None)
    assert faults_in_status(flab) == []
