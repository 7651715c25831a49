"""Cluster DNS for the lab: the records CoreDNS's kubernetes plugin would serve, and a server.

`cluster_records(spec)` is pure: it derives every record from the `LabSpec`, so DNS can never
disagree with the dataplane or the API objects. Recompute it after pods or services change and
hand the result to the running servers (`DnsServer.zone = ...`, or `NetServers.update_dns`).

What is served (CoreDNS kubernetes plugin semantics, TTL 5):

- `<svc>.<ns>.svc.<domain>` A: the ClusterIP; headless services: one A per endpoint pod.
- `<ep>.<svc>.<ns>.svc.<domain>` A for each endpoint, `<ep>` being the pod hostname for
  StatefulSet pods (`db-0.db.shop.svc.cluster.local`) and the dashed IP otherwise.
- `_<port-name>._<proto>.<svc>.<ns>.svc.<domain>` SRV (ClusterIP: one record to the service
  name; headless: one per endpoint, weight 100/n), with the targets' A records as additionals.
- `<ip-dashed>.<ns>.pod.<domain>` A for every (non-hostNetwork) pod; with `pods="insecure"`
  (the EKS and kubeadm Corefile default) any well-formed dashed IPv4 in any namespace answers.
- PTR for ClusterIPs (the service name), endpoint IPs (the endpoint name, first service wins as
  in CoreDNS) and other pod IPs (their pod record name).
- Zone apex: SOA, NS `ns.dns.<domain>` (A = kube-dns ClusterIP), TXT `dns-version.<domain>`.
- Unknown names in the cluster domain: NXDOMAIN with the zone's SOA in authority; names that
  exist without the asked type (AAAA in an IPv4 cluster): NOERROR, no answer, SOA.
- Outside the cluster domain the lab plays the upstream resolver: `external.netconform.test`
  answers `spec.external_ip`; everything else is NXDOMAIN.

>>> zone = cluster_records(build_spec("lab1"))
>>> [str(rr.rdata) for rr in zone.lookup("kubernetes.default.svc.cluster.local", QTYPE.A).answer]
['172.20.0.1']
>>> server = DnsServer(zone)                         # then, on an asyncio loop:
>>> await server.serve(udp_sock, tcp_sock)           # pre-bound sockets, e.g. from nsutil
>>> server.faults = DnsFaults(udp=False)             # fault: UDP/53 silently dropped
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnslib import (
    AAAA,
    CLASS,
    EDNS0,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSError,
    DNSHeader,
    DNSRecord,
)

from netconform.lab.topology import LabSpec, PodSpec, ServiceSpec

log = logging.getLogger(__name__)

CLUSTER_TTL = 5  # CoreDNS kubernetes plugin default `ttl`
UPSTREAM_TTL = 30
UPSTREAM_DOMAIN = "netconform.test"
EXTERNAL_NAME = f"external.{UPSTREAM_DOMAIN}"
COREDNS_SCHEMA_VERSION = "1.1.0"  # TXT dns-version.<zone>, the DNS-based discovery spec version
_OPT = 41


def _abs(name: str) -> str:
    """Lower-case, absolute (trailing dot) form used as the key of every table here."""
    name = str(name).lower()
    return name if name.endswith(".") else name + "."


def dashed(ip: str) -> str:
    """`10.0.1.12` -> `10-0-1-12`, `fd00::1` -> `fd00--1` (Kubernetes DNS spec)."""
    return ip.replace(".", "-").replace(":", "-")


def reverse_name(ip: str) -> str:
    """`10.0.1.12` -> `12.1.0.10.in-addr.arpa.`"""
    return ipaddress.ip_address(ip).reverse_pointer + "."


@dataclass(frozen=True)
class Answer:
    """The outcome of one lookup, before it is packed into a DNS message."""

    rcode: int
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    authoritative: bool = False

    @property
    def rcode_name(self) -> str:
        return RCODE.get(self.rcode)


@dataclass(frozen=True)
class ZoneData:
    """Every record the lab's cluster DNS serves, keyed by owner name (lower-case, absolute)."""

    cluster_domain: str
    records: Mapping[str, Mapping[int, tuple[RR, ...]]]
    soas: Mapping[str, RR]  # zone apex -> SOA, for negative answers
    existing: frozenset[str] = field(default=frozenset())  # owners + empty non-terminals
    pods: str = "insecure"  # CoreDNS `pods` option: "insecure" | "verified"
    ttl: int = CLUSTER_TTL

    def names(self) -> list[str]:
        """Owner names that carry records (sorted)."""
        return sorted(self.records)

    def zone_of(self, name: str) -> str | None:
        """The apex of the most specific zone `name` belongs to, if the lab is authoritative."""
        name = _abs(name)
        best = None
        for apex in self.soas:
            if (name == apex or name.endswith("." + apex)) and (best is None or len(apex) > len(best)):
                best = apex
        return best

    def _insecure_pod_ip(self, name: str) -> str | None:
        """`10-0-1-5.<ns>.pod.<domain>` -> `10.0.1.5` in `pods insecure` mode, else None."""
        if self.pods != "insecure" or not name.endswith(".pod." + self.cluster_domain):
            return None
        labels = name[: -len(".pod." + self.cluster_domain)].split(".")
        if len(labels) != 2 or not labels[1]:
            return None
        try:
            return str(ipaddress.IPv4Address(labels[0].replace("-", ".")))
        except ValueError:
            return None

    def lookup(self, qname: str, qtype: int | str) -> Answer:
        """Answer `qname`/`qtype` as CoreDNS (or, outside the cluster domain, the upstream) would."""
        if isinstance(qtype, str):
            qtype = getattr(QTYPE, qtype.upper())
        name = _abs(qname)
        apex = self.zone_of(name)
        authoritative = apex == self.cluster_domain or (apex is None and name.endswith(".arpa."))
        negative = (self.soas[apex],) if apex else ()
        if name not in self.existing:
            pod_ip = self._insecure_pod_ip(name)
            if pod_ip is not None:
                if qtype not in (QTYPE.A, QTYPE.ANY):
                    return Answer(RCODE.NOERROR, authority=negative, authoritative=True)
                return Answer(RCODE.NOERROR, authoritative=True,
                              answer=(RR(name, QTYPE.A, CLASS.IN, self.ttl, A(pod_ip)),))
            return Answer(RCODE.NXDOMAIN, authority=negative, authoritative=authoritative)
        by_type = self.records.get(name, {})
        if qtype == QTYPE.ANY:
            found = tuple(rr for rrs in by_type.values() for rr in rrs)
        else:
            found = by_type.get(qtype, ())
        if not found:
            return Answer(RCODE.NOERROR, authority=negative, authoritative=authoritative)
        extra: list[RR] = []
        for rr in found:
            if rr.rtype == QTYPE.SRV:
                extra += self.records.get(_abs(str(rr.rdata.target)), {}).get(QTYPE.A, ())
        return Answer(RCODE.NOERROR, answer=found, additional=tuple(extra),
                      authoritative=authoritative)


