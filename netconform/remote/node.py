"""The controller's side of one debug pod: boot the hub there, then multiplex probe calls over
one long-lived session (wire protocol: hub.py; bootstrap: boot.py).

    node = RemoteNode(exec_transport(cluster.api_client.configuration, "netconform", pod_name),
                      node="ip-10-0-1-5", debug_pod="netconform/netconform-ip-10-0-1-5-3f2a9c1e")
    node.start()                                     # hello, payload unless cached, hub ready
    loc = node.locate(pod_target(podref))            # Location(netns_path, inode, pid, evidence)
    node.call(pod_target(podref), "netinfo:routes", {}, timeout=5)   # -> ProbeCall, any thread
    node.close()                                     # bye; the hub stops its workers and exits

Calls from many threads share the session, matched to answers by request id. A heartbeat
thread pings every `heartbeat_interval` s (data frames, so they also keep API server, kubelet
and load-balancer idle timers from closing the stream); a session that received nothing for
`dead_after` s is declared dead. What never becomes a network verdict:

- a call without an answer within its timeout plus `call_grace` (the hub's own overhead:
  locating the target, starting a namespace worker) returns status "timeout", error_type
  "Timeout", like LocalRunner — the caller never hangs on the session;
- calls in flight when the session dies return status "error", error_type "SessionLost";
- the next call after a loss reconnects (the payload is cached in the pod: only its hash is
  checked); if that boot fails, or `max_reconnects` is used up, every later call fails at once
  with error_type "BootFailed" and the reason.

Imports nothing Linux-only: this runs on a laptop (macOS included).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netconform.errors import PermissionMissing, PidNotFound, ResolveError, RunnerError
from netconform.pids import PodRef
from netconform.remote import boot
from netconform.remote.payload import Payload, payload as default_payload
from netconform.remote.transport import Transport, TransportError
from netconform.runners.base import ProbeCall, probe_target

__all__ = ["DEFAULT_CACHE_DIR", "LineBuffer", "Location", "RemoteNode", "RemoteUnavailable", "node_target",
           "path_target", "pod_target"]

DEFAULT_CACHE_DIR = "/run/netconform"  # debugpod.CACHE_DIR: the pod's memory-backed emptyDir
MAX_LINE = 64 << 20  # a runaway line (a stray binary dump) is a protocol error, not a memory leak
_EOF = object()


class RemoteUnavailable(RunnerError):
    """The debug pod's hub cannot be reached or started; nothing on that node can be probed."""


@dataclass
class Location:
    """Where a target's network namespace is on the debug pod's node (hub.py LOCATION)."""

    netns_path: str
    dev: int
    inode: int
    pid: int | None
    method: str
    evidence: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int]:
        return self.dev, self.inode

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Location:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def pod_target(pod: PodRef | dict[str, Any]) -> dict[str, Any]:
    """The hub's target for a pod: a PodRef, or the pod's API JSON (reduced to PodRef fields)."""
    ref = pod if isinstance(pod, PodRef) else PodRef.from_api(pod)
    fields = dataclasses.asdict(ref)
    fields["container_ids"] = list(ref.container_ids)  # plain JSON, as it comes back
    return {"pod": fields}


def node_target() -> dict[str, Any]:
    return {"node": True}


def path_target(netns_path: str) -> dict[str, Any]:
    return {"path": netns_path}


class LineBuffer:
    """Bytes in, complete lines out (without the newline); a partial line waits for the rest."""

    def __init__(self, limit: int = MAX_LINE):
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        if len(rest) > self._limit:
            raise ValueError(f"a line longer than {self._limit} bytes")
        self._buf = bytearray(rest)
        return [bytes(line) for line in lines]

    @property
    def partial(self) -> bytes:
        return bytes(self._buf)


class _Slot:
    __slots__ = ("done", "reply", "failure")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict | None = None
        self.failure: str | None = None


