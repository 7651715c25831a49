"""ICMP echo over a raw socket (IPv4 and IPv6), reporting the ICMP errors that come back instead.

A router or the local stack often answers a lost echo with an error that says exactly why:
"host unreachable" from the pod's own address (no ARP/NDP answer from the gateway), "admin
prohibited" (a REJECT rule), "frag needed, mtu 1450" (a smaller link on the path; only with
`dont_fragment=True` for IPv4, always for IPv6). `ping` keeps each one with the router that sent
it, matched to our echo by identifier and sequence, so a check can quote it.

Raw sockets need CAP_NET_RAW (the runner's worker is root). No subprocess and no scapy: this
module imports in milliseconds.

>>> r = ping("127.0.0.1", count=2)
>>> r.ok, r.sent, r.received, r.replies[0].source
(True, 2, 2, '127.0.0.1')
>>> r = ping("10.0.2.9", dont_fragment=True, size=1472)      # across a 1450-byte overlay
>>> r.ok, r.error_kind, r.errors[0].mtu, r.errors[0].source
(False, 'frag-needed', 1450, '10.0.1.1')
"""
from __future__ import annotations

import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from netconform.probes._net import describe, error_kind, family_name, ms, parse_ip

__all__ = ["EchoReply", "PingError", "PingResult", "ping"]

# <linux/in.h>, <linux/in6.h>, <linux/icmp.h>, <linux/icmpv6.h>: not all exported by `socket`.
IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_PROBE = 10, 0, 3
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT, IPV6_PMTUDISC_PROBE, IPV6_DONTFRAG = 23, 0, 3, 62
SOL_RAW, ICMP_FILTER, ICMP6_FILTER = 255, 1, 1
ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
# Error types that quote our echo request back (RFC 792 / RFC 4443); everything else is noise.
V4_ERRORS = {3, 4, 11, 12}
V6_ERRORS = {1, 2, 3, 4}

# Kinds are shared between the families where the meaning is the same, so a check can test
# "host-unreachable" without caring whether ARP or NDP failed.
V4_KINDS = {
    (3, 0): "net-unreachable", (3, 1): "host-unreachable", (3, 2): "protocol-unreachable",
    (3, 3): "port-unreachable", (3, 4): "frag-needed", (3, 5): "source-route-failed",
    (3, 6): "net-unknown", (3, 7): "host-unknown", (3, 8): "source-host-isolated",
    (3, 9): "net-prohibited", (3, 10): "host-prohibited", (3, 11): "net-unreachable",
    (3, 12): "host-unreachable", (3, 13): "admin-prohibited", (3, 14): "host-precedence-violation",
    (3, 15): "precedence-cutoff", (4, 0): "source-quench", (11, 0): "ttl-exceeded",
    (11, 1): "reassembly-timeout", (12, 0): "parameter-problem", (12, 1): "parameter-problem",
    (12, 2): "parameter-problem",
}
V6_KINDS = {
    (1, 0): "net-unreachable", (1, 1): "admin-prohibited", (1, 2): "beyond-scope",
    (1, 3): "host-unreachable", (1, 4): "port-unreachable", (1, 5): "source-policy-failed",
    (1, 6): "reject-route", (2, 0): "packet-too-big", (3, 0): "ttl-exceeded",
    (3, 1): "reassembly-timeout", (4, 0): "parameter-problem", (4, 1): "parameter-problem",
    (4, 2): "parameter-problem",
}
_PAYLOAD = b"netconform-icmp-probe-"


@dataclass
class EchoReply:
    """One echo reply that matched our identifier and one of our sequence numbers."""

    seq: int
    source: str
    rtt_ms: float
    ttl: int | None  # TTL (IPv4) or hop limit (IPv6) as received: 64 - ttl ~ hops, for Linux peers
    bytes: int  # ICMP payload length received


@dataclass
class PingError:
    """Why one echo request got no reply: an ICMP error quoting it, or a local send failure."""

    seq: int
    kind: str  # "host-unreachable", "frag-needed", "ttl-exceeded", ... or an OS kind from probes/_net.py
    text: str
    source: str | None = None  # the router / host that sent the ICMP error; None for a local failure
    icmp_type: int | None = None
    icmp_code: int | None = None
    mtu: int | None = None  # next-hop MTU of frag-needed / packet-too-big
    rtt_ms: float | None = None


