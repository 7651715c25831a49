"""The node-local runner: probes run in a long-lived child process inside a network namespace.

    parent (pytest, xdist worker, threads)          child: python -m netconform.runners._worker
    ─────────────────────────────────────          ──────────────────────────────────────────
    LocalRunner("/proc/4242/ns/net")   ── spawn ─▶  prctl(PDEATHSIG) → setns(CLONE_NEWNET)
                                       ◀─ ready ──  {"ready": true, "pid": …, "netns": [dev, ino]}
    call("netinfo:routes", {}, 5)      ── line ──▶  {"id": 1, "probe": …, "kwargs": {…}}
      (any thread; calls run at once)                each request in a thread of its own
      a reader thread hands out replies ◀─ line ───  {"id": 1, "ok": true, "value": […]}
      no answer ≤ timeout: status=timeout; killpg once no other call is in flight, respawn

The child enters the namespace before it imports anything network-related (scapy caches routes
at import), imports each probe module once, and serves every call for that namespace, so the
~0.3 s of pyroute2 / ~0.5 s of scapy imports are paid once per namespace per process. setns(2)
is per thread, which is why the parent (threaded pytest, xdist, moto) never switches itself.

>>> r = runner_for("/run/netns/nc-lab-a-default-web-0")
>>> r.call("netinfo:addresses", {}, timeout=5).value[0]["address"]
'127.0.0.1'
>>> close_all()
"""
from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import json
import os
import queue
import select
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from netconform.errors import PermissionMissing, ResolveError
from netconform.runners._worker import command as worker_command
from netconform.runners.base import ProbeCall, Runner, probe_target

__all__ = ["LocalRunner", "close_all", "netns_key", "runner_for", "spawn_counts"]

DEFAULT_START_TIMEOUT = 10.0
_STDERR_TAIL = 2000


def netns_key(netns_path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of a network namespace file: equal keys mean the same namespace.

    Raises ResolveError if the path does not exist, PermissionMissing if it cannot be read.
    """
    try:
        st = os.stat(netns_path)
    except FileNotFoundError:
        raise ResolveError(f"network namespace {netns_path} does not exist (process or pod gone?)") from None
    except PermissionError as e:
        raise PermissionMissing("CAP_SYS_PTRACE (or root)", f"open {netns_path}", str(e)) from None
    return st.st_dev, st.st_ino


class _Spawner:
    """Starts child processes from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process
    (prctl(2)): a worker first called from a ThreadPoolExecutor thread would be SIGKILLed as soon
    as that thread ended. Forking from a thread that lives as long as the process avoids that.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="netconform-spawner", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fut, args, kwargs))
        return fut.result()

    def _run(self) -> None:
        while True:
            fut, args, kwargs = self._jobs.get()
            try:
                fut.set_result(subprocess.Popen(args, **kwargs))
            except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread by fut.result()
                fut.set_exception(e)


_spawner = _Spawner()


class _Slot:
    """One call in flight: the reply line (or the failure that ended the worker) lands here."""

    __slots__ = ("done", "reply", "failure")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict | None = None
        self.failure: dict[str, str] | None = None  # ProbeCall fields when the worker died/misbehaved


