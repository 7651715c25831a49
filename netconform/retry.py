"""Bounded retries for addresses that load-balance at random (ClusterIPs).

kube-proxy picks an endpoint per connection, so one attempt at a ClusterIP with a dead endpoint
behind it is a coin toss. Retrying until a success — bounded by a count *and* a time budget —
keeps the verdict deterministic when failures are fast (refused), and the run fast when they are
slow (timeouts). Every attempt is returned for the evidence.
"""
from __future__ import annotations

import time
from typing import Callable


def clusterip_attempts(endpoints: int) -> int:
    """Enough attempts that a dead endpoint among `endpoints` is (almost) never chosen every time:
    with 1 dead of 2, 8 attempts all fail with probability 1/256... and each refused one is cheap."""
    return max(3, 4 * endpoints)


def until_ok(attempt: Callable[[], dict], *, max_attempts: int, budget_s: float) -> tuple[dict, list[dict]]:
    """Call `attempt` until a result has `ok`, `max_attempts` were made, or `budget_s` has passed."""
    results: list[dict] = []
    start = time.monotonic()
    while True:
        r = attempt()
        results.append(r)
        if r.get("ok") or len(results) >= max_attempts or time.monotonic() - start >= budget_s:
            return r, results
