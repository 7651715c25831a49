"""DNS probes: one query to one server, and a lookup done the way the pod's own resolver does it.

`query` asks one server one question over UDP or TCP and reports what came back (or why
nothing did). UDP goes over a connected socket so an ICMP port unreachable shows as
"refused" rather than a timeout. `resolve_like_pod` replays glibc's res_search over the
pod's resolv.conf (analysis/resolvconf.py): candidate names in order, nameservers in order,
each query recorded, stopping where glibc stops.

Error kinds (beyond the socket ones of probes/_net.py: timeout, refused, unreachable, ...):
"truncated" (UDP answer with TC set), "servfail", "query-refused" (rcode REFUSED; "refused"
means nothing listens), "formerr"/"notimp"/... (other rcodes), "closed" (TCP closed before
the answer), "bad-response" (not a DNS answer to our question).

>>> r = query("172.20.0.10", "kubernetes.default.svc.cluster.local")
>>> r.ok, r.rcode, r.answers, r.flags
(True, 'NOERROR', ['172.20.0.1'], ['QR', 'AA', 'RD', 'RA'])
>>> query("172.20.0.10", "no-such-name.cluster.local", tcp=True).rcode
'NXDOMAIN'
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from netconform.analysis.resolvconf import candidate_names, parse_resolv_conf, search_plan
from netconform.probes._net import describe, errno_name, error_kind, ms, remaining, sockaddr
from netconform.probes.tcp import open_socket

__all__ = ["DnsResult", "ResolutionResult", "query", "resolve_like_pod"]

DNS_PORT = 53


@dataclass
class DnsResult:
    """One question to one server. `ok`: a definite answer (NOERROR or NXDOMAIN, not truncated)."""

    server: str
    port: int
    name: str  # absolute, as asked: "kubernetes.default.svc.cluster.local."
    rdtype: str
    transport: str  # "udp" | "tcp"
    ok: bool = False
    rcode: str | None = None  # "NOERROR", "NXDOMAIN", "SERVFAIL", ...; None: no answer at all
    answers: list[str] = field(default_factory=list)  # rdata of the asked type, e.g. ["172.20.0.1"]
    records: list[str] = field(default_factory=list)  # the whole answer section, zone-file lines
    ttl: int | None = None  # smallest TTL among the answer records
    authority_soa: bool = False  # negative answers from an authoritative zone carry its SOA
    soa: str | None = None
    flags: list[str] = field(default_factory=list)  # "QR", "AA", "TC", "RD", "RA", ...
    error_kind: str | None = None
    error: str = ""
    errno_name: str | None = None
    latency_ms: float | None = None  # query sent to answer parsed (TCP: including the connect)
    local_ip: str | None = None
    local_port: int | None = None


@dataclass
class ResolutionResult:
    """A lookup replayed with the pod's resolver rules; every query sent is in `tries`."""

    name: str
    rdtype: str
    transport: str  # "udp" (TCP after a truncated answer) or "tcp" (tcp=True or options use-vc)
    ok: bool  # a positive answer of the asked type
    outcome: str  # "answer", "nxdomain", "nodata", "servfail", "timeout", "refused", ...
    answered_name: str | None = None  # the candidate that produced the final answer
    answers: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # what glibc would try, in order
    tries: list[DnsResult] = field(default_factory=list)
    nameservers: list[str] = field(default_factory=list)
    ndots: int = 1
    search: list[str] = field(default_factory=list)
    error_kind: str | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)  # where the probe deviates or the file is odd


def query(server: str, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 2.0,
          port: int = DNS_PORT, edns0: bool = False) -> DnsResult:
    """Ask `server` (an IP literal) for `name`/`rdtype` once, with RD set like a stub resolver.

    `name` is taken as absolute (no search list: that is `resolve_like_pod`'s job).

    >>> r = query("10.0.1.16", "db.shop.svc.cluster.local", timeout=1.0)   # a headless service
    >>> sorted(r.answers)
    ['10.0.1.20', '10.0.2.31']
    >>> query("172.20.0.10", "kubernetes.default.svc.cluster.local", timeout=1.0).error_kind   # UDP filtered
    'timeout'
    """
    import dns.message
    import dns.name
    import dns.rdatatype

    qname = dns.name.from_text(name)
    rdt = dns.rdatatype.from_text(rdtype)
    result = DnsResult(server=server, port=port, name=qname.to_text(), rdtype=dns.rdatatype.to_text(rdt),
                       transport="tcp" if tcp else "udp")
    q = dns.message.make_query(qname, rdt, use_edns=0 if edns0 else False)
    t0 = time.monotonic()
    deadline = t0 + timeout
    wire = (_exchange_tcp if tcp else _exchange_udp)(result, q, deadline)
    result.latency_ms = ms(time.monotonic() - t0)
    if wire is not None:
        _read_answer(result, q, wire)
    return result


def _fail(result: DnsResult, exc: BaseException) -> None:
    result.error_kind, result.error, result.errno_name = error_kind(exc), describe(exc), errno_name(exc)


