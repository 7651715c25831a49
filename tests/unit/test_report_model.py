"""netconform.report.model: merging phases into results, the --fail-on gate, summaries."""
from __future__ import annotations

import pytest

from netconform.report import model
from tests.unit.report_doc import make_doc

CHECK = {"id": "dns.resolves", "title": "t", "area": "dns", "severity": "critical", "meaning": "m",
         "remediation": "r", "links": []}
POD = {"kind": "pod", "name": "default/web-0"}


def merged(*phases: tuple) -> dict:
    b = model.ResultsBuilder()
    for when, outcome, message, internal in phases:
        b.add(model.phase("t::x", when, outcome, 0.5, check=CHECK, target=POD, message=message,
                          internal_error=internal))
    (r,) = b.results()
    return r


@pytest.mark.parametrize("phases, outcome, diagnosis", [
    ([("setup", "passed", "", False), ("call", "passed", "", False), ("teardown", "passed", "", False)], "passed", ""),
    ([("setup", "passed", "", False), ("call", "failed", "no answer", False), ("teardown", "passed", "", False)],
     "failed", "no answer"),
    ([("setup", "skipped", "no IPv6", False), ("teardown", "passed", "", False)], "skipped", "no IPv6"),
    ([("setup", "failed", "fixture broke", True), ("teardown", "passed", "", False)], "error", "fixture broke"),
    ([("setup", "passed", "", False), ("call", "failed", "KeyError: 'x'", True), ("teardown", "passed", "", False)],
     "error", "KeyError: 'x'"),
    ([("setup", "passed", "", False), ("call", "passed", "", False), ("teardown", "failed", "cleanup", True)],
     "error", "cleanup"),
    # a failure stays a failure when teardown breaks afterwards
    ([("setup", "passed", "", False), ("call", "failed", "no answer", False), ("teardown", "failed", "x", True)],
     "failed", "no answer"),
])
def test_phases_merge_into_one_outcome(phases, outcome, diagnosis):
    r = merged(*phases)
    assert (r["outcome"], r["diagnosis"]) == (outcome, diagnosis)
    assert r["duration_s"] == pytest.approx(0.5 * len(phases))
    assert r["check_id"] == "dns.resolves" and r["target"] == POD


def test_phases_arrive_in_any_order_and_evidence_is_the_longest_copy():
    b = model.ResultsBuilder()
    ev = [{"name": "a", "where": "", "value": 1}, {"name": "b", "where": "", "value": 2}]
    b.add(model.phase("z::2", "call", "passed", evidence=ev))
    b.add(model.phase("a::1", "call", "passed"))
    b.add(model.phase("z::2", "setup", "passed", evidence=ev[:1]))
    b.add(model.phase("z::2", "teardown", "passed", evidence=ev))
    assert [r["nodeid"] for r in b.results()] == ["a::1", "z::2"]
    assert b.results()[1]["evidence"] == ev


def test_collection_error_is_an_error_result():
    b = model.ResultsBuilder()
    b.add_collect_error("checks/test_x.py", "\nImportError: no module named foo\n  more")
    (r,) = b.results()
    assert r["outcome"] == "error" and r["diagnosis"] == "ImportError: no module named foo"


@pytest.mark.parametrize("fail_on, counted", [
    ("warning", {"dns.resolves", "dns.nxdomain", "apiserver.node_clusterip"}),
    ("error", {"dns.resolves", "apiserver.node_clusterip"}),
    ("critical", {"dns.resolves", "apiserver.node_clusterip"}),
])
def test_gate(fail_on, counted):
    doc = make_doc(fail_on)
    assert {r["check_id"] for r in doc["results"] if r["counted"]} == counted


def test_exit_status_only_drops_when_every_failure_is_below_the_gate():
    results = make_doc()["results"]
    warn_only = [r for r in results if r["check_id"] in ("dns.nxdomain", "gateway.route")]
    model.apply_gate(warn_only, "error")
    assert model.gated_exit_status(1, warn_only) == 0
    model.apply_gate(warn_only, "warning")
    assert model.gated_exit_status(1, warn_only) == 1
    model.apply_gate(results, "critical")
    assert model.gated_exit_status(1, results) == 1  # the error (suite broke) always counts
    passed = [r for r in results if r["outcome"] == "passed"]
    assert model.gated_exit_status(1, passed) == 1  # pytest saw a failure netconform did not: keep it
    assert model.gated_exit_status(2, warn_only) == 2  # interrupted stays interrupted


def test_verdicts():
    doc = make_doc()
    assert model.verdict(doc["results"])[0] == "FAIL"
    warn = [r for r in doc["results"] if r["check_id"] in ("dns.nxdomain", "gateway.route")]
    model.apply_gate(warn, "error")
    word, sentence = model.verdict(warn)
    assert word == "WARN" and "below the gate" in sentence
    ok = [r for r in doc["results"] if r["outcome"] in ("passed", "skipped")]
    assert model.verdict(ok) == ("PASS", "all 2 applicable checks passed (1 skipped)")


def test_grid_cells_take_the_worst_outcome():
    targets, areas, cells = model.grid(make_doc()["results"])
    assert targets == ["pod default/web-0", "pod shop/db-0", "node n1"]
    assert areas == ["apiserver", "dns", "gateway", "service"]
    assert cells[("pod default/web-0", "dns")]["worst"] == "failed"  # critical failure beats the warned one
    assert cells[("pod default/web-0", "dns")]["counts"] == {"failed": 1, "warned": 1}
    assert cells[("pod default/web-0", "gateway")]["worst"] == "skipped"
    assert cells[("node n1", "apiserver")]["worst"] == "error"
    assert cells[("pod shop/db-0", "service")]["worst"] == "passed"
    assert ("node n1", "dns") not in cells


def test_failing_order_errors_then_severity():
    order = [r["check_id"] for r in model.failing(make_doc()["results"])]
    assert order == ["apiserver.node_clusterip", "dns.resolves", "dns.nxdomain"]
