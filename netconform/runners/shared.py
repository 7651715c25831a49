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
(`use_store`): the first process to ask takes an flock on the question's file, gets the answer
and writes it; the others wait on the lock and read it. A process that dies while asking
releases the lock, and the next asker asks the question itself. And one process per namespace
runs its probes (`_Broker`): others hand it their questions, so a namespace gets one probe
worker for the whole run, however many processes ask there.

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
import time
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
        if store is None:
            return self.runner.call(probe, kwargs, timeout=timeout), False
        if fresh:
            return _broker(store).ask(self.namespace, self.runner, probe, kwargs, timeout), False
        name = hashlib.sha256(f"{self.namespace} {key}".encode()).hexdigest()[:32]
        answer = store / f"{name}.json"
        fd = os.open(store / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only while the asker waits for it: bounded by its timeout
            if answer.exists():
                return ProbeCall.from_dict(json.loads(answer.read_text())), True
            call = _broker(store).ask(self.namespace, self.runner, probe, kwargs, timeout)
            _write_json(answer, call.to_dict())
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


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # whole or not at all, for whoever polls for it


class _Broker:
    """One process per namespace runs its probes; the others hand it their questions.

    The first process of the run to ask a namespace anything takes its owner lock (an flock held
    as long as the process lives) and so is the only one that ever starts a probe worker there.
    Any other process writes its question into the namespace's request folder and waits for the
    answer file; the owner's watcher thread claims each request (an atomic rename), runs it and
    writes the answer. If the owner goes away (its lock comes free), the next asker takes over.
    """

    POLL_S = 0.01

    def __init__(self, store: Path):
        self.store = store
        self._lock = threading.Lock()
        self._owned: dict[str, tuple[int, Runner]] = {}  # ns -> (owner lock fd, runner)
        self._not_owner: set[str] = set()
        self._watcher: threading.Thread | None = None

    def _dir(self, ns: str) -> Path:
        d = self.store / "requests" / hashlib.sha256(ns.encode()).hexdigest()[:16]
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _try_own(self, ns: str, runner: Runner) -> bool:
        with self._lock:
            if ns in self._owned:
                return True
            fd = os.open(self._dir(ns).with_suffix(".owner"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._not_owner.add(ns)
                return False
            self._owned[ns] = (fd, runner)
            self._not_owner.discard(ns)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="netconform-broker", daemon=True)
                self._watcher.start()
            return True

    def ask(self, ns: str, runner: Runner, probe: str, kwargs: dict[str, Any], timeout: float) -> ProbeCall:
        if self._try_own(ns, runner):
            return runner.call(probe, kwargs, timeout=timeout)
        return self._forward(ns, runner, probe, kwargs, timeout)

    def _forward(self, ns: str, runner: Runner, probe: str, kwargs: dict[str, Any], timeout: float) -> ProbeCall:
        d = self._dir(ns)
        rid = f"{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        request, answer = d / f"{rid}.json", d / f"{rid}.answer"
        _write_json(request, {"probe": probe, "kwargs": kwargs, "timeout": timeout})
        deadline = time.monotonic() + timeout + 30  # the owner's own call ends within `timeout`
        next_look = time.monotonic() + 0.5
        while not answer.exists():
            now = time.monotonic()
            if now >= next_look:
                next_look = now + 0.5
                if self._try_own(ns, runner):  # the owner is gone: ask it ourselves
                    request.unlink(missing_ok=True)
                    return runner.call(probe, kwargs, timeout=timeout)
            if now >= deadline:
                request.unlink(missing_ok=True)
                return ProbeCall(probe=probe, status="timeout", error_type="Timeout",
                                 error=f"the process serving this namespace gave no answer within {timeout + 30:g} s")
            time.sleep(self.POLL_S)
        try:
            return ProbeCall.from_dict(json.loads(answer.read_text()))
        finally:
            answer.unlink(missing_ok=True)

    def _watch(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="netconform-broker-call")
        while _store == self.store:
            with self._lock:
                owned = list(self._owned.items())
            for ns, (_, runner) in owned:
                d = self._dir(ns)
                for request in d.glob("*.json"):
                    taken = request.with_suffix(".taken")
                    try:
                        request.rename(taken)  # claimed: no one else serves it
                    except OSError:
                        continue
                    pool.submit(self._serve, runner, taken)
            time.sleep(self.POLL_S)
        pool.shutdown(wait=False)

    @staticmethod
    def _serve(runner: Runner, taken: Path) -> None:
        try:
            req = json.loads(taken.read_text())
            call = runner.call(req["probe"], req["kwargs"], timeout=req["timeout"])
            _write_json(taken.with_suffix(".answer"), call.to_dict())
        except Exception as e:  # noqa: BLE001 -- the asker must get an answer, not wait forever
            _write_json(taken.with_suffix(".answer"), ProbeCall(
                probe="?", status="error", error_type=type(e).__name__, error=str(e)).to_dict())
        finally:
            taken.unlink(missing_ok=True)


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker(store: Path) -> _Broker:
    with _brokers_lock:
        b = _brokers.get(str(store))
        if b is None:
            b = _brokers[str(store)] = _Broker(store)
        return b


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
    # A forked child (the pid resolver's helpers) starts with nothing shared in-process, and owns
    # no namespace (it inherited the owner locks' descriptors, not the ownership).
    global _shared_lock, _brokers_lock
    _shared.clear()
    _shared_lock = threading.Lock()
    _brokers.clear()
    _brokers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
