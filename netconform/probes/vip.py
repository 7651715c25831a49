"""Attempts through a load-balanced address (a Service ClusterIP), and at each backend directly.

kube-proxy picks a backend for every new connection (iptables `statistic --mode random`, IPVS
round robin, nftables `numgen random`), so a single attempt through a ClusterIP with one dead
backend behind it is a coin toss. `through` makes many independent attempts — each one a new TCP
connection or a new UDP socket, so a new source port and a new pick — until one answers:

    attempt 1 alone          a healthy Service answers it at once: one connection, as before
    the first wave           no answer within `hedge_s` (or a fast failure): the rest of a wave
                             of `wave` joins it in parallel, so W picks cost one timeout
    then waves of `wave`     while nothing answered and `budget_s` is not spent
    stop at                  the first wave with an answer, or `max_attempts`

Refusals come back in a millisecond, so a dead backend that refuses is retried until chance
alone cannot explain "nothing answered" (netconform.retry.attempts_for); a backend that drops
traffic costs one timeout per wave. `each` asks every backend directly, all at once, within one
timeout, so a check that did not get its answer can say which backend is dead.

An attempt is one call of an existing probe ("kind"):

=======  =================================  ==========================================
kind     probe                              answered (`ok`) when
=======  =================================  ==========================================
tcp      tcp.connect(ip, port)              the handshake completed
https    https.get(ip, port, path, ...)     TLS verified against the CA and HTTP 2xx
dns      dns.query(ip, name, tcp=...)       a definite DNS answer (NOERROR / NXDOMAIN);
                                            with any_rcode=True any DNS answer at all
=======  =================================  ==========================================

>>> r = through("tcp", "172.20.0.1", 443, max_attempts=20, timeout=1.0, budget_s=2.0)
>>> r.ok, r.answered, r.attempted, [a.error_kind for a in r.attempts][:3]
(True, 1, 3, ['refused', 'refused', None])
>>> [(a.ip, a.ok) for a in each("tcp", [["10.0.200.11", 443], ["10.0.200.12", 443]], timeout=1.0)]
[('10.0.200.11', False), ('10.0.200.12', True)]
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = ["KINDS", "Attempt", "ThroughResult", "each", "through"]

KINDS = ("tcp", "https", "dns")
DEFAULT_WAVE = 16
# How long the first attempt is awaited alone before the wave joins it (at most a quarter of the
# timeout): a live backend answers in milliseconds, so a healthy Service costs one connection and a
# dead one one timeout, not two; a slow but live one (a struggling CoreDNS) is not flooded at once.
HEDGE_S = 0.5
# Failures that another pick cannot change: our own input is bad.
_FINAL = {"ca-invalid"}


@dataclass
class Attempt:
    """One attempt at one address, reduced to what a verdict needs (the probe's result kept in `result`
    only for the attempt that answered and the last one that did not)."""

    ip: str
    port: int
    ok: bool
    error_kind: str | None = None  # the shared kinds (probes/_net.py, https, dns)
    error: str = ""
    detail: str = ""  # "HTTP 500", "SERVFAIL", "NOERROR" ... when the peer answered something
    answers: list[str] = field(default_factory=list)  # dns: the answer's rdata (["172.20.0.1"])
    latency_ms: float | None = None
    local_port: int | None = None  # a new one per attempt (what makes each pick new); None if the connect failed
    started_ms: float = 0.0  # since the first attempt began (waves share a start)


@dataclass
class ThroughResult:
    """Attempts through one load-balanced ip:port; every attempt kept, the counts for the verdict."""

    kind: str
    ip: str
    port: int
    ok: bool  # some attempt answered
    answered: int  # attempts that answered (the run stops at the first wave with an answer)
    attempted: int
    max_attempts: int
    budget_s: float
    waves: int
    attempts: list[Attempt] = field(default_factory=list)
    answer: dict | None = None  # the full probe result of the first attempt that answered
    last_failure: dict | None = None  # the full probe result of the last attempt that did not
    failures: dict[str, int] = field(default_factory=dict)  # error kind -> count
    duration_ms: float = 0.0


def _attempt_fn(kind: str, args: dict[str, Any], timeout: float) -> Callable[[str, int], Any]:
    if kind == "tcp":
        from netconform.probes.tcp import connect

        return lambda ip, port: connect(ip, port, timeout=timeout)
    if kind == "https":
        from netconform.probes.https import get

        return lambda ip, port: get(ip, port, args["path"], ca_pem=args["ca_pem"],
                                    server_name=args.get("server_name"), timeout=timeout)
    if kind == "dns":
        from netconform.probes.dns import query

        return lambda ip, port: query(ip, args["name"], args.get("rdtype", "A"), tcp=bool(args.get("tcp")),
                                      timeout=timeout, port=port)
    raise ValueError(f"unknown attempt kind {kind!r}; known: {', '.join(KINDS)}")


def _answered(kind: str, r: Any, args: dict[str, Any]) -> bool:
    # dns with any_rcode: reachability only, so REFUSED or SERVFAIL from a live server counts too.
    if kind == "dns" and args.get("any_rcode"):
        return r.rcode is not None
    return bool(r.ok)


def _detail(kind: str, r: Any) -> str:
    if kind == "https" and r.status is not None:
        return f"HTTP {r.status}"
    if kind == "dns" and r.rcode:
        return r.rcode
    return ""


def _reduce(kind: str, r: Any, args: dict[str, Any], started_ms: float) -> Attempt:
    latency = getattr(r, "total_ms", None) if kind == "https" else getattr(r, "latency_ms", None)
    tcp = getattr(r, "tcp", None)
    local_port = getattr(r, "local_port", None) or getattr(tcp, "local_port", None)
    ok = _answered(kind, r, args)
    return Attempt(ip=r.ip if kind != "dns" else r.server, port=r.port, ok=ok,
                   error_kind=None if ok else (r.error_kind or "error"), error="" if ok else r.error,
                   detail=_detail(kind, r), answers=list(getattr(r, "answers", None) or []) if kind == "dns" else [],
                   latency_ms=latency, local_port=local_port, started_ms=started_ms)


def _run_wave(fn: Callable[[str, int], Any], targets: list[tuple[str, int]]) -> list[Any]:
    if len(targets) == 1:
        return [fn(*targets[0])]
    # Threads inherit the network namespace of the thread that creates them (this worker's, after
    # setns), so parallel attempts leave from the same place as a single one.
    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="vip") as pool:
        return list(pool.map(lambda t: fn(*t), targets))


def through(kind: str, ip: str, port: int, *, max_attempts: int, timeout: float = 2.0, budget_s: float = 4.0,
            wave: int = DEFAULT_WAVE, hedge_s: float | None = None, **args: Any) -> ThroughResult:
    """Attempts at `ip:port` until one answers: one alone; if it has not answered within `hedge_s`
    (or failed sooner), the rest of a first wave of `wave` joins it; then waves of `wave`.

    A wave is waited for whole (its share of answers is evidence too). Stops at the first wave
    with an answer, after `max_attempts`, or once `budget_s` has passed (no wave starts after),
    so it takes at most about budget_s + timeout + hedge_s. `args` go to the attempt kind (table
    above): `path`, `ca_pem`, `server_name` for https; `name`, `tcp`, `rdtype`, `any_rcode` for dns.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    fn = _attempt_fn(kind, args, timeout)
    hedge = min(HEDGE_S, timeout / 4) if hedge_s is None else hedge_s
    out = ThroughResult(kind=kind, ip=ip, port=port, ok=False, answered=0, attempted=0,
                        max_attempts=max_attempts, budget_s=budget_s, waves=0)
    t0 = time.monotonic()
    final = False

    def since() -> float:
        return round((time.monotonic() - t0) * 1000.0, 3)

    def take(r: Any, started: float) -> None:
        nonlocal final
        a = _reduce(kind, r, args, started)
        out.attempts.append(a)
        if a.ok:
            out.answered += 1
            if out.answer is None:
                out.answer = asdict(r)
        else:
            out.failures[a.error_kind] = out.failures.get(a.error_kind, 0) + 1
            out.last_failure = asdict(r)
            final = final or a.error_kind in _FINAL

    # Threads inherit the network namespace of the thread that creates them (this worker's, after
    # setns), so parallel attempts leave from the same place as a single one.
    with ThreadPoolExecutor(max_workers=max(1, min(wave, max_attempts)), thread_name_prefix="vip") as pool:
        first = pool.submit(fn, ip, port)
        out.attempted, out.waves = 1, 1
        try:
            r = first.result(timeout=hedge)
        except FutureTimeout:  # not answered yet: hedge with the rest of the wave, keep waiting for it
            joined = [pool.submit(fn, ip, port) for _ in range(min(wave, max_attempts) - 1)]
            started = since()
            out.attempted += len(joined)
            take(first.result(), 0.0)
            for f in joined:
                take(f.result(), started)
        else:
            take(r, 0.0)
            if not out.answered and not final and max_attempts > 1 and time.monotonic() - t0 < budget_s:
                # it failed fast (refused, unreachable): the rest of the first wave now
                started = since()
                n = min(wave, max_attempts) - 1
                out.attempted += n
                for r2 in pool.map(lambda _: fn(ip, port), range(n)):
                    take(r2, started)
        while (not out.answered and not final and out.attempted < max_attempts
               and time.monotonic() - t0 < budget_s):
            n = min(wave, max_attempts - out.attempted)
            started = since()
            out.waves += 1
            out.attempted += n
            for r2 in pool.map(lambda _: fn(ip, port), range(n)):
                take(r2, started)
    out.ok = out.answered > 0
    out.duration_ms = round((time.monotonic() - t0) * 1000.0, 3)
    return out


def each(kind: str, targets: list[list[Any]] | list[tuple[str, int]], *, timeout: float = 2.0,
         **args: Any) -> list[Attempt]:
    """One attempt at every `[ip, port]` in `targets`, all in parallel: done within about `timeout`.

    The answers come back in the order of `targets`.
    """
    fn = _attempt_fn(kind, args, timeout)
    pairs = [(str(t[0]), int(t[1])) for t in targets]
    if not pairs:
        return []
    return [_reduce(kind, r, args, 0.0) for r in _run_wave(fn, pairs)]
