"""Benchmark: how long `netconform-lab up` and `down` take for a small and a large lab.

    .venv/bin/python bench/lab_up.py            # 2x3 and 8x20, both flavours, 3 rounds each
    .venv/bin/python bench/lab_up.py --rounds 1 --shapes 2x3

Prints a table (median and max of the rounds). Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netconform.lab.cli import start_lab, stop_lab  # noqa: E402


def measure(flavor: str, nodes: int, pods: int, rounds: int) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for i in range(rounds):
        name = f"bench{i}"
        t0 = time.perf_counter()
        start_lab(name, flavor, nodes, pods)
        t1 = time.perf_counter()
        left = stop_lab(name)
        t2 = time.perf_counter()
        if left:
            print(f"warning: {name} left {left}", file=sys.stderr)
        ups.append(t1 - t0)
        downs.append(t2 - t1)
    return ups, downs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default="2x3,8x20", help="NODESxPODS_PER_NODE, comma separated")
    ap.add_argument("--flavors", default="vpc-cni,flannel")
    args = ap.parse_args()
    print(f"{'flavor':8} {'shape':6} {'pods':>5} {'up median':>10} {'up max':>8} {'down median':>12} {'down max':>9}")
    for flavor in args.flavors.split(","):
        for shape in args.shapes.split(","):
            nodes, pods = (int(x) for x in shape.split("x"))
            ups, downs = measure(flavor, nodes, pods, args.rounds)
            total = nodes * pods
            print(f"{flavor:8} {shape:6} {total:5d} {statistics.median(ups):9.2f}s {max(ups):7.2f}s "
                  f"{statistics.median(downs):11.2f}s {max(downs):8.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