class _Worker:
    """One live child process, its pipes, and the calls in flight on it.

    Calls are multiplexed by id: a reader thread hands each reply line to its caller's slot, so
    several probes (a check's parallel follow-ups, or other threads) run in the child at once.
    """

    def __init__(self, proc: subprocess.Popen, stderr_file: Any):
        self.proc = proc
        self.stderr_file = stderr_file
        self.buf = bytearray()
        self.netns: tuple[int, int] | None = None
        self.pending: dict[int, _Slot] = {}
        self.stale = False  # a call timed out here: stop the worker once nothing else is in flight
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopped = False
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, deadline: float) -> bytes | None:
        """One line from the child; b"" on EOF (child died), None if `deadline` passed first.
        Only before the reader thread starts (the ready line)."""
        fd = self.proc.stdout.fileno()
        # poll, not select: select fails on fds >= 1024, which a node with many pods can reach.
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not poller.poll(max(1, int(remaining * 1000) + 1)):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self.buf += chunk

    def start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_replies, name=f"netconform-reader-{self.pid}", daemon=True)
        self._reader.start()

    def _read_replies(self) -> None:
        fd = self.proc.stdout.fileno()
        failure: dict[str, str] | None = None
        while failure is None:
            nl = self.buf.find(b"\n")
            if nl < 0:
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    failure = {"error_type": "WorkerDied", "error": f"{self.exit_description()} while running the probe"}
                    break
                self.buf += chunk
                continue
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            try:
                reply = json.loads(line)
                if not isinstance(reply, dict):
                    raise ValueError("reply is not an object")
            except ValueError as e:
                failure = {"error_type": "ProtocolError", "error": f"bad reply from worker: {e}: {line[:200]!r}"}
                break
            with self._pending_lock:
                slot = self.pending.pop(reply.get("id"), None)
            if slot is not None:  # no slot: an answer to a call that already timed out
                slot.reply = reply
                slot.done.set()
        self.fail_all(failure)
        if failure["error_type"] == "ProtocolError":
            self.stop()

    def register(self, rid: int) -> _Slot:
        slot = _Slot()
        with self._pending_lock:
            self.pending[rid] = slot
        return slot

    def forget(self, rid: int) -> None:
        with self._pending_lock:
            self.pending.pop(rid, None)

    def in_flight(self) -> int:
        with self._pending_lock:
            return len(self.pending)

    def fail_all(self, failure: dict[str, str]) -> None:
        with self._pending_lock:
            slots, self.pending = list(self.pending.values()), {}
        for slot in slots:
            slot.failure = failure
            slot.done.set()

    def send(self, obj: dict) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        fd = self.proc.stdin.fileno()
        with self._write_lock:
            while data:
                data = data[os.write(fd, data):]

    def stop(self, *, graceful: bool = False) -> None:
        """End the child (stdin EOF first if graceful), reap it, close its pipes and files."""
        with self._pending_lock:
            if self._stopped:
                return
            self._stopped = True
        if graceful and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the serve loop ends and the worker exits
                self.proc.wait(timeout=1.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            # The child leads its own process group (start_new_session): killpg also ends what a
            # hung probe started (ping, tcpdump) instead of leaving it orphaned.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)  # it sees EOF now and fails what was still in flight
        self.fail_all({"error_type": "WorkerDied", "error": f"worker pid {self.pid} was stopped"})
        for f in (self.proc.stdin, self.proc.stdout, self.stderr_file):
            try:
                f.close()
            except OSError:
                pass

    def exit_description(self) -> str:
        """How the child ended, with the tail of its stderr."""
        try:
            rc = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is None:
            how = "stopped answering"
        elif rc < 0:
            how = f"was killed by signal {signal.Signals(-rc).name}"
        else:
            how = f"exited with code {rc}"
        tail = self.stderr_tail()
        return f"worker pid {self.pid} {how}" + (f"; stderr: {tail}" if tail else "")

    def stderr_tail(self) -> str:
        try:
            self.stderr_file.seek(0, os.SEEK_END)
            size = self.stderr_file.tell()
            self.stderr_file.seek(max(0, size - _STDERR_TAIL))
            return self.stderr_file.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""


class LocalRunner(Runner):
    """Runs probes inside the network namespace at `netns_path`, in one long-lived child process.

    `netns_path` is `/proc/<pid>/ns/net`, `/run/netns/<name>`, or `/proc/1/ns/net` for the
    node's root namespace. The namespace identity (device, inode) is fixed at construction: a
    respawned worker that lands in another namespace (the pid was reused) is refused.

    Calls from several threads run at the same time in the one child (each probe in a thread of
    its own there, all in the namespace). A call that times out gets status "timeout"; the child
    is then killed (with whatever the hung probe started) as soon as no other call is in flight
    on it, and the next call starts a fresh one.

    >>> r = LocalRunner("/proc/1/ns/net")
    >>> r.call("netinfo:links", {}, timeout=5).status
    'ok'
    >>> r.close()
    """

    name = "local"

    def __init__(self, netns_path: str, *, start_timeout: float = DEFAULT_START_TIMEOUT):
        self.netns_path = netns_path
        self.key = netns_key(netns_path)
        self.start_timeout = start_timeout
        self._lock = threading.Lock()  # guards the worker's lifecycle (start, retire), not the calls
        self._worker: _Worker | None = None
        self._ids = itertools.count(1)
        self.closed = False
        self.spawns = 0  # how many workers this runner started (respawns after timeouts/crashes)

    # -- public -----------------------------------------------------------------------------
    @property
    def worker_pid(self) -> int | None:
        """Pid of the live worker, or None when none runs."""
        w = self._worker
        return w.pid if w is not None and w.proc.poll() is None else None

    @property
    def where(self) -> str:
        pid = self.worker_pid
        return f"local {self.netns_path} (net:[{self.key[1]}])" + (f" worker pid {pid}" if pid else "")

    def call(self, probe: str, kwargs: dict[str, Any] | None = None, timeout: float = 10.0) -> ProbeCall:
        """Run `probe` in the namespace; never raises for what the probe or the worker does.

        >>> LocalRunner("/proc/1/ns/net").call("netinfo:routes", {"family": "inet"}, timeout=5).ok
        True
        """
        probe_target(probe)  # malformed probe names are the caller's bug: raise now
        kwargs = dict(kwargs or {})
        json.dumps(kwargs)  # TypeError for non-JSON-able kwargs, also the caller's bug
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        t0 = time.monotonic()

        def result(status: str = "error", **fields: Any) -> ProbeCall:
            return ProbeCall(probe=probe, status=status, duration_s=round(time.monotonic() - t0, 6),
                             where=where, **fields)

        where = self.where
        for attempt in (1, 2):
            with self._lock:
                if self.closed:
                    return result(error_type="RunnerClosed", error="runner was closed (close_all at session end?)")
                failure = self._ensure_worker()
                if failure is not None:
                    return result(**failure)
                worker = self._worker
                rid = next(self._ids)
                slot = worker.register(rid)
            where = self.where
            try:
                worker.send({"id": rid, "probe": probe, "kwargs": kwargs})
            except (BrokenPipeError, ConnectionResetError, OSError):
                # The worker died before it read the request, so the probe never ran: a fresh
                # worker may run it once.
                worker.forget(rid)
                desc = worker.exit_description()
                self._retire(worker)
                if attempt == 2:
                    return result(error_type="WorkerDied", error=desc)
                continue
            if not slot.done.wait(timeout):
                worker.forget(rid)
                worker.stale = True
                killed = self._retire_if_idle(worker)
                how = "killed" if killed else "restarted once its other calls end"
                return result("timeout", error_type="Timeout",
                              error=f"no answer within {timeout:g} s; worker pid {worker.pid} {how}")
            if worker.stale:
                self._retire_if_idle(worker)
            if slot.failure is not None:
                self._retire(worker)
                return result(**slot.failure)
            reply = slot.reply
            if reply.get("ok"):
                return result("ok", value=reply.get("value"))
            return result(error=reply.get("error", ""), error_type=reply.get("error_type", ""),
                          traceback=reply.get("traceback", ""))
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the worker (stdin EOF, then SIGKILL after 1 s); later calls return status "error"."""
        with self._lock:
            self.closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(graceful=True)

    # -- internals ------------------------------------------------------------------------
    def _retire(self, worker: _Worker) -> None:
        """Stop `worker` and forget it if it is still this runner's (the next call respawns)."""
        with self._lock:
            if self._worker is worker:
                self._worker = None
        worker.stop()

    def _retire_if_idle(self, worker: _Worker) -> bool:
        with self._lock:
            if worker.in_flight():
                return False
            if self._worker is worker:
                self._worker = None
        worker.stop()
        return True

    def _ensure_worker(self) -> dict[str, str] | None:
        """Under self._lock: a live, usable worker in self._worker, or the failure (ProbeCall fields)."""
        w = self._worker
        if w is not None and (w.proc.poll() is not None or w._stopped):
            self._worker = None  # died between calls (OOM kill, killed by hand)
            w.stop()
        elif w is not None and w.stale and not w.in_flight():
            self._worker = None
            w.stop()
        if self._worker is None:
            return self._start_worker()
        return None

    def _start_worker(self) -> dict[str, str] | None:
        """Start a worker; None on success, else ProbeCall fields describing the failure."""
        args, env = worker_command("serve", self.netns_path, str(os.getpid()))
        stderr_file = tempfile.TemporaryFile(prefix="netconform-worker-")  # noqa: SIM115 -- lives as long as the worker
        try:
            proc = _spawner.popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                  env=env, bufsize=0, start_new_session=True, close_fds=True)
        except OSError as e:
            stderr_file.close()
            return {"error_type": "WorkerStartFailed", "error": f"cannot start worker: {e}"}
        self.spawns += 1
        worker = _Worker(proc, stderr_file)
        line = worker.read_line(time.monotonic() + self.start_timeout)
        try:
            ready = json.loads(line) if line else None
        except ValueError:
            ready = None
        failure = None
        if line is None:
            failure = {"error_type": "WorkerStartFailed",
                       "error": f"worker did not start within {self.start_timeout:g} s"}
        elif not isinstance(ready, dict):
            failure = {"error_type": "WorkerStartFailed", "error": worker.exit_description()}
        elif not ready.get("ready"):
            failure = {"error_type": ready.get("error_type") or "WorkerStartFailed",
                       "error": ready.get("error") or "worker refused to start"}
        elif tuple(ready.get("netns") or ()) != self.key:
            got = (ready.get("netns") or ["?", "?"])[-1]
            failure = {"error_type": "ResolveError",
                       "error": f"{self.netns_path} now names namespace net:[{got}], not net:[{self.key[1]}] "
                                "this runner was made for (its process exited and the pid was reused?)"}
        if failure is not None:
            worker.stop()
            return failure
        worker.start_reader()
        self._worker = worker
        return None


