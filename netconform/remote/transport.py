"""Byte streams to a process in a debug pod: its stdin, stdout and stderr, nothing more.

Two implementations of one small interface (`Transport`):

- `PipeTransport`: a local subprocess (tests; `kubectl exec -i <pod> -- …` as a fallback, since
  kubectl's Go client has its own keepalives and stdin close).
- `ExecTransport`: the Kubernetes exec API over a websocket, through the official client.

A transport is used by one session (node.py): `send` from one writer thread, `read` from one
reader thread, `close` from any. `read` returns stdout bytes as they come, b"" once stdout has
ended; stderr is only kept (its last few KB) for error messages.

Why ExecTransport reads frames itself (checked against the pinned kubernetes==37.0.1 and
websocket-client==1.9.2): 37.0.1's `WSClient.update()` now has both fixes the research flagged
as missing up to 36.0.3 (it checks `SSLSocket.pending()` and drains every available frame), so
those defects are gone. It still does not fit a long-lived session: `update()`/`readline_stdout()`
poll, keep per-channel buffers in a dict without a lock (a reader thread beside them races), and
copy all stdout/stderr into `_all` forever (`capture_all`, which `stream()` cannot turn off). One
thread blocking in `WebSocket.recv_data_frame(True)` (websocket-client reassembles fragments and
reads through TLS buffering itself) and a channel demux here have none of those problems.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MAX_FRAME", "ChannelDemux", "ExecTransport", "PipeTransport", "StderrTail", "Transport",
           "TransportError", "exec_transport", "pipe_transport"]

MAX_FRAME = 1 << 20  # bytes per websocket message: larger stdin frames reset connections (inspect_k8s_sandbox #198)
STDERR_TAIL = 8192
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255


class TransportError(Exception):
    """The stream could not be opened, or broke while writing."""


class StderrTail:
    """The last `limit` bytes of a stream, for error messages."""

    def __init__(self, limit: int = STDERR_TAIL):
        self._buf: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self._lock:
            self._buf.append(data)
            self._size += len(data)
            while self._size - len(self._buf[0]) >= self._limit:
                self._size -= len(self._buf.popleft())

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._buf)[-self._limit:]
        return data.decode("utf-8", "replace").strip()


class Transport(ABC):
    """One bidirectional stream to a remote process."""

    description = ""  # for messages: "debug pod netconform/x", "pid 812"

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write `data` to the process's stdin (whole lines); TransportError if the stream broke."""

    @abstractmethod
    def read(self) -> bytes:
        """The next stdout bytes, blocking; b"" when stdout has ended (or the stream was closed)."""

    @abstractmethod
    def close(self) -> None:
        """End the stream (and the process, where this side can); idempotent, any thread."""

    def stderr_tail(self) -> str:
        return ""

    def exit_status(self, wait: float = 0.0) -> str:
        """How the process ended, if known ("exit code 3", "killed by signal 9", ""), waiting up
        to `wait` s for it to be known."""
        return ""