class _Session:
    """One transport to one hub: a reader, a writer and a heartbeat thread, and the calls in flight."""

    def __init__(self, transport: Transport, label: str, heartbeat_interval: float, dead_after: float):
        self.transport = transport
        self.label = label
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.dead: str | None = None  # why the session ended, once it has
        self.last_rx = time.monotonic()
        self.rtt: float | None = None  # the last ping's round trip
        self.control: queue.SimpleQueue = queue.SimpleQueue()  # lines without an id: hello, ready
        self._pending: dict[int, _Slot] = {}
        self._pings: dict[int, float] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._outq: queue.SimpleQueue = queue.SimpleQueue()
        self._booted = False
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, name=f"remote-read-{label}", daemon=True),
                         threading.Thread(target=self._write, name=f"remote-write-{label}", daemon=True)]
        for t in self._threads:
            t.start()

    # -- threads ------------------------------------------------------------------------------
    def _read(self) -> None:
        lines = LineBuffer()
        while self.dead is None:
            chunk = self.transport.read()
            if not chunk:
                break
            self.last_rx = time.monotonic()
            try:
                batch = lines.feed(chunk)
            except ValueError as e:
                self.kill(f"protocol error: {e}")
                return
            for line in batch:
                self._dispatch(line)
        self.control.put(_EOF)
        how = self.transport.exit_status(wait=1.0)
        self.kill(f"the stream from {self.label} ended" + (f" ({how})" if how else ""))

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not self._booted or not isinstance(msg, dict) or "id" not in msg:
            if self._booted:
                self.kill(f"protocol error: unexpected output from the hub: {line[:200]!r}")
            else:
                self.control.put(line)
            return
        rid = msg.get("id")
        with self._lock:
            slot = self._pending.pop(rid, None)
            sent = self._pings.pop(rid, None)
        if sent is not None:
            self.rtt = time.monotonic() - sent
        if slot is not None:  # no slot: a call that timed out here, or a protocol error without id
            slot.reply = msg
            slot.done.set()

    def _write(self) -> None:
        while True:
            data = self._outq.get()
            if data is None:
                return
            try:
                self.transport.send(data)
            except TransportError as e:
                self.kill(str(e))
                return

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            quiet = time.monotonic() - self.last_rx
            if quiet > self.dead_after:
                self.kill(f"nothing from {self.label} for {quiet:.0f} s (heartbeat lost)")
                return
            rid = self._next_id()
            with self._lock:
                self._pings[rid] = time.monotonic()
            self.send({"id": rid, "op": "ping", "token": rid})

    # -- used by RemoteNode ---------------------------------------------------------------------
    def booted(self) -> None:
        """The hub is ready: lines are answers from now on, and the heartbeat starts."""
        self._booted = True
        t = threading.Thread(target=self._heartbeat, name=f"remote-heartbeat-{self.label}", daemon=True)
        self._threads.append(t)
        t.start()

    def control_line(self, deadline: float) -> Any:
        """The next line without an id (hello, ready) as bytes; _EOF, or None at the deadline."""
        try:
            return self.control.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def register(self) -> tuple[int, _Slot]:
        slot = _Slot()
        with self._lock:
            rid = next(self._ids)
            if self.dead is not None:
                slot.failure = self.dead
                slot.done.set()
            else:
                self._pending[rid] = slot
        return rid, slot

    def forget(self, rid: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    def send(self, obj: dict) -> None:
        self.send_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self._outq.put(data)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def kill(self, reason: str) -> None:
        """End the session: in-flight calls fail with `reason`, the transport is closed."""
        with self._lock:
            if self.dead is not None:
                return
            self.dead = reason
            slots, self._pending = list(self._pending.values()), {}
        for slot in slots:
            slot.failure = reason
            slot.done.set()
        self._stop.set()
        self._outq.put(None)
        # Closing may wait (a process exiting, a websocket close handshake); callers must not.
        threading.Thread(target=self.transport.close, name=f"remote-close-{self.label}", daemon=True).start()

    def wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class RemoteNode:
    """One debug pod's hub, reached through `connect(argv) -> Transport` (a new one per session).

    `hello` / `ready` hold the last boot's messages, `problems` what the hello says will not work
    (not root, no CAP_SYS_ADMIN, no hostPID). `before_reconnect()`, if given, runs before a
    reconnect and may return a reason to give up instead (the debug pod is gone or was replaced).
    """

    def __init__(self, connect: Callable[[list[str]], Transport], *, node: str = "", debug_pod: str = "",
                 python: str = "python3", cache_dir: str = DEFAULT_CACHE_DIR, payload: Payload | None = None,
                 hub_options: dict[str, Any] | None = None, boot_timeout: float = 120.0,
                 heartbeat_interval: float = 10.0, dead_after: float = 60.0, call_grace: float = 30.0,
                 max_reconnects: int = 3, before_reconnect: Callable[[], str | None] | None = None):
        self.connect = connect
        self.node = node
        self.debug_pod = debug_pod
        self.label = f"debug pod {debug_pod}" if debug_pod else (f"node {node}" if node else "the remote hub")
        self.python = python
        self.cache_dir = cache_dir
        self._payload = payload
        self.hub_options = dict(hub_options or {})
        self.boot_timeout = boot_timeout
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.call_grace = call_grace
        self.max_reconnects = max_reconnects
        self.before_reconnect = before_reconnect
        self.hello: dict[str, Any] | None = None
        self.ready: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.stats: dict[str, Any] = {"boots": 0, "payload_bytes_sent": 0, "reconnects": 0, "sessions_lost": 0,
                                      "boot_s": []}
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._broken: str | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Boot the hub now (otherwise the first call does); RemoteUnavailable if it cannot be."""
        _, failure = self._live_session()
        if failure is not None:
            raise RemoteUnavailable(failure[1])

    def close(self, timeout: float = 15.0) -> None:
        """Say bye (the hub stops its namespace workers and exits), then close the stream."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is None or session.dead is not None:
            return
        rid, slot = session.register()
        session.send({"id": rid, "op": "bye"})
        slot.done.wait(timeout)
        session.kill("closed")
        session.wait_closed(timeout)

    def __enter__(self) -> RemoteNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def payload(self) -> Payload:
        if self._payload is None:
            self._payload = default_payload()
        return self._payload

    @property
    def hub_pid(self) -> int | None:
        return (self.ready or {}).get("pid")

    @property
    def rtt(self) -> float | None:
        """The last heartbeat's round trip, in seconds."""
        s = self._session
        return s.rtt if s is not None else None

    @property
    def alive(self) -> bool:
        s = self._session
        return s is not None and s.dead is None

    # -- requests -------------------------------------------------------------------------------
    def call(self, target: dict[str, Any], probe: str, kwargs: dict[str, Any] | None = None,
             timeout: float = 10.0, *, expect: tuple[int, int] | None = None) -> ProbeCall:
        """Run `probe` in `target`'s namespace on the node; never raises for what happens there.

        `expect` (dev, inode): run only if the target is still in that namespace (else error
        "ResolveError"). Raises ValueError / TypeError for a malformed request, as LocalRunner.
        """
        probe_target(probe)
        kwargs = dict(kwargs or {})
        json.dumps(kwargs)
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        t0 = time.monotonic()

        def result(status: str = "error", **fields: Any) -> ProbeCall:
            fields.setdefault("where", f"remote node {self.node or '?'} via {self.label}")
            return ProbeCall(probe=probe, status=status, duration_s=round(time.monotonic() - t0, 6), **fields)

        session, failure = self._live_session()
        if failure is not None:
            return result(error_type=failure[0], error=failure[1])
        request = {"op": "call", "target": target, "probe": probe, "kwargs": kwargs, "timeout": timeout}
        if expect is not None:
            request["expect"] = list(expect)
        reply, failure = self._request(session, request, timeout + self.call_grace)
        if failure is not None and failure[0] == "Timeout":
            return result("timeout", error_type="Timeout",
                          error=f"no answer from {self.label} within {timeout + self.call_grace:g} s "
                                f"(probe timeout {timeout:g} s + {self.call_grace:g} s for the hub)")
        if failure is not None:
            return result(error_type=failure[0], error=failure[1])
        if "call" in reply:
            got = ProbeCall.from_dict(reply["call"])
            where = f"remote node {self.node or '?'} via {self.label}" + (f": {got.where}" if got.where else "")
            return result(got.status, value=got.value, error=got.error, error_type=got.error_type,
                          traceback=got.traceback, where=where)
        err = reply.get("error") or {}
        return result(error_type=err.get("error_type") or "ProtocolError",
                      error=err.get("error") or f"unexpected answer: {json.dumps(reply)[:200]}",
                      traceback=err.get("traceback", ""))

    def locate(self, target: dict[str, Any], timeout: float = 60.0) -> Location:
        """Where `target`'s namespace is on the node. Raises PidNotFound / ResolveError /
        PermissionMissing as the node-local resolver would, RemoteUnavailable if the hub cannot
        be reached."""
        session, failure = self._live_session()
        if failure is not None:
            raise RemoteUnavailable(failure[1])
        reply, failure = self._request(session, {"op": "locate", "target": target}, timeout)
        if failure is not None:
            raise RemoteUnavailable(failure[1] if failure[0] != "Timeout" else
                                    f"{self.label} did not locate {json.dumps(target)[:200]} within {timeout:g} s")
        if "locate" in reply:
            return Location.from_dict(reply["locate"])
        raise _locate_error(reply.get("error") or {}, self.label)

    def ping(self, timeout: float = 30.0) -> float:
        """One round trip to the hub, in seconds (RemoteUnavailable if none in time)."""
        session, failure = self._live_session()
        if failure is not None:
            raise RemoteUnavailable(failure[1])
        t0 = time.monotonic()
        reply, failure = self._request(session, {"op": "ping", "token": secrets.token_hex(4)}, timeout)
        if failure is not None:
            raise RemoteUnavailable(failure[1] if failure[0] != "Timeout" else f"no pong from {self.label} in {timeout:g} s")
        return time.monotonic() - t0

    # -- internals ------------------------------------------------------------------------------
    def _request(self, session: _Session, request: dict, wait: float) -> tuple[dict | None, tuple[str, str] | None]:
        rid, slot = session.register()
        session.send({"id": rid, **request})
        if not slot.done.wait(wait):
            session.forget(rid)
            return None, ("Timeout", "")
        if slot.failure is not None:
            return None, ("SessionLost", f"session with {self.label} lost: {slot.failure}")
        return slot.reply, None

    def _live_session(self) -> tuple[_Session | None, tuple[str, str] | None]:
        """The session to use, booting or rebooting it; or (error_type, why) when there is none."""
        with self._lock:
            if self._closed:
                return None, ("RunnerClosed", f"the session with {self.label} was closed")
            s = self._session
            if s is not None and s.dead is None:
                return s, None
            if self._broken is not None:
                return None, ("BootFailed", self._broken)
            if s is not None:
                self.stats["sessions_lost"] += 1
                if self.stats["reconnects"] >= self.max_reconnects:
                    self._broken = (f"the session with {self.label} was lost {self.stats['sessions_lost']} times; "
                                    f"last: {s.dead}")
                    return None, ("BootFailed", self._broken)
                refusal = self.before_reconnect() if self.before_reconnect else None
                if refusal:
                    self._broken = f"cannot reconnect to {self.label}: {refusal}"
                    return None, ("BootFailed", self._broken)
                self.stats["reconnects"] += 1
            try:
                self._session = self._boot()
            except (boot.BootError, TransportError) as e:
                self._session = None
                self._broken = str(e)
                return None, ("BootFailed", self._broken)
            return self._session, None

    def _boot(self) -> _Session:
        t0 = time.monotonic()
        deadline = t0 + self.boot_timeout
        options = {"silence_timeout": max(90.0, self.dead_after * 1.5), **self.hub_options}
        payload = self.payload
        argv = boot.command(self.cache_dir, payload.sha256, options, python=self.python)
        session = _Session(self.connect(argv), self.label, self.heartbeat_interval, self.dead_after)
        try:
            hello = boot.parse_hello(self._control(session, deadline, "hello"), where=self.label)
            if not hello.get("cached"):
                for line in boot.payload_lines(payload.data, payload.sha256):
                    session.send_raw(line)
                self.stats["payload_bytes_sent"] += payload.size
            raw = self._control(session, deadline, "the hub's ready line")
            try:
                ready = json.loads(raw)
            except ValueError:
                ready = None
            if not isinstance(ready, dict) or not ready.get("ready"):
                detail = ready.get("error") if isinstance(ready, dict) and ready.get("error") else repr(raw[:300])
                raise boot.BootError(f"{self.label}: the hub did not start: {detail}")
        except BaseException:
            session.kill("boot failed")
            raise
        session.booted()
        self.hello, self.ready = hello, ready
        self.problems = boot.hello_problems(hello)
        self.stats["boots"] += 1
        self.stats["boot_s"].append(round(time.monotonic() - t0, 3))
        return session

    def _control(self, session: _Session, deadline: float, what: str) -> bytes:
        line = session.control_line(deadline)
        if line is None or line is _EOF:
            session.kill(f"no {what}")
            session.wait_closed(10.0)  # the process's exit status and stderr, for the message
            how = "timed out" if line is None else "ended"
            status = session.transport.exit_status(wait=5.0)
            tail = session.transport.stderr_tail()
            raise boot.BootError(
                f"{self.label}: the stream {how} before {what} arrived"
                + (f" ({status})" if status else "") + (f"; stderr: {tail[-1500:]}" if tail else ""))
        return line


def _locate_error(err: dict[str, Any], label: str) -> Exception:
    kind, msg, evidence = err.get("error_type", ""), err.get("error") or "", list(err.get("evidence") or [])
    if kind == "PidNotFound":
        return PidNotFound(msg, evidence=evidence)
    if kind == "PermissionMissing":
        e = PermissionMissing("(on the node)")
        e.args = (msg,)
        return e
    if kind == "ResolveError":
        return ResolveError(msg, evidence=evidence)
    if kind in ("ValueError", "TypeError"):
        return ValueError(msg)
    return RemoteUnavailable(f"{label} could not locate the target: {kind}: {msg}")