def _exchange_udp(result: DnsResult, q: Any, deadline: float) -> bytes | None:
    family, addr = sockaddr(result.server, result.port)
    wire = q.to_wire()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            # Connected: the kernel drops datagrams from other sources and reports an ICMP port
            # unreachable as ECONNREFUSED on the next recv, instead of a silent timeout.
            sock.connect(addr)
            result.local_ip, result.local_port = sock.getsockname()[:2]
            sock.settimeout(max(remaining(deadline), 0.001))
            sock.send(wire)
            while True:
                sock.settimeout(max(remaining(deadline), 0.001))
                data = sock.recv(65535)
                if len(data) >= 12 and data[:2] == wire[:2] and data[2] & 0x80:  # our id, QR set
                    return data
                # anything else is not the answer: keep listening until the deadline, as stubs do
        except OSError as e:
            _fail(result, e)
            return None


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        sock.settimeout(max(remaining(deadline), 0.001))
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionAbortedError("connection closed before the answer was complete")
        buf += chunk
    return buf


def _exchange_tcp(result: DnsResult, q: Any, deadline: float) -> bytes | None:
    sock, tcp = open_socket(result.server, result.port, max(remaining(deadline), 0.001))
    if sock is None:
        result.error_kind, result.error, result.errno_name = tcp.error_kind, tcp.error, tcp.errno_name
        return None
    result.local_ip, result.local_port = tcp.local_ip, tcp.local_port
    with sock:
        try:
            wire = q.to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            size = struct.unpack("!H", _recv_exact(sock, 2, deadline))[0]
            return _recv_exact(sock, size, deadline)
        except ConnectionAbortedError as e:
            result.error_kind, result.error = "closed", str(e)
        except OSError as e:
            _fail(result, e)
    return None


_RCODE_KINDS = {"SERVFAIL": "servfail", "REFUSED": "query-refused"}
# Socket failures that mean the query never reached a server (glibc's `gotsomewhere` stays 0).
_UNREACHED = {"refused", "unreachable", "permission", "address-unavailable"}


def _read_answer(result: DnsResult, q: Any, wire: bytes) -> None:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdatatype

    try:
        r = dns.message.from_wire(wire)
    except dns.exception.DNSException as e:
        if len(wire) >= 4 and wire[2] & 0x02:  # TC set and the rest cut off mid-record
            result.flags, result.error_kind = ["QR", "TC"], "truncated"
            result.error = "answer truncated (TC): too big for UDP, a resolver retries over TCP"
            return
        result.error_kind, result.error = "bad-response", f"unparseable answer: {e}"
        return
    if not q.is_response(r):
        result.error_kind, result.error = "bad-response", "the answer does not match the question"
        return
    result.rcode = dns.rcode.to_text(r.rcode())
    result.flags = dns.flags.to_text(r.flags).split()
    qtype = q.question[0].rdtype
    ttls = []
    for rrset in r.answer:
        ttls.append(rrset.ttl)
        result.records.extend(rrset.to_text().splitlines())
        if rrset.rdtype == qtype:
            result.answers.extend(rd.to_text() for rd in rrset)
    result.ttl = min(ttls) if ttls else None
    soa = next((rrset for rrset in r.authority if rrset.rdtype == dns.rdatatype.SOA), None)
    result.authority_soa, result.soa = soa is not None, soa.to_text() if soa is not None else None
    if r.flags & dns.flags.TC:
        result.error_kind = "truncated"
        result.error = "answer truncated (TC): too big for UDP, a resolver retries over TCP"
    elif result.rcode in ("NOERROR", "NXDOMAIN"):
        result.ok = True
    else:
        result.error_kind = _RCODE_KINDS.get(result.rcode, result.rcode.lower())
        result.error = f"the server answered {result.rcode}"


def resolve_like_pod(resolv_conf: str, name: str, rdtype: str = "A", *, tcp: bool = False,
                     timeout: float = 2.0, attempts: int | None = None) -> ResolutionResult:
    """Look `name` up the way glibc's res_search would with this resolv.conf text.

    Candidates come from `candidate_names` (ndots, search list, absolute try). For each, the
    nameservers are asked in file order, `attempts` rounds (default: the file's `attempts`,
    glibc's 2); SERVFAIL, REFUSED or silence moves to the next server, a truncated UDP answer is
    retried over TCP on the same server. A candidate's NXDOMAIN, empty answer (NODATA) or
    all-SERVFAIL moves to the next candidate; a positive answer ends the lookup; a timeout (or a
    REFUSED from every server) ends the search list but still tries the name as is, and
    "connection refused" from every server ends everything at once.

    `timeout` is per query and replaces the file's `options timeout` (a pod waits longer), so the
    probe stays bounded: about 2 x attempts x nameservers x timeout in the worst case.
    `options rotate` is applied deterministically (first query starts at the first server).

    >>> r = resolve_like_pod(open("/etc/resolv.conf").read(), "kubernetes.default")
    >>> r.ok, r.answered_name, r.answers, [t.rcode for t in r.tries]
    (True, 'kubernetes.default.svc.cluster.local.', ['172.20.0.1'], ['NXDOMAIN', 'NOERROR'])
    """
    import dns.rdatatype

    conf = parse_resolv_conf(resolv_conf)
    use_tcp = tcp or conf.use_vc
    rounds = conf.attempts if attempts is None else attempts
    result = ResolutionResult(name=name, rdtype=dns.rdatatype.to_text(dns.rdatatype.from_text(rdtype)),
                              transport="tcp" if use_tcp else "udp", ok=False, outcome="",
                              candidates=candidate_names(conf, name), nameservers=list(conf.nameservers),
                              ndots=conf.ndots, search=list(conf.search), notes=list(conf.warnings))
    if conf.rotate:
        result.notes.append("options rotate: the pod starts at a random nameserver; the probe rotates "
                            "from the first one, one step per query")
    if tcp and not conf.use_vc:
        result.notes.append("TCP forced by the caller; the pod itself uses UDP first")
    search = _Search(result, conf.nameservers, use_tcp, timeout, rounds, conf.edns0, conf.rotate)
    search.run(*search_plan(conf, name))
    return result


