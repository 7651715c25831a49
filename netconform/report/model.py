"""The results model: one record per check invocation, merged from pytest's phase reports (pure).

A *phase* is what the pytest plugin extracts from one TestReport (setup, call or teardown) as a
plain dict; `ResultsBuilder` merges the phases of a test into one *result*:

    {"nodeid", "check_id", "title", "area", "severity", "meaning", "remediation", "links",
     "target": {"kind": "pod"|"node"|"cluster", "name"}, "outcome", "duration_s", "diagnosis",
     "evidence": [{"name", "where", "value"}], "files": [...], "counted": bool}

Outcomes follow DESIGN.md: passed, failed (the network is broken), skipped (not applicable),
error (the suite itself broke). `counted` says whether the result counts against the exit code
under the `--fail-on` gate.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

SCHEMA = "netconform.results/1"
SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
GATES = ("warning", "error", "critical")
OUTCOMES = ("failed", "error", "passed", "skipped")
# Worst first: what colours a cell of the target x area grid. "warned" is a failure below the gate.
DISPLAY_ORDER = ("error", "failed", "warned", "skipped", "passed")
TARGET_KINDS = ("pod", "node", "cluster")


def phase(nodeid: str, when: str, outcome: str, duration: float = 0.0, *, check: dict | None = None,
          target: dict | None = None, message: str = "", internal_error: bool = False,
          evidence: list | None = None, wasxfail: bool = False) -> dict[str, Any]:
    """A phase record, as the plugin builds it from a TestReport (helper for callers and tests)."""
    return {"nodeid": nodeid, "when": when, "outcome": outcome, "duration": duration, "check": check,
            "target": target, "message": message, "internal_error": internal_error,
            "evidence": evidence or [], "wasxfail": wasxfail}


class ResultsBuilder:
    """Collects phase records in any order (xdist interleaves tests) and merges them per test."""

    def __init__(self) -> None:
        self._phases: dict[str, list[dict]] = defaultdict(list)

    def add(self, rec: dict[str, Any]) -> None:
        self._phases[rec["nodeid"]].append(rec)

    def add_collect_error(self, nodeid: str, text: str) -> None:
        """A module that failed to import or collect: an error of the suite, not of the network."""
        self.add(phase(nodeid or "<collection>", "collect", "failed", message=first_line(text),
                       internal_error=True, target={"kind": "cluster", "name": ""}))

    def __len__(self) -> int:
        return len(self._phases)

    def results(self) -> list[dict[str, Any]]:
        """Merged results, sorted by node id (deterministic whatever the worker order)."""
        return [merge_phases(nodeid, recs) for nodeid, recs in sorted(self._phases.items())]


def merge_phases(nodeid: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    by_when = {r["when"]: r for r in recs}
    check = next((r["check"] for r in recs if r.get("check")), None) or {}
    target = next((r["target"] for r in recs if r.get("target")), None) or {"kind": "cluster", "name": ""}
    # Evidence grows phase by phase on one list: the longest copy is the whole of it.
    evidence = max((r.get("evidence") or [] for r in recs), key=len, default=[])
    outcome, diagnosis = "passed", ""
    setup, call, teardown, collect = (by_when.get(w) for w in ("setup", "call", "teardown", "collect"))
    if collect is not None:
        outcome, diagnosis = "error", collect["message"]
    elif setup is not None and setup["outcome"] == "failed":
        outcome, diagnosis = "error", setup["message"]
    elif setup is not None and setup["outcome"] == "skipped":
        outcome, diagnosis = "skipped", setup["message"]
    elif call is not None:
        if call["outcome"] == "failed":
            outcome = "error" if call.get("internal_error") else "failed"
            diagnosis = call["message"]
        elif call["outcome"] == "skipped":
            # xfail counts as "not applicable" here: the suite has no expected failures of its own.
            outcome, diagnosis = "skipped", call["message"]
    if teardown is not None and teardown["outcome"] == "failed" and outcome in ("passed", "skipped"):
        outcome, diagnosis = "error", teardown["message"]
    return {
        "nodeid": nodeid,
        "check_id": check.get("id", ""),
        "title": check.get("title", nodeid),
        "area": check.get("area", "other"),
        "severity": check.get("severity", "error"),
        "meaning": check.get("meaning", ""),
        "remediation": check.get("remediation", ""),
        "links": list(check.get("links") or []),
        "target": target,
        "outcome": outcome,
        "duration_s": round(sum(float(r.get("duration") or 0) for r in recs), 4),
        "diagnosis": diagnosis,
        "evidence": evidence,
        "files": [],
        "counted": outcome == "error",
    }


def first_line(text: str, limit: int = 500) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line[:limit]


def one_line(text: str) -> str:
    """A diagnosis on one line (console, table cells): whitespace runs become one space."""
    return " ".join((text or "").split())


# -- the --fail-on gate -----------------------------------------------------------------------------
def apply_gate(results: list[dict[str, Any]], fail_on: str) -> None:
    """Set `counted` on each result: errors always count, failures at or above the gate count."""
    gate = SEVERITY_RANK[fail_on]
    for r in results:
        if r["outcome"] == "error":
            r["counted"] = True
        elif r["outcome"] == "failed":
            r["counted"] = SEVERITY_RANK.get(r["severity"], SEVERITY_RANK["error"]) >= gate
        else:
            r["counted"] = False


def gated_exit_status(pytest_status: int, results: list[dict[str, Any]]) -> int:
    """pytest's exit status, except that a run whose only failures are below the gate exits 0.

    Only TESTS_FAILED (1) is ever changed, and only when every failure pytest counted is one of
    `results` (so a failure netconform did not see still fails the run).
    """
    failed = [r for r in results if r["outcome"] in ("failed", "error")]
    if pytest_status == 1 and failed and not any(r["counted"] for r in failed):
        return 0
    return pytest_status


def display_outcome(r: dict[str, Any]) -> str:
    """The outcome as shown: a failure below the gate is "warned" (reported, not counted)."""
    if r["outcome"] == "failed" and not r.get("counted", True):
        return "warned"
    return r["outcome"]


# -- summaries ------------------------------------------------------------------------------------
def counts(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    c = Counter(r["outcome"] for r in results)
    return {o: c.get(o, 0) for o in OUTCOMES}


def failed_by_severity(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    c = Counter(r["severity"] for r in results if r["outcome"] == "failed")
    return {s: c[s] for s in reversed(SEVERITIES) if c.get(s)}


def verdict(results: list[dict[str, Any]]) -> tuple[str, str]:
    """("FAIL" | "WARN" | "PASS", one sentence)."""
    c = counts(results)
    total = len(results)
    sev = failed_by_severity(results)
    sev_text = ", ".join(f"{n} {s}" for s, n in sev.items())
    counted = [r for r in results if r.get("counted")]
    if counted:
        parts = []
        if c["failed"]:
            parts.append(f"{c['failed']} of {total} checks failed ({sev_text})")
        if c["error"]:
            parts.append(f"{c['error']} could not run (errors in the suite)")
        return "FAIL", "; ".join(parts)
    if c["failed"]:
        return "WARN", f"{c['failed']} of {total} checks failed below the gate ({sev_text}); nothing counted"
    if not c["passed"]:
        return "PASS", f"no check failed, but none passed either ({c['skipped']} skipped)"
    return "PASS", f"all {c['passed']} applicable checks passed ({c['skipped']} skipped)"


def target_label(target: dict[str, Any]) -> str:
    """"pod default/web-0", "node ip-10-0-1-5", "cluster"."""
    if target.get("kind") in ("pod", "node") and target.get("name"):
        return f"{target['kind']} {target['name']}"
    return "cluster"


def _target_sort_key(label: str) -> tuple[int, str]:
    kind = label.split(" ", 1)[0]
    return (TARGET_KINDS.index(kind) if kind in TARGET_KINDS else len(TARGET_KINDS), label)


def by_area(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """area -> {"counts", "worst_severity" (of failures, or ""), "total"} in area order."""
    out: dict[str, dict[str, Any]] = {}
    for area in sorted({r["area"] for r in results}):
        rs = [r for r in results if r["area"] == area]
        fails = [r["severity"] for r in rs if r["outcome"] == "failed"]
        out[area] = {"counts": counts(rs), "total": len(rs),
                     "worst_severity": max(fails, key=lambda s: SEVERITY_RANK.get(s, 2)) if fails else ""}
    return out


def grid(results: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    """The target x area grid: (target labels, areas, {(target, area): cell}).

    A cell is {"worst": display outcome, "counts": {display outcome: n}, "failing": [check ids]}.
    """
    cells: dict[tuple[str, str], dict] = {}
    for r in results:
        key = (target_label(r["target"]), r["area"])
        cell = cells.setdefault(key, {"worst": "", "counts": Counter(), "failing": []})
        shown = display_outcome(r)
        cell["counts"][shown] += 1
        if shown in ("error", "failed", "warned") and r["check_id"] not in cell["failing"]:
            cell["failing"].append(r["check_id"] or r["nodeid"])
    for cell in cells.values():
        cell["worst"] = next(o for o in DISPLAY_ORDER if cell["counts"].get(o))
        cell["counts"] = dict(cell["counts"])
    targets = sorted({t for t, _ in cells}, key=_target_sort_key)
    areas = sorted({a for _, a in cells})
    return targets, areas, cells


def failing(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed and errored results, worst first: errors, then by severity, check id, target."""
    rs = [r for r in results if r["outcome"] in ("failed", "error")]
    return sorted(rs, key=lambda r: (r["outcome"] != "error", -SEVERITY_RANK.get(r["severity"], 2),
                                     r["check_id"], _target_sort_key(target_label(r["target"])), r["nodeid"]))


def group_failing(results: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Failing results grouped by check id (keeps `failing` order): [(check id, results)]."""
    groups: dict[str, list[dict]] = {}
    for r in failing(results):
        groups.setdefault(r["check_id"] or r["nodeid"], []).append(r)
    return list(groups.items())