# -- the pool: one worker per namespace per process ----------------------------------------
_pool: dict[tuple[int, int], LocalRunner] = {}
_pool_lock = threading.Lock()


def runner_for(netns_path: str) -> LocalRunner:
    """The shared LocalRunner for the namespace at `netns_path` (keyed by its inode).

    Two paths to one namespace (`/proc/<pid>/ns/net`, `/run/netns/<name>`) share one worker.

    >>> runner_for("/proc/1/ns/net") is runner_for("/proc/self/ns/net")   # on the host
    True
    """
    key = netns_key(netns_path)
    retired = None
    with _pool_lock:
        runner = _pool.get(key)
        if runner is not None and not runner.closed:
            try:
                still_same = netns_key(runner.netns_path) == key
            except (ResolveError, PermissionMissing):
                still_same = False
            if still_same:
                return runner
            # The runner's path now names another namespace or none (its process exited and the
            # inode was reused): retire it rather than respawn into the wrong place.
            retired = runner
        runner = _pool[key] = LocalRunner(netns_path)
    if retired is not None:
        retired.close()  # outside the pool lock: it may wait for an in-flight call
    return runner


def spawn_counts() -> dict[str, int]:
    """{"net:[inode]": workers started} for every namespace this process ran probes in."""
    with _pool_lock:
        runners = list(_pool.values())
    out: dict[str, int] = {}
    for r in runners:
        ns = f"net:[{r.key[1]}]"
        out[ns] = out.get(ns, 0) + r.spawns
    return {ns: n for ns, n in out.items() if n}


def close_all() -> None:
    """Stop every pooled worker (also runs at interpreter exit)."""
    with _pool_lock:
        runners = list(_pool.values())
        _pool.clear()
    for runner in runners:
        runner.close()


def _forget_after_fork() -> None:
    # A forked child must not talk to its parent's workers through inherited pipes.
    global _pool_lock, _spawner
    _pool.clear()
    _pool_lock = threading.Lock()
    _spawner = _Spawner()


atexit.register(close_all)
os.register_at_fork(after_in_child=_forget_after_fork)
