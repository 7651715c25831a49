"""Probes that exist only to test runners (misbehaving on purpose); never used by checks.

Runners import them by absolute name, e.g. `"tests.lab.probes_for_tests:sleep"`.
"""
from __future__ import annotations

import os
import sys
import time


def sleep(seconds: float) -> float:
    """Hang for `seconds` (a stand-in for a probe stuck on a black-holed socket)."""
    time.sleep(seconds)
    return seconds


def boom(message: str) -> None:
    """Raise, as a buggy probe would."""
    raise RuntimeError(message)


def chatty() -> str:
    """Print to stdout and read stdin: neither may corrupt the runner's pipe protocol."""
    print("noise on stdout that is not a JSON reply")
    sys.stdout.flush()
    return sys.stdin.read()


def die(code: int) -> None:
    """End the worker process abruptly (as a segfaulting C extension or the OOM killer would)."""
    os._exit(code)


def whoami() -> dict:
    """The worker's pid and network namespace inode."""
    return {"pid": os.getpid(), "netns_inode": os.stat("/proc/thread-self/ns/net").st_ino}


def loaded(prefixes: list[str]) -> list[str]:
    """Names of the modules already imported in the worker that start with one of `prefixes`."""
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def non_jsonable() -> object:
    """Return something JSON cannot carry."""
    return object()


_barriers: dict = {}


def barrier(name: str, parties: int, timeout: float) -> int:
    """Return only once `parties` calls wait here at the same time (raises after `timeout`):
    proof that the worker runs calls concurrently, without measuring time."""
    import threading

    b = _barriers.setdefault(name, threading.Barrier(parties))
    b.wait(timeout)
    return threading.get_ident()