class _Search:
    """glibc's __res_context_search over the candidates, with __res_context_send for each."""

    def __init__(self, result: ResolutionResult, nameservers: list[str], tcp: bool, timeout: float,
                 rounds: int, edns0: bool, rotate: bool) -> None:
        self.result, self.nameservers, self.tcp = result, nameservers, tcp
        self.timeout, self.rounds, self.edns0, self.rotate = timeout, rounds, edns0, rotate
        self.sends = 0

    def run(self, first: str | None, search: list[str], last: str | None) -> None:
        saved: str | None = None  # the as-is-first query's outcome wins the final verdict
        got_nodata = got_servfail = False
        outcome = "nxdomain"
        if first is not None:
            outcome = self._candidate(first)
            if outcome == "answer":
                return self._finish(outcome)
            saved = outcome
        for cand in search:
            outcome = self._candidate(cand)
            if outcome == "answer" or outcome in _UNREACHED:  # no server reachable: glibc gives up at once
                return self._finish(outcome)
            got_nodata |= outcome == "nodata"
            got_servfail |= outcome == "servfail"
            if outcome not in ("nxdomain", "nodata", "servfail"):
                break  # a timeout (or REFUSED) ends the search list, but the name is still asked as is
        if last is not None:
            outcome = self._candidate(last)
            if outcome == "answer":
                return self._finish(outcome)
        self._finish(saved or ("nodata" if got_nodata else "servfail" if got_servfail else outcome))

    def _finish(self, outcome: str) -> None:
        res = self.result
        res.outcome = outcome
        if outcome == "answer":
            res.ok = bool(res.answers)
            if res.ok:
                return
            # res_search stops at any answer record (a CNAME alone); getaddrinfo then finds no address
            res.outcome = "nodata"
        res.error_kind = res.outcome
        names = len(dict.fromkeys(t.name for t in res.tries))
        res.error = (f"{res.name} ({res.rdtype}) not resolved: {res.outcome} after {len(res.tries)} "
                     f"queries for {names} names")

    def _candidate(self, cand: str) -> str:
        outcome, answer = self._send(cand)
        if outcome == "answer" and answer is not None:
            self.result.answered_name, self.result.answers = cand, list(answer.answers)
        return outcome

    def _send(self, cand: str) -> tuple[str, DnsResult | None]:
        """One candidate over all servers and rounds, like __res_context_send; returns (outcome, answer)."""
        n = len(self.nameservers)
        start = self.sends % n if self.rotate else 0
        self.sends += 1
        last_rcode: str | None = None  # glibc judges by the last answer in its buffer
        kinds: list[str] = []
        for _ in range(self.rounds):
            for k in range(n):
                server = self.nameservers[(start + k) % n]
                r = self._query(server, cand, self.tcp)
                if r.error_kind == "truncated" and not self.tcp:
                    r = self._query(server, cand, True)
                if r.ok:  # NOERROR or NXDOMAIN: accepted from the first server that gives it
                    if r.rcode == "NXDOMAIN":
                        return "nxdomain", r
                    return ("answer" if r.records else "nodata"), r
                last_rcode = r.rcode or last_rcode
                kinds.append(r.error_kind or "error")
        if not kinds:
            return "error", None  # options attempts:0 -- nothing is ever sent
        if last_rcode == "SERVFAIL":
            return "servfail", None
        if last_rcode is not None:
            return _RCODE_KINDS.get(last_rcode, last_rcode.lower()), None
        # Any timeout means some server got the query (glibc's `gotsomewhere`); without one, the
        # last socket failure (refused, unreachable) tells the search to give up.
        return ("timeout" if "timeout" in kinds else kinds[-1]), None

    def _query(self, server: str, name: str, tcp: bool) -> DnsResult:
        r = query(server, name, self.result.rdtype, tcp=tcp, timeout=self.timeout, edns0=self.edns0)
        self.result.tries.append(r)
        return r