@dataclass
class PingResult:
    """The outcome of `ping`. `ok`: at least one echo reply came back (as ping(8)'s exit code)."""

    dst: str
    family: str  # "inet" | "inet6"
    size: int
    ttl: int
    dont_fragment: bool
    ok: bool
    sent: int = 0
    received: int = 0  # distinct sequence numbers answered
    duplicates: int = 0
    replies: list[EchoReply] = field(default_factory=list)
    errors: list[PingError] = field(default_factory=list)
    error_kind: str | None = None  # when nothing answered: the first error's kind, else "timeout"
    error: str = ""
    duration_ms: float = 0.0


def ping(dst: str, count: int = 1, timeout: float = 2.0, size: int = 56, ttl: int = 64, *,
         interval: float = 0.2, dont_fragment: bool = False) -> PingResult:
    """Send `count` echo requests of `size` payload bytes to the IP literal `dst`.

    Each request waits up to `timeout` seconds for its reply or an ICMP error quoting it, then
    the next goes out (at least `interval` after the previous). `dont_fragment` sets DF (IPv4)
    or IPV6_DONTFRAG and ignores any learned path MTU, so each oversized packet reaches the
    narrow link and its frag-needed / packet-too-big comes back (instead of a local EMSGSIZE).
    An IPv6 link-local `dst` needs its interface: `"fe80::1%eth0"`.

    >>> r = ping("169.254.1.1", count=3, timeout=1.0)   # the vpc-cni gateway, from a pod
    >>> r.received, [x.rtt_ms for x in r.replies]
    (3, [0.071, 0.052, 0.049])
    """
    if count < 1 or size < 0 or not 1 <= ttl <= 255 or timeout <= 0:
        raise ValueError(f"bad ping arguments: count={count} size={size} ttl={ttl} timeout={timeout}")
    family, addr, scope_id = parse_ip(dst)
    result = PingResult(dst=dst, family=family_name(family), size=size, ttl=ttl,
                        dont_fragment=dont_fragment, ok=False)
    t_start = time.monotonic()
    try:
        sock = _open(family, ttl, dont_fragment)
    except OSError as e:
        result.error_kind = error_kind(e)
        result.error = f"cannot open a raw ICMP socket (needs CAP_NET_RAW): {describe(e)}"
        return result
    with sock:
        sock.settimeout(timeout)  # bounds sendto too, should the device queue be full
        _Session(sock, family, addr, scope_id, size, result).run(count, timeout, interval)
    result.duration_ms = ms(time.monotonic() - t_start)
    result.ok = result.received > 0
    if not result.ok:
        first = result.errors[0] if result.errors else None
        result.error_kind = first.kind if first else "timeout"
        if first:
            result.error = first.text + (f" from {first.source}" if first.source else "")
        else:
            result.error = f"no reply to {result.sent} echo request(s) within {timeout} s each"
    return result


