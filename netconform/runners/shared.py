"""Ask once, assert many: one run of each probe question per namespace, shared by every check.

Checks of one target ask the same questions (does CoreDNS replica X answer over UDP? does endpoint
Y accept a connection?): the replica check asks it, and so does the DNS check whose differential
diagnosis compares the replicas. `SharedCalls` wraps a runner so that a question — the namespace,
the probe and its exact arguments — runs once; every later or concurrent ask gets the same
`ProbeCall`, a timeout included (a dead path is waited out once, not once per check).

A probe whose point is to look again (a counter sampled twice) passes `fresh=True`. Attempts
through a ClusterIP keep their meaning either way: each `vip:through` call still makes its own
new connections; only an identical call later in the run shares its result.

Across processes (pytest-xdist workers), questions are shared through a run-scoped folder
(`use_store`): the first process to ask takes an flock on the question's file, runs it and
writes the answer; the others wait on the lock and read it. A process that dies while asking
releases the lock, and the next asker runs the question itself. Whoever answers from the folder
never even starts a probe worker for that namespace.

>>> shared = SharedCalls(runner_for("/run/netns/nc-lab-default-web-0"))
>>> a = shared.call("dns:query", {"server": "10.0.1.16", "name": "x.", "timeout": 3}, timeout=10)
>>> b = shared.call("dns:query", {"server": "10.0.1.16", "name": "x.", "timeout": 3}, timeout=10)
>>> a is b, shared.stats()
(True, {'runs': 1, 'shared': 1})
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from netconform.runners.base import ProbeCall, Runner

__all__ = ["SharedCalls", "question_key", "shared_calls", "use_store"]

_store: Path | None = None


def use_store(path: str | os.PathLike | None) -> None:
    """Share answers with the other processes of this run through the folder `path` (None: don't)."""
    global _store
    _store = Path(path) if path else None


def question_key(probe: str, kwargs: dict[str, Any]) -> str:
    """The identity of a question: the probe and its arguments, canonical JSON."""
    return probe + " " + json.dumps(kwargs, sort_keys=True, separators=(",", ":"))


class SharedCalls:
    """A runner's calls, each distinct question run once; concurrent askers wait for the first."""

    def __init__(self, runner: Runner, namespace: str = ""):
        self.runner = runner
        # identifies the namespace across processes (LocalRunner: its netns dev/inode)
        self.namespace = namespace or repr(getattr(runner, "key", id(runner)))
        self._lock = threading.Lock()
        self._calls: dict[str, Future] = {}
        self.runs: Counter = Counter()  # question key -> times actually run (1, or more if fresh)
        self.hits = 0

    def call(self, probe: str, kwargs: dict[str, Any] | None = None, timeout: float = 10.0, *,
             fresh: bool = False) -> tuple[ProbeCall, bool]:
        """(the ProbeCall, whether it was shared rather than run for this ask)."""
        kwargs = dict(kwargs or {})
        key = question_key(probe, kwargs)
        with self._lock:
            fut = None if fresh else self._calls.get(key)
            owner = fut is None
            if owner:
                fut = Future()
                if not fresh:
                    self._calls[key] = fut
                self.runs[key] += 1
            else:
                self.hits += 1
        if not owner:
            # The first asker's own timeout bounds its run; waiting a little longer than ours is
            # harmless (the run never exceeds the runner's limit).
            return fut.result(), True
        try:
            call, from_store = self._run(probe, kwargs, timeout, key, fresh)
        except BaseException as e:  # a caller bug (ValueError...): every waiter sees it, none caches it
            with self._lock:
                if self._calls.get(key) is fut:
                    del self._calls[key]
                self.runs[key] -= 1
            fut.set_exception(e)
            raise
        if from_store:
            with self._lock:
                self.runs[key] -= 1  # another process ran it
                self.hits += 1
        fut.set_result(call)
        return call, from_store

    def _run(self, probe: str, kwargs: dict[str, Any], timeout: float, key: str, fresh: bool) -> tuple[ProbeCall, bool]:
        store = _store
        if store is None or fresh:
            return self.runner.call(probe, kwargs, timeout=timeout), False
        name = hashlib.sha256(f"{self.namespace} {key}".encode()).hexdigest()[:32]
        answer = store / f"{name}.json"
        fd = os.open(store / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only while the owner runs it: bounded by its timeout
            if answer.exists():
                return ProbeCall.from_dict(json.loads(answer.read_text())), True
            call = self.runner.call(probe, kwargs, timeout=timeout)
            tmp = answer.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(call.to_dict()))
            tmp.replace(answer)
            return call, False
        finally:
            os.close(fd)  # releases the lock

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"runs": sum(self.runs.values()), "shared": self.hits}

    def repeated(self) -> dict[str, int]:
        """Questions run more than once (only `fresh` asks may do that)."""
        with self._lock:
            return {k: n for k, n in self.runs.items() if n > 1}


_shared: dict[int, SharedCalls] = {}
_shared_lock = threading.Lock()


def shared_calls(runner: Runner) -> SharedCalls:
    """The process's SharedCalls for `runner` (one per runner object: per namespace)."""
    with _shared_lock:
        s = _shared.get(id(runner))
        if s is None or s.runner is not runner:
            s = _shared[id(runner)] = SharedCalls(runner)
        return s


def _forget_after_fork() -> None:
    # A forked child (the pid resolver's helpers) starts with nothing shared in-process.
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
