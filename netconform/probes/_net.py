"""Small helpers the socket probes share: parse an IP literal, name an OS error, time in ms.

Probes report failures as data, never as exceptions, with one shared vocabulary of error kinds
so a check can say "refused" or "timeout" the same way whatever protocol it probed:

=====================  =====================================================================
kind                   meaning (errno)
=====================  =====================================================================
timeout                no answer within the probe's timeout (or ETIMEDOUT)
refused                ECONNREFUSED: TCP RST, or ICMP port unreachable on a connected socket
unreachable            EHOSTUNREACH / ENETUNREACH: no route, no ARP/NDP answer, ICMP
                       unreachable (incl. admin-prohibited: iptables REJECT)
reset                  ECONNRESET / EPIPE / ECONNABORTED: the peer dropped the connection
permission             EPERM / EACCES: a local firewall rule, a prohibit route, or a missing
                       capability (raw sockets need CAP_NET_RAW)
address-unavailable    EADDRNOTAVAIL: no usable source address (interface down, DAD failed)
message-too-long       EMSGSIZE: larger than the interface or a learned path MTU, DF set
error                  any other OS error; `errno_name` and the text say which
=====================  =====================================================================

>>> error_kind(ConnectionRefusedError(111, "Connection refused"))
'refused'
>>> sockaddr("fe80::1%lo", 53)[0] == socket.AF_INET6
True
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import time

KINDS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
    errno.EPERM: "permission",
    errno.EACCES: "permission",
    errno.EADDRNOTAVAIL: "address-unavailable",
    errno.EMSGSIZE: "message-too-long",
}


def error_kind(exc: BaseException) -> str:
    """The shared error kind (table above) for an exception raised by a socket call."""
    if isinstance(exc, TimeoutError) and not getattr(exc, "errno", None):
        return "timeout"  # socket.timeout is TimeoutError without an errno since Python 3.10
    if isinstance(exc, OSError) and exc.errno is not None:
        return KINDS.get(exc.errno, "error")
    return "error"


def errno_name(exc: BaseException) -> str | None:
    """`"ECONNREFUSED"` for an OSError carrying that errno, else None."""
    code = getattr(exc, "errno", None)
    return errno.errorcode.get(code) if isinstance(code, int) else None


def describe(exc: BaseException) -> str:
    """One line for a report: the OS text when there is one ("Connection refused")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def parse_ip(ip: str) -> tuple[int, str, int]:
    """(family, address without scope, scope id) for an IP literal; IPv6 may carry `%iface`.

    Raises ValueError for anything that is not an IP literal: probes never resolve names
    implicitly, a check resolves them on purpose (and records that) with the dns probe.
    """
    addr, _, scope = str(ip).partition("%")
    parsed = ipaddress.ip_address(addr)  # ValueError for names and garbage
    if parsed.version == 4:
        if scope:
            raise ValueError(f"an IPv4 address has no scope: {ip!r}")
        return socket.AF_INET, str(parsed), 0
    scope_id = 0
    if scope:
        try:
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        except OSError:
            raise ValueError(f"no interface {scope!r} in this network namespace (from {ip!r})") from None
    return socket.AF_INET6, str(parsed), scope_id


def sockaddr(ip: str, port: int) -> tuple[int, tuple]:
    """(family, address tuple for connect/sendto) for an IP literal and a port."""
    family, addr, scope_id = parse_ip(ip)
    if family == socket.AF_INET:
        return family, (addr, port)
    return family, (addr, port, 0, scope_id)


def family_name(family: int) -> str:
    """`"inet"` / `"inet6"`, the names `ip(8)` and netinfo use."""
    return "inet6" if family == socket.AF_INET6 else "inet"


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded to microseconds (enough for a LAN round trip)."""
    return round(seconds * 1000.0, 3)


def remaining(deadline: float) -> float:
    """Seconds left until the monotonic `deadline` (never negative)."""
    return max(0.0, deadline - time.monotonic())