class _ZoneBuilder:
    def __init__(self) -> None:
        self.records: dict[str, dict[int, list[RR]]] = {}

    def add(self, owner: str, rtype: int, rdata: object, ttl: int) -> None:
        owner = _abs(owner)
        rrs = self.records.setdefault(owner, {}).setdefault(rtype, [])
        if not any(str(r.rdata) == str(rdata) for r in rrs):  # an IP may back two services
            rrs.append(RR(owner, rtype, CLASS.IN, ttl, rdata))

    def has(self, owner: str, rtype: int) -> bool:
        return bool(self.records.get(_abs(owner), {}).get(rtype))


def _address_rdata(ip: str) -> tuple[int, object]:
    return (QTYPE.AAAA, AAAA(ip)) if ":" in ip else (QTYPE.A, A(ip))


def _endpoint_name(pod: PodSpec) -> str:
    # StatefulSet pods get hostname=<pod name>, subdomain=<serviceName>; kubelet/EndpointSlices
    # then carry the hostname and CoreDNS serves <hostname>.<svc>...; others use the dashed IP.
    return pod.name if pod.owner_kind == "StatefulSet" else dashed(pod.ip)


def _service_endpoints(spec: LabSpec, svc: ServiceSpec) -> list[tuple[str, str]]:
    """(endpoint name, ip) for every endpoint; the kubernetes service lists bare IPs."""
    out = []
    for ep in svc.endpoints:
        if "/" in ep:
            pod = spec.pod(ep)
            out.append((_endpoint_name(pod), pod.ip))
        else:
            out.append((dashed(ep), ep))
    return out