def _open(family: int, ttl: int, dont_fragment: bool) -> socket.socket:
    if family == socket.AF_INET:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        # PROBE, not DO: DF set but a PMTU learned from an earlier run is ignored, so every
        # oversized echo reaches the narrow hop and its frag-needed comes back to quote.
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER,
                        IP_PMTUDISC_PROBE if dont_fragment else IP_PMTUDISC_DONT)
        # Kernel-side filter: wake up only for replies and errors, not for every echo request
        # (on loopback we would otherwise read our own requests too).
        wanted = (1 << 0) | sum(1 << t for t in V4_ERRORS)
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~wanted & 0xFFFFFFFF))
        return sock
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    if dont_fragment:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
    block = [0xFFFFFFFF] * 8  # ICMP6_FILTER: a set bit blocks that type
    for t in (129, *V6_ERRORS):
        block[t >> 5] &= ~(1 << (t & 31))
    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *block))
    return sock


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class _Session:
    """One ping run: sends, then reads until each request is answered or its time is up."""

    def __init__(self, sock: socket.socket, family: int, addr: str, scope_id: int, size: int,
                 result: PingResult) -> None:
        self.sock, self.family, self.result = sock, family, result
        self.packed_dst = socket.inet_pton(family, addr)
        self.target = (addr, 0) if family == socket.AF_INET else (addr, 0, 0, scope_id)
        # Random, not the pid: every worker on a node runs as a child of some pytest process,
        # and raw sockets see every echo reply in the namespace.
        self.ident = secrets.randbelow(0xFFFF) + 1
        self.payload = (_PAYLOAD * (size // len(_PAYLOAD) + 1))[:size]
        self.sent_at: dict[int, float] = {}
        self.settled: set[int] = set()  # sequence numbers answered by a reply or an error

    def run(self, count: int, timeout: float, interval: float) -> None:
        last_send = None
        for seq in range(1, count + 1):
            if last_send is not None:
                self._read_until(last_send + interval, None)
            last_send = time.monotonic()
            if self._send(seq):
                self._read_until(last_send + timeout, seq)

    def _send(self, seq: int) -> bool:
        header = struct.pack("!BBHHH", ECHO_REQUEST[self.family], 0, 0, self.ident, seq)
        packet = header + self.payload
        if self.family == socket.AF_INET:  # the kernel fills in the ICMPv6 checksum itself
            packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
        t = time.monotonic()
        try:
            self.sock.sendto(packet, self.target)
        except OSError as e:
            # ENETUNREACH (no route), EMSGSIZE (DF over the device MTU), EPERM (OUTPUT DROP)...
            self.result.errors.append(PingError(seq=seq, kind=error_kind(e), text=describe(e)))
            return False
        self.sent_at[seq] = t
        self.result.sent += 1
        return True

    def _read_until(self, deadline: float, seq: int | None) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while seq is None or seq not in self.settled:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                if time.monotonic() >= deadline:
                    return
                continue
            try:
                data, anc, _flags, src = self.sock.recvmsg(65535, socket.CMSG_SPACE(4))
            except OSError:
                continue  # nothing queued after all, or a stray error: keep waiting
            self._handle(data, anc, src, time.monotonic())

    def _handle(self, data: bytes, anc: list, src: tuple, now: float) -> None:
        source = src[0]
        if self.family == socket.AF_INET:
            ihl = (data[0] & 0x0F) * 4 if data else 0
            hops: int | None = data[8] if len(data) > 8 else None
            icmp = data[ihl:]
        else:
            if len(src) > 3 and src[3] and source.startswith("fe80"):
                source = f"{source}%{_ifname(src[3])}"
            icmp = data
            hops = next((struct.unpack("i", d[:4])[0] for lvl, typ, d in anc
                         if lvl == socket.IPPROTO_IPV6 and typ == socket.IPV6_HOPLIMIT), None)
        if len(icmp) < 8:
            return
        icmp_type, code = icmp[0], icmp[1]
        if icmp_type == ECHO_REPLY[self.family]:
            ident, seq = struct.unpack("!HH", icmp[4:8])
            if ident != self.ident or seq not in self.sent_at:
                return
            if any(r.seq == seq for r in self.result.replies):
                self.result.duplicates += 1
                return
            self.result.replies.append(EchoReply(seq=seq, source=source, rtt_ms=ms(now - self.sent_at[seq]),
                                                 ttl=hops, bytes=len(icmp) - 8))
            self.result.received += 1
            self.settled.add(seq)
            return
        seq = self._quoted_seq(icmp)
        if seq is None:
            return
        kinds = V4_KINDS if self.family == socket.AF_INET else V6_KINDS
        kind = kinds.get((icmp_type, code), f"icmp-{icmp_type}-{code}")
        mtu = None
        if self.family == socket.AF_INET and (icmp_type, code) == (3, 4):
            mtu = struct.unpack("!H", icmp[6:8])[0] or None  # 0: an old router that does not say
        elif self.family == socket.AF_INET6 and icmp_type == 2:
            mtu = struct.unpack("!I", icmp[4:8])[0]
        text = kind.replace("-", " ") + (f", next-hop MTU {mtu}" if mtu else "")
        self.result.errors.append(PingError(seq=seq, kind=kind, text=text, source=source, icmp_type=icmp_type,
                                            icmp_code=code, mtu=mtu, rtt_ms=ms(now - self.sent_at[seq])))
        self.settled.add(seq)

    def _quoted_seq(self, icmp: bytes) -> int | None:
        """The sequence number of our echo request quoted in an ICMP error, or None if not ours."""
        inner = icmp[8:]
        if self.family == socket.AF_INET:
            if icmp[0] not in V4_ERRORS or len(inner) < 20:
                return None
            ihl = (inner[0] & 0x0F) * 4
            if inner[9] != socket.IPPROTO_ICMP or inner[16:20] != self.packed_dst:
                return None
            quoted = inner[ihl:ihl + 8]
        else:
            # Extension headers between the quoted IPv6 header and ICMPv6 are not followed: we
            # never send any.
            if icmp[0] not in V6_ERRORS or len(inner) < 48 or inner[6] != socket.IPPROTO_ICMPV6:
                return None
            if inner[24:40] != self.packed_dst:
                return None
            quoted = inner[40:48]
        if len(quoted) < 8 or quoted[0] != ECHO_REQUEST[self.family]:
            return None
        ident, seq = struct.unpack("!HH", quoted[4:8])
        return seq if ident == self.ident and seq in self.sent_at else None


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)
