"""Benchmark: how long a run of the suite takes against the lab — healthy, at scale, and under faults.

    .venv/bin/python bench/suite.py                      # every row below, 1 round each
    .venv/bin/python bench/suite.py --rows healthy,faults --rounds 3

Rows: `one-pod` (1 target pod, no -n), `default` (the default 2x3 lab's 6 workload pods, -n 4),
`scale` (5 nodes x 10 pods = 50 target pods, with and without -n 4), `faults` (the default lab
and targets under each shipped fault, -n 4). Each run is `pytest checks/ ...` in a subprocess, the
way a user runs it, with the lab already up (its build is not timed: bench/lab_up.py does that).

Columns: wall time of the pytest run, CPU time of it and its children (user + system), checks
run, checks failed, and the Kubernetes API requests the run made (results.json's run metadata,
when the suite records it). Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netconform.lab.cli import lab_env, lab_fault, lab_heal, start_lab, stop_lab  # noqa: E402
from netconform.lab.faults import FAULTS  # noqa: E402
from netconform.lab.state import read_json  # noqa: E402


@dataclass
class Lab:
    name: str
    env: dict[str, str]
    pods: list[str]  # the workload pods, "ns/name"


@dataclass
class Run:
    wall: float
    cpu: float
    checks: int
    failed: int
    api_calls: int | None


def up(name: str, nodes: int, pods: int) -> Lab:
    paths = start_lab(name, "vpc-cni", nodes, pods)
    status = read_json(paths.status)
    apps = [f"{p['namespace']}/{p['name']}" for p in status["pods"]
            if not p["host_network"] and p["namespace"] != "kube-system"]
    return Lab(name, {**os.environ, **lab_env(paths)}, apps)


def run_suite(lab: Lab, pods: list[str], workers: int | None) -> Run:
    with tempfile.TemporaryDirectory(prefix="nc-bench-") as tmp:
        argv = [sys.executable, "-m", "pytest", "checks/", "-q", "-p", "no:cacheprovider", "--report-dir", tmp]
        if workers:
            argv += ["-n", str(workers)]
        for p in pods:
            argv += ["--pod", p]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        found = list(Path(tmp).glob("*/results.json"))
        if not found:
            return Run(wall, cpu, 0, 0, None)
        doc = json.loads(found[0].read_text())
        ran = [r for r in doc["results"] if r["outcome"] != "skipped"]
        return Run(wall, cpu, len(ran), sum(r["outcome"] == "failed" for r in ran), doc["run"].get("api_requests"))


def row(label: str, runs: list[Run]) -> str:
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    last = runs[-1]
    api = "n/a" if last.api_calls is None else str(last.api_calls)
    return f"{label:38} {wall:8.1f}s {cpu:8.1f}s {last.checks:7d} {last.failed:7d} {api:>9}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rows", default="one-pod,default,scale,faults")
    args = ap.parse_args()
    rows = args.rows.split(",")
    print(f"{'run':38} {'wall':>9} {'cpu':>9} {'checks':>7} {'failed':>7} {'api reqs':>9}")
    if {"one-pod", "default", "faults"} & set(rows):
        lab = up("bench2x3", 2, 3)
        try:
            if "one-pod" in rows:
                print(row("healthy, 1 pod, no -n", [run_suite(lab, lab.pods[:1], None) for _ in range(args.rounds)]))
            if "default" in rows or "faults" in rows:
                print(row(f"healthy, default lab ({len(lab.pods)} pods), -n 4",
                          [run_suite(lab, lab.pods, 4) for _ in range(args.rounds)]))
            if "faults" in rows:
                for fault in FAULTS:
                    runs = []
                    for _ in range(args.rounds):
                        lab_fault(lab.name, fault, None)
                        try:
                            runs.append(run_suite(lab, lab.pods, 4))
                        finally:
                            lab_heal(lab.name, None)
                    print(row(f"  {fault}, -n 4", runs))
        finally:
            stop_lab(lab.name)
    if "scale" in rows:
        lab = up("bench5x10", 5, 10)
        try:
            for workers in (None, 4):
                label = f"healthy, 5x10 ({len(lab.pods)} pods), {'-n 4' if workers else 'no -n'}"
                print(row(label, [run_suite(lab, lab.pods, workers) for _ in range(args.rounds)]))
        finally:
            stop_lab(lab.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
