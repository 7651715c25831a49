"""What a run costs, from its own record (results.json run metadata), against the shared labs:

- Kubernetes API requests are one list per kind whatever the number of target pods;
- no probe question ran twice (across xdist workers too), healthy or under a fault whose timeouts
  every failing check of a pod would otherwise wait out again — except the asks meant to look
  again (`_fresh`: the gateway check's second look at the neighbour table after a ping);
- each namespace needed one probe worker for the whole run.

Wall time is never asserted here: bench/suite.py measures it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netconform.kube import SNAPSHOT_KINDS
from tests.conftest import requires_root
from tests.lab.conftest import RunningLab

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [requires_root, pytest.mark.lab]
SUITE_TIMEOUT = 600
XDIST_WORKERS = 3
# Asked with `_fresh` on purpose (checks/test_gateway.py: a learned gateway gets a packet, then a
# second look): may run more than once.
LOOK_AGAIN = ("netinfo:neighbours ", "icmp:ping ")


def run_meta(lab: RunningLab, pods: list[str], *extra: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="nc-costs-") as tmp:
        argv = [sys.executable, "-m", "pytest", "checks/", "-q", "-p", "no:cacheprovider", "-n", str(XDIST_WORKERS),
                "--report-dir", tmp, *extra]
        for p in pods:
            argv += ["--pod", p]
        proc = subprocess.Popen(argv, cwd=ROOT, env=lab.subprocess_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=SUITE_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the run's shared-answers folder (named after the run's pid) goes with it
        left = list(Path(tempfile.gettempdir()).glob(f"netconform-run-{proc.pid}-*"))
        assert not left, f"the run left {left}"
        found = list(Path(tmp).glob("*/results.json"))
        assert len(found) == 1, f"exit {proc.returncode}:\n{out[-3000:]}\n{err[-2000:]}"
        return json.loads(found[0].read_text())["run"]


def workload(lab: RunningLab) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in lab.pods() if p["namespace"] != "kube-system"]


def repeated(meta: dict) -> dict[str, dict[str, int]]:
    return {where: {q: n for q, n in t["repeated"].items() if not q.startswith(LOOK_AGAIN)}
            for where, t in meta["probes"]["by_target"].items() if t["repeated"]}


@pytest.mark.parametrize("flavor", ["vpc-cni", "flannel"])
def test_api_requests_do_not_grow_with_the_pods(lab, flavor):
    running = lab(flavor)
    pods = workload(running)
    one, every = run_meta(running, pods[:1]), run_meta(running, pods)
    kinds = {f"GET {path}" for path, _, _ in SNAPSHOT_KINDS.values()} | {"GET /version"}
    for meta in (one, every):
        assert set(meta["api_requests_by_path"]) == kinds and meta["api_requests"] == len(kinds), meta
    assert len(every["targets"]["pods"]) == len(pods) > 1


@pytest.mark.parametrize("fault", [None, "dns-udp-blocked", "gateway-down"])
def test_no_question_is_asked_twice(lab, fault):
    from netconform.lab.cli import lab_fault, lab_heal

    running = lab("vpc-cni")
    if fault:
        lab_fault(running.name, fault)
    try:
        meta = run_meta(running, workload(running))
    finally:
        if fault:
            lab_heal(running.name, None)
    probes = meta["probes"]
    assert probes["runs"] > 0 and set(probes["by_target"]) >= {f"pod {p}" for p in workload(running)}, probes
    assert probes["shared"] > 0, "no check reused another's answer"
    assert not repeated(meta), json.dumps(repeated(meta), indent=1)[:3000]
    # One probe worker per namespace for the whole run: a pod's checks all run in one xdist worker;
    # a node's namespace is asked from several (its pods' gateway checks), but one process owns
    # it and the others hand it their questions; the bundle at the end starts none.
    started = probes["workers_started"]
    for where, t in probes["by_target"].items():
        assert started.get(t["namespace"]) == 1, (where, started)
    assert set(started) == {t["namespace"] for t in probes["by_target"].values()}, started
