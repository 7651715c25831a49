"""TCP connect probes: does a SYN to ip:port get a SYN-ACK, and how fast.

A connect is the right test for an endpoint (not a ping: an endpoint can answer ICMP with its
port closed, or drop ICMP with the port open). Through a ClusterIP, kube-proxy picks an
endpoint at random per connection, so one connect says little; `connect_attempts` makes
bounded repeated attempts, each a new connection (new source port, so a new pick).

>>> connect("127.0.0.1", 9, timeout=1.0).error_kind        # nothing listens on the discard port
'refused'
>>> r = connect_attempts("172.20.0.1", 443, attempts=3)      # the kubernetes ClusterIP
>>> r.ok, [a.error_kind for a in r.attempts]                # one dead endpoint, then a live one
(True, ['timeout', None])
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from netconform.probes._net import describe, errno_name, error_kind, ms, sockaddr

__all__ = ["AttemptsResult", "TcpResult", "connect", "connect_attempts", "open_socket"]


@dataclass
class TcpResult:
    """One TCP connect. `ok` is True when the handshake completed; `error_kind` says why not."""

    ip: str
    port: int
    ok: bool
    error_kind: str | None = None  # timeout, refused, unreachable, reset, permission, ... (probes/_net.py)
    error: str = ""  # the OS text, e.g. "Connection refused"
    errno_name: str | None = None  # e.g. "ECONNREFUSED"; None for a timeout of our own
    latency_ms: float | None = None  # SYN to established; on failure, time until the failure
    local_ip: str | None = None  # the source address the kernel chose (which interface / rule)
    local_port: int | None = None


@dataclass
class AttemptsResult:
    """Repeated connects to one ip:port, stopped at the first success; every attempt kept."""

    ip: str
    port: int
    ok: bool  # some attempt connected
    max_attempts: int
    attempts: list[TcpResult] = field(default_factory=list)
    error_kind: str | None = None  # when no attempt connected: the last attempt's kind
    error: str = ""


def open_socket(ip: str, port: int, timeout: float) -> tuple[socket.socket | None, TcpResult]:
    """Connect and hand back the live socket with its TcpResult (socket None on failure).

    The building block of the https and dns probes, not a probe itself: the caller owns the
    socket and must close it. Its timeout is left at `timeout`.
    """
    family, addr = sockaddr(ip, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    t0 = time.monotonic()
    try:
        sock.connect(addr)
    except OSError as e:
        elapsed = time.monotonic() - t0
        sock.close()
        return None, TcpResult(ip=ip, port=port, ok=False, error_kind=error_kind(e), error=describe(e),
                               errno_name=errno_name(e), latency_ms=ms(elapsed))
    elapsed = time.monotonic() - t0
    local = sock.getsockname()
    return sock, TcpResult(ip=ip, port=port, ok=True, latency_ms=ms(elapsed), local_ip=local[0],
                           local_port=local[1])


def connect(ip: str, port: int, timeout: float = 2.0) -> TcpResult:
    """Open a TCP connection to `ip:port` and close it at once.

    >>> r = connect("10.0.1.23", 8080)
    >>> r.ok, r.latency_ms, r.local_ip
    (True, 0.412, '10.0.1.5')
    """
    sock, result = open_socket(ip, port, timeout)
    if sock is not None:
        sock.close()
    return result


def connect_attempts(ip: str, port: int, attempts: int = 3, timeout: float = 2.0,
                     interval: float = 0.0) -> AttemptsResult:
    """Up to `attempts` connects (a new connection each), stopping at the first success.

    Meant for a ClusterIP: a dead endpoint behind it shows as failed attempts before the first
    success instead of making the verdict random. Takes at most attempts x timeout (+ intervals).

    >>> r = connect_attempts("172.20.0.10", 53, attempts=4, timeout=1.0)
    >>> r.ok, len(r.attempts)
    (True, 1)
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    out = AttemptsResult(ip=ip, port=port, ok=False, max_attempts=attempts)
    for i in range(attempts):
        if i and interval > 0:
            time.sleep(interval)
        result = connect(ip, port, timeout)
        out.attempts.append(result)
        if result.ok:
            out.ok = True
            return out
    last = out.attempts[-1]
    out.error_kind, out.error = last.error_kind, f"{attempts}/{attempts} attempts failed, last: {last.error}"
    return out