def cluster_records(spec: LabSpec, *, serial: int | None = None, ttl: int = CLUSTER_TTL,
                    upstream: Mapping[str, str] | None = None, pods: str = "insecure") -> ZoneData:
    """All DNS records for `spec` (pure). `upstream` maps names outside the cluster domain to
    IPs (default: `external.netconform.test` -> `spec.external_ip`); `serial` defaults to a
    checksum of the records, so it changes exactly when they do. `pods` is CoreDNS's option:
    "insecure" answers any `<a-b-c-d>.<ns>.pod.<domain>`, "verified" only real pods'."""
    if pods not in ("insecure", "verified"):
        raise ValueError(f"pods must be 'insecure' or 'verified', not {pods!r}")
    domain = _abs(spec.cluster_domain)
    z = _ZoneBuilder()
    ns_name = f"ns.dns.{domain}"
    z.add(domain, QTYPE.NS, NS(ns_name), ttl)
    z.add(ns_name, *_address_rdata(spec.dns_service_ip), ttl)
    z.add(f"dns-version.{domain}", QTYPE.TXT, TXT(COREDNS_SCHEMA_VERSION), ttl)

    ptr_owner: dict[str, str] = {}  # reverse name -> target; the first claim wins (CoreDNS order)

    def claim_ptr(ip: str, target: str) -> None:
        ptr_owner.setdefault(reverse_name(ip), _abs(target))

    # ClusterIPs first: CoreDNS resolves a reverse query against services before endpoints
    for svc in spec.services:
        if not svc.headless:
            claim_ptr(svc.cluster_ip, f"{svc.name}.{svc.namespace}.svc.{domain}")

    for svc in spec.services:
        base = f"{svc.name}.{svc.namespace}.svc.{domain}"
        endpoints = _service_endpoints(spec, svc)
        if svc.headless:
            for _, ip in endpoints:
                z.add(base, *_address_rdata(ip), ttl)
        else:
            z.add(base, *_address_rdata(svc.cluster_ip), ttl)
        for ep_name, ip in endpoints:
            z.add(f"{ep_name}.{base}", *_address_rdata(ip), ttl)
            claim_ptr(ip, f"{ep_name}.{base}")
        for port in svc.ports:
            if not port.name:  # unnamed ports get no SRV record (DNS spec)
                continue
            owner = f"_{port.name}._{port.protocol.lower()}.{base}"
            if svc.headless:
                weight = 100 // max(len(endpoints), 1)
                target_port = port.target_port or port.port
                for ep_name, _ in endpoints:
                    z.add(owner, QTYPE.SRV, SRV(0, weight, target_port, f"{ep_name}.{base}"), ttl)
            else:
                z.add(owner, QTYPE.SRV, SRV(0, 100, port.port, base), ttl)
        if svc.headless and not endpoints:
            z.records.setdefault(_abs(base), {})  # the name exists: NODATA, not NXDOMAIN

    for pod in spec.pods:
        if pod.host_network:  # hostNetwork pods share the node IP and get no pod record
            continue
        owner = f"{dashed(pod.ip)}.{pod.namespace}.pod.{domain}"
        z.add(owner, *_address_rdata(pod.ip), ttl)
        claim_ptr(pod.ip, owner)

    for rev, target in ptr_owner.items():
        z.add(rev, QTYPE.PTR, PTR(target), ttl)

    # the lab's stand-in for the upstream resolver CoreDNS forwards to
    upstream = {EXTERNAL_NAME: spec.external_ip} if upstream is None else dict(upstream)
    for name, ip in upstream.items():
        z.add(name, *_address_rdata(ip), UPSTREAM_TTL)
        if not z.has(reverse_name(ip), QTYPE.PTR):
            z.add(reverse_name(ip), QTYPE.PTR, PTR(_abs(name)), UPSTREAM_TTL)

    records = {owner: {t: tuple(rrs) for t, rrs in by_type.items()}
               for owner, by_type in sorted(z.records.items())}
    if serial is None:
        text = "\n".join(str(rr) for by_type in records.values() for rrs in by_type.values()
                         for rr in rrs)
        serial = zlib.crc32(text.encode()) & 0x7FFFFFFF
    soas = {domain: RR(domain, QTYPE.SOA, CLASS.IN, ttl,
                       SOA(ns_name, f"hostmaster.{domain}", (serial, 7200, 1800, 86400, ttl)))}
    for apex in {_abs(UPSTREAM_DOMAIN)} | {_parent_zone(n) for n in upstream}:
        if apex != domain and apex not in soas:
            soas[apex] = RR(apex, QTYPE.SOA, CLASS.IN, UPSTREAM_TTL,
                            SOA(f"ns.{apex}", f"hostmaster.{apex}", (1, 7200, 1800, 86400, UPSTREAM_TTL)))
    for apex, soa in soas.items():  # the apex answers SOA queries too
        records.setdefault(apex, {})[QTYPE.SOA] = (soa,)
    existing = set()
    for owner in records:
        existing.update(_ancestors(owner, soas, domain))
    return ZoneData(cluster_domain=domain, records=records, soas=soas, existing=frozenset(existing),
                    pods=pods, ttl=ttl)