# -- local subprocess ----------------------------------------------------------------------------
class PipeTransport(Transport):
    """A local subprocess; stderr is drained by a thread into a tail."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, description: str = ""):
        self.description = description or f"process {argv[0]}"
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, bufsize=0, close_fds=True,
                                         start_new_session=True)
        except OSError as e:
            raise TransportError(f"cannot start {argv[0]}: {e}") from None
        self._tail = StderrTail()
        self._write_lock = threading.Lock()
        self._closed = False
        self._drain = threading.Thread(target=self._drain_stderr, name=f"stderr-{self.proc.pid}", daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._tail.add(chunk)

    def send(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
            except (OSError, ValueError) as e:  # ValueError: closed by close() meanwhile
                raise TransportError(f"writing to {self.description} failed: {e}") from None

    def read(self) -> bytes:
        try:
            return os.read(self.proc.stdout.fileno(), 1 << 16)
        except (OSError, ValueError):
            return b""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            # The hub stops its namespace workers on EOF before it exits: give it the time to.
            self.proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass
        self._drain.join(timeout=2.0)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def stderr_tail(self) -> str:
        return self._tail.text()

    def exit_status(self, wait: float = 0.0) -> str:
        try:
            rc = self.proc.wait(timeout=wait) if wait > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            rc = None
        self._drain.join(timeout=wait)  # stderr's last words come with the exit
        if rc is None:
            return ""
        return f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"


def pipe_transport(prefix: Sequence[str] = (), *, env: dict[str, str] | None = None,
                   description: str = "") -> Callable[[list[str]], Transport]:
    """A transport factory: runs `prefix + argv` (e.g. `kubectl exec -i -n ns pod -c c --`)."""
    return lambda argv: PipeTransport([*prefix, *argv], env=env, description=description)


# -- Kubernetes exec -----------------------------------------------------------------------------
class ChannelDemux:
    """The exec websocket's channel protocol: each message's first byte names its channel.

    `feed(message)` routes one received message: stdout bytes come back, stderr goes to `tail`,
    channel 3's Status JSON is kept as `status`; v5's close message (255) and unknown channels
    return nothing.
    """

    def __init__(self, tail: StderrTail | None = None):
        self.tail = tail or StderrTail()
        self.status: dict[str, Any] | None = None
        self._status_buf = bytearray()

    def feed(self, message: bytes) -> bytes:
        if not message:
            return b""
        channel, data = message[0], bytes(message[1:])
        if channel == STDOUT:
            return data
        if channel == STDERR:
            self.tail.add(data)
        elif channel == STATUS:
            self._status_buf += data
            try:
                self.status = json.loads(self._status_buf)
            except ValueError:
                pass  # a Status split over messages: complete with the next one
        return b""

    def exit_status(self) -> str:
        """The process's exit as the API server reported it: "exit code 0", "exit code 3", …"""
        st = self.status
        if not st:
            return ""
        if st.get("status") == "Success":
            return "exit code 0"
        for cause in (st.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return f"exit code {cause.get('message')}"
        return st.get("message") or st.get("reason") or "failed"


def stdin_frames(data: bytes, limit: int = MAX_FRAME) -> list[bytes]:
    """`data` as channel-0 messages of at most `limit` bytes each, channel byte included."""
    step = limit - 1
    return [bytes([STDIN]) + data[i:i + step] for i in range(0, len(data), step)] or []


class ExecTransport(Transport):
    """`command` exec'd in a pod through the API server's websocket exec.

    The websocket is opened with a dedicated ApiClient (stream() swaps methods on the client it
    is given, so a shared one would break concurrent API calls) in a helper thread, bounded by
    `connect_timeout` (stream() has no timeout of its own and has been seen to hang,
    kubernetes-client#602); one reader thread then receives frames for the life of the session.
    """

    def __init__(self, configuration: Any, namespace: str, name: str, command: Sequence[str], *,
                 container: str | None = None, connect_timeout: float = 60.0):
        self.description = f"debug pod {namespace}/{name}"
        self._tail = StderrTail()
        self._demux = ChannelDemux(self._tail)
        self._closed = threading.Event()
        self._out: collections.deque[bytes] = collections.deque()
        self._out_ready = threading.Condition()
        self._eof = False
        self._ws = self._connect(configuration, namespace, name, list(command), container, connect_timeout)
        self._reader = threading.Thread(target=self._read_frames, name=f"exec-{name}", daemon=True)
        self._reader.start()

    def _connect(self, configuration: Any, namespace: str, name: str, command: list[str],
                 container: str | None, timeout: float) -> Any:
        from kubernetes import client
        from kubernetes.stream import stream

        box: dict[str, Any] = {}
        done = threading.Event()
        lock = threading.Lock()

        def connect() -> None:
            try:
                api = client.CoreV1Api(client.ApiClient(configuration))
                ws = stream(api.connect_get_namespaced_pod_exec, name, namespace, container=container,
                            command=command, stdin=True, stdout=True, stderr=True, tty=False,
                            _preload_content=False, binary=True)
            except Exception as e:  # noqa: BLE001 -- ApiException(status=0) wraps every handshake failure
                box["error"] = e
                done.set()
                return
            with lock:
                late = box.get("abandoned")
                box["ws"] = ws
            if late:  # the caller gave up waiting: nobody will ever read this session
                ws.close()
            done.set()

        threading.Thread(target=connect, name=f"exec-connect-{name}", daemon=True).start()
        if not done.wait(timeout):
            with lock:
                box["abandoned"] = True
                ws = box.get("ws")
            if ws is not None:
                ws.close()
            raise TransportError(f"exec into {self.description} did not connect within {timeout:g} s")
        if "error" in box:
            e = box["error"]
            reason = getattr(e, "reason", None) or str(e)
            raise TransportError(f"exec into {self.description} failed: {str(reason).strip()[:500]}") from None
        return box["ws"]

    def _read_frames(self) -> None:
        from websocket import ABNF

        sock = self._ws.sock
        try:
            while not self._closed.is_set():
                opcode, frame = sock.recv_data_frame(True)
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT):
                    data = self._demux.feed(frame.data if isinstance(frame.data, bytes) else frame.data.encode())
                    if data:
                        with self._out_ready:
                            self._out.append(data)
                            self._out_ready.notify()
        except Exception:  # noqa: BLE001 -- any socket/protocol failure ends the stream the same way
            pass
        with self._out_ready:
            self._eof = True
            self._out_ready.notify_all()

    def send(self, data: bytes) -> None:
        from websocket import ABNF

        if self._closed.is_set():
            raise TransportError(f"exec stream to {self.description} is closed")
        try:
            for message in stdin_frames(data):
                self._ws.sock.send(message, opcode=ABNF.OPCODE_BINARY)
        except Exception as e:  # noqa: BLE001 -- WebSocketException, OSError, ssl errors
            raise TransportError(f"writing to {self.description} failed: {type(e).__name__}: {e}") from None

    def read(self) -> bytes:
        with self._out_ready:
            while not self._out and not self._eof:
                self._out_ready.wait()
            return self._out.popleft() if self._out else b""

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        sock = self._ws.sock
        try:
            sock.send_close()
        except Exception:  # noqa: BLE001 -- best effort: the peer may be gone already
            pass
        try:
            sock.abort()  # wakes the reader out of recv
        except Exception:  # noqa: BLE001
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        try:
            sock.shutdown()
        except Exception:  # noqa: BLE001
            pass
        with self._out_ready:
            self._eof = True
            self._out_ready.notify_all()

    def stderr_tail(self) -> str:
        return self._tail.text()

    def exit_status(self, wait: float = 0.0) -> str:
        if wait > 0 and self._reader is not threading.current_thread():
            self._reader.join(timeout=wait)  # the Status message comes just before the close
        return self._demux.exit_status()


def exec_transport(configuration: Any, namespace: str, name: str, *, container: str | None = None,
                   connect_timeout: float = 60.0) -> Callable[[list[str]], Transport]:
    """A transport factory exec'ing into pod `namespace/name` (a new websocket per session)."""
    return lambda argv: ExecTransport(configuration, namespace, name, argv, container=container,
                                      connect_timeout=connect_timeout)