def _parent_zone(name: str) -> str:
    name = _abs(name)
    return name.split(".", 1)[1] if name.count(".") > 2 else name


def _ancestors(owner: str, soas: Mapping[str, RR], cluster_domain: str) -> Iterable[str]:
    """`owner` and its parents down to its zone apex: those are names that exist (RFC 8020)."""
    stop = max((a for a in soas if owner == a or owner.endswith("." + a)), key=len, default=None)
    if stop is None and owner.endswith(".in-addr.arpa."):
        stop = "in-addr.arpa."
    name = owner
    while True:
        yield name
        if stop is None or name == stop or "." not in name.rstrip("."):
            return
        name = name.split(".", 1)[1]


# -- the server ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DnsFaults:
    """How a DNS server misbehaves. Replace the whole object to change it (atomic).

    udp=False: UDP queries are read and dropped (clients time out; as if UDP/53 were filtered).
    tcp=False: TCP connections are accepted and queries read but never answered.
    servfail: every query gets SERVFAIL. delay: seconds added before each answer.
    """

    udp: bool = True
    tcp: bool = True
    servfail: bool = False
    delay: float = 0.0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.server._on_udp(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to clients that went away; a DNS server keeps serving
        log.debug("dns udp error: %s", exc)


class DnsServer:
    """A DNS server over UDP and TCP for one CoreDNS replica, run on an asyncio loop.

    It serves on sockets it is given (already bound, e.g. inside a pod's netns), so one loop
    can run the servers of every namespace. `zone` and `faults` may be replaced at any time,
    from any thread; each query reads them once.
    """

    def __init__(self, zone: ZoneData, faults: DnsFaults | None = None, *,
                 tcp_idle_timeout: float = 10.0) -> None:
        self.zone = zone
        self.faults = faults or DnsFaults()
        self.tcp_idle_timeout = tcp_idle_timeout
        self.stats: dict[str, int] = {"udp_queries": 0, "tcp_queries": 0, "answered": 0,
                                      "dropped": 0}
        self.rcodes: dict[str, int] = {}  # responses built, by rcode name (for /metrics)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- message handling (no I/O) -------------------------------------------------------------
    def respond(self, data: bytes, *, max_size: int | None = None) -> bytes | None:
        """The packed response to query `data`, or None when it is not worth an answer.

        `max_size` (UDP) truncates an oversized answer to header + question with TC set, so
        the client retries over TCP as it must with big headless services.
        """
        try:
            req = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            if len(data) < 12 or data[2] & 0x80:  # not even a header, or a response: ignore
                return None
            return DNSRecord(DNSHeader(id=struct.unpack("!H", data[:2])[0], qr=1,
                                       rcode=RCODE.FORMERR)).pack()
        if req.header.qr:
            return None
        header = DNSHeader(id=req.header.id, qr=1, rd=req.header.rd, ra=1, opcode=req.header.opcode)
        reply = DNSRecord(header, q=req.q if req.questions else None)
        opt = next((rr for rr in req.ar if rr.rtype == _OPT), None)
        if req.header.opcode != 0:
            header.rcode = RCODE.NOTIMP
        elif not req.questions:
            header.rcode = RCODE.FORMERR
        elif self.faults.servfail:
            header.rcode = RCODE.SERVFAIL
        else:
            q = req.questions[0]
            ans = self.zone.lookup(str(q.qname), q.qtype)
            header.rcode = ans.rcode
            header.aa = int(ans.authoritative)
            for rr in ans.answer:  # owner spelled as asked: resolvers using 0x20 compare case
                reply.add_answer(RR(q.qname, rr.rtype, rr.rclass, rr.ttl, rr.rdata))
            for rr in ans.authority:
                reply.add_auth(rr)
            for rr in ans.additional:
                reply.add_ar(rr)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=1232))
        rcode = RCODE.get(header.rcode)
        self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1
        packed = reply.pack()
        if max_size is not None:
            limit = max(512, min(opt.rclass, 4096)) if opt is not None else 512
            limit = min(limit, max_size)
            if len(packed) > limit:
                header.tc = 1
                short = DNSRecord(header, q=reply.q)
                if opt is not None:
                    short.add_ar(EDNS0(udp_len=1232))
                packed = short.pack()
        return packed

    # -- I/O ------------------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self._udp is not None or self._tcp is not None

    async def serve(self, udp_sock: socket.socket | None, tcp_sock: socket.socket | None) -> None:
        """Start answering on the given bound sockets (TCP: listening). Returns once serving.

        The server owns the sockets from here on; `close()` closes them.
        """
        if self.serving:
            raise RuntimeError("DNS server is already serving")
        loop = asyncio.get_running_loop()
        try:
            if udp_sock is not None:
                udp_sock.setblocking(False)
                self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                                   sock=udp_sock)
                udp_sock = None
            if tcp_sock is not None:
                self._tcp = await asyncio.start_server(self._on_tcp, sock=tcp_sock)
                tcp_sock = None
        except BaseException:
            for s in (udp_sock, tcp_sock):
                if s is not None:
                    s.close()
            await self.close()
            raise

    async def close(self) -> None:
        """Stop serving: close the sockets, open TCP connections and pending delayed answers."""
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            # 3.11's Server.wait_closed does not wait for (or close) accepted connections
            for w in list(self._conns):
                w.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for w in list(self._conns):
            w.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let transports run their connection_lost and drop the sockets

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_udp(self, transport: asyncio.DatagramTransport | None, data: bytes, addr: tuple) -> None:
        self.stats["udp_queries"] += 1
        faults = self.faults
        if not faults.udp:
            self.stats["dropped"] += 1
            return
        resp = self.respond(data, max_size=65507)
        if resp is None or transport is None:
            return
        if faults.delay > 0:
            self._spawn(self._udp_later(transport, resp, addr, faults.delay))
        else:
            transport.sendto(resp, addr)
            self.stats["answered"] += 1

    async def _udp_later(self, transport: asyncio.DatagramTransport, resp: bytes, addr: tuple,
                         delay: float) -> None:
        await asyncio.sleep(delay)
        if not transport.is_closing():
            transport.sendto(resp, addr)
            self.stats["answered"] += 1

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        me = asyncio.current_task()
        if me is not None:  # so close() can cancel connections parked in a delay or a read
            self._tasks.add(me)
        try:
            while True:
                try:
                    size = struct.unpack("!H", await asyncio.wait_for(
                        reader.readexactly(2), self.tcp_idle_timeout))[0]
                    data = await asyncio.wait_for(reader.readexactly(size), self.tcp_idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                self.stats["tcp_queries"] += 1
                faults = self.faults
                if not faults.tcp:
                    self.stats["dropped"] += 1
                    continue
                resp = self.respond(data)
                if resp is None:
                    continue
                if faults.delay > 0:
                    await asyncio.sleep(faults.delay)
                writer.write(struct.pack("!H", len(resp)) + resp)
                await writer.drain()
                self.stats["answered"] += 1
        except (ConnectionError, OSError):
            return
        except asyncio.CancelledError:
            # close() cancels parked handlers; ending normally keeps asyncio's stream callback
            # from logging the cancellation as an "unhandled exception in client_connected_cb"
            return
        finally:
            self._conns.discard(writer)
            if me is not None:
                self._tasks.discard(me)
            writer.close()


def with_faults(server: DnsServer, **changes: object) -> DnsFaults:
    """Replace some fault switches of `server` (e.g. `udp=False`) and return the new set."""
    server.faults = dataclasses.replace(server.faults, **changes)
    return server.faults
