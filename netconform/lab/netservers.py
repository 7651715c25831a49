"""Every server the lab runs inside its network namespaces, on one asyncio loop thread.

The lab process owns one `NetServers`. Each server is created from sockets that a short-lived
helper thread opened inside the target namespace (`nsutil`), then served by the single loop, so
hundreds of servers cost no extra threads. Servers are addressed by a key; the lab's faults stop
and start them (a stopped server closes its sockets: new connections are refused, UDP is
unanswered) or flip their fault switches.

=================  ==================================  =======================================
server             where                               what
=================  ==================================  =======================================
DNS (CoreDNS pod)  pod netns, <ip>:53 UDP+TCP          `dnsserver.DnsServer`; plus CoreDNS's
                                                       :8080/health, :8181/ready, :9153/metrics
apiserver endpoint underlay netns, <ip>:443 (TLS)      /livez /readyz /healthz -> 200 ok,
                                                       /version JSON, anything else 401 Status
kube-proxy healthz node netns, 0.0.0.0:10256           /healthz, /livez JSON; 503 when stale
app pod            pod netns, its declared ports       HTTP 200 with the pod name; plain TCP
                                                       accept (postgres); UDP echo
=================  ==================================  =======================================

>>> servers = NetServers()
>>> servers.start_dns("dns/kube-system/coredns-x", "nc-lab-kube-system-coredns-x", "10.0.1.16",
...                   cluster_records(spec))
>>> servers.set_dns_faults("dns/kube-system/coredns-x", udp=False)   # fault: UDP/53 dropped
>>> servers.stop("dns/kube-system/coredns-x"); servers.start("dns/kube-system/coredns-x")
>>> servers.close()
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from netconform.lab import nsutil
from netconform.lab.dnsserver import DnsFaults, DnsServer, ZoneData, cluster_records
from netconform.lab.pki import CertificateAuthority
from netconform.lab.topology import KUBE_PROXY_HEALTHZ_PORT, LabSpec, PortSpec

log = logging.getLogger(__name__)

COREDNS_HEALTH_PORT = 8080  # health plugin
COREDNS_READY_PORT = 8181  # ready plugin
COREDNS_METRICS_PORT = 9153  # prometheus plugin
KUBE_PROXY_HEALTH_TIMEOUT = 60.0  # 2 x iptables syncPeriod (30 s), server.go
DEFAULT_APISERVER_VERSION: dict[str, str] = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-eks-5ca49cb",
    "gitCommit": "5ca49cb5b3fc6a8b1d4c1ef3ba6f9a5f0d9e7c21",
    "gitTreeState": "clean",
    "buildDate": "2024-12-12T00:47:50Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def server_key(kind: str, name: str) -> str:
    """The key `serve_lab` uses: `dns/<ns>/<pod>`, `apiserver/<ip>`, `healthz/<node>`,
    `app/<ns>/<pod>`."""
    return f"{kind}/{name}"


# -- small HTTP helpers ------------------------------------------------------------------------

def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def _json(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="application/json",
                        headers={"X-Content-Type-Options": "nosniff"})


def go_time(ns: int, monotonic: float | None = None) -> str:
    """A UTC time as Go's `time.Time.String()` prints it (what kube-proxy's `%q` emits):
    `2025-01-02 03:04:05.123456789 +0000 UTC m=+12.345678901`; the zero time for ns <= 0."""
    if ns <= 0:
        return "0001-01-01 00:00:00 +0000 UTC"
    secs, frac = divmod(ns, 10**9)
    out = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    out += " +0000 UTC"
    if monotonic is not None:
        out += f" m=+{monotonic:.9f}"
    return out


# -- server kinds --------------------------------------------------------------------------------

Bind = tuple[str, int, int]  # ip, port, SOCK_STREAM | SOCK_DGRAM


class _Entry:
    """One startable/stoppable server: its recipe (netns, binds) and, while running, its state."""

    kind = ""

    def __init__(self, netns: str | None, binds: list[Bind]) -> None:
        self.netns = netns
        self.binds = binds
        self.running = False

    def open_sockets(self) -> list[socket.socket]:
        # runs on the caller's thread (helper thread inside netns), never on the loop
        return nsutil.bind_sockets(self.netns, self.binds)

    async def serve(self, socks: list[socket.socket]) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        kinds = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}
        return {"kind": self.kind, "netns": self.netns, "running": self.running,
                "listen": [f"{kinds[t]}/{ip}:{port}" for ip, port, t in self.binds]}


class _HttpSites:
    """aiohttp sites on pre-bound sockets, sharing one runner."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None

    async def start(self, app: web.Application, socks: Sequence[socket.socket],
                    ssl_contexts: Sequence[ssl.SSLContext | None]) -> None:
        # short shutdown_timeout: a stopped server must drop its connections at once
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=0.2)
        await self.runner.setup()
        for sock, ctx in zip(socks, ssl_contexts, strict=True):
            await web.SockSite(self.runner, sock, ssl_context=ctx).start()

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


class _RawTcp:
    """Plain TCP listeners: accept, read and discard until the client closes (a postgres
    port, an HTTPS port served without TLS); `stop` closes listeners and open connections."""

    def __init__(self) -> None:
        self.servers: list[asyncio.base_events.Server] = []
        self.conns: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self, socks: Sequence[socket.socket]) -> None:
        for sock in socks:
            self.servers.append(await asyncio.start_server(self._handle, sock=sock))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        self.conns.add(writer)
        if me is not None:
            self.tasks.add(me)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancelled by stop(): end normally (see DnsServer._on_tcp)
        finally:
            self.conns.discard(writer)
            if me is not None:
                self.tasks.discard(me)
            writer.close()

    async def stop(self) -> None:
        for srv in self.servers:
            srv.close()
        for w in list(self.conns):
            w.close()
        for t in list(self.tasks):
            t.cancel()
        for srv in self.servers:
            await srv.wait_closed()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.servers.clear()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    def error_received(self, exc: Exception) -> None:
        pass


class _DnsEntry(_Entry):
    kind = "dns"

    def __init__(self, netns: str | None, ip: str, port: int, server: DnsServer,
                 coredns_ports: bool) -> None:
        binds: list[Bind] = [(ip, port, socket.SOCK_DGRAM), (ip, port, socket.SOCK_STREAM)]
        if coredns_ports:
            binds += [(ip, p, socket.SOCK_STREAM)
                      for p in (COREDNS_HEALTH_PORT, COREDNS_READY_PORT, COREDNS_METRICS_PORT)]
        super().__init__(netns, binds)
        self.server = server
        self.http = _HttpSites()

    async def serve(self, socks: list[socket.socket]) -> None:
        await self.server.serve(socks[0], socks[1])
        if len(socks) > 2:
            try:
                await self.http.start(self._coredns_app(), socks[2:], [None] * len(socks[2:]))
            except BaseException:
                await self.server.close()
                raise

    async def shutdown(self) -> None:
        await self.http.stop()
        await self.server.close()

    def _coredns_app(self) -> web.Application:
        server = self.server

        async def health(_: web.Request) -> web.Response:
            return _text("OK")

        async def ready(_: web.Request) -> web.Response:
            # the ready plugin lists the plugins that are not ready, with 503
            if server.faults.servfail:
                return _text("kubernetes", status=503)
            return _text("OK")

        async def metrics(_: web.Request) -> web.Response:
            s = server.stats
            lines = ["# HELP coredns_dns_requests_total Counter of DNS requests made per zone, "
                     "protocol and family.", "# TYPE coredns_dns_requests_total counter"]
            for proto in ("udp", "tcp"):
                lines.append(f'coredns_dns_requests_total{{family="1",proto="{proto}",'
                             f'server="dns://:53",type="other",view="",zone="."}} '
                             f'{s[proto + "_queries"]}')
            lines += ["# HELP coredns_dns_responses_total Counter of response status codes.",
                      "# TYPE coredns_dns_responses_total counter"]
            for rcode, n in sorted(server.rcodes.items()):
                lines.append(f'coredns_dns_responses_total{{plugin="kubernetes",rcode="{rcode}",'
                             f'server="dns://:53",view="",zone="."}} {n}')
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain",
                                charset="utf-8")

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/ready", ready)
        app.router.add_get("/metrics", metrics)
        return app


@dataclasses.dataclass
class _ApiserverState:
    version: dict[str, str]
    live: bool = True
    ready: bool = True


class _HttpsEndpointEntry(_Entry):
    kind = "apiserver"

    _LIVEZ = ("ping", "log", "etcd", "poststarthook/generic-apiserver-start-informers")
    _READYZ = _LIVEZ + ("informer-sync", "shutdown")

    def __init__(self, netns: str | None, ip: str, port: int, ssl_context: ssl.SSLContext | None,
                 state: _ApiserverState) -> None:
        super().__init__(netns, [(ip, port, socket.SOCK_STREAM)])
        self.ssl_context = ssl_context
        self.state = state
        self.http = _HttpSites()

    async def serve(self, socks: list[socket.socket]) -> None:
        await self.http.start(self._app(), socks, [self.ssl_context])

    async def shutdown(self) -> None:
        await self.http.stop()

    def _app(self) -> web.Application:
        state = self.state
        headers = {"Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff"}

        def probe(name: str, checks: tuple[str, ...], request: web.Request) -> web.Response:
            ok = state.live if name == "livez" else state.live and state.ready
            failing = set() if ok else {"etcd" if not state.live else "shutdown"}
            sub = request.path.split("/", 2)[2] if request.path.count("/") > 1 else ""
            if sub:  # a single check, e.g. /livez/ping
                if sub not in checks:
                    return web.Response(text="404 page not found\n", status=404, headers=headers)
                good = sub not in failing
                return web.Response(text="ok" if good else "internal server error",
                                    status=200 if good else 500, headers=headers)
            if "verbose" in request.query or failing:
                lines = [f"[-]{c} failed: reason withheld" if c in failing else f"[+]{c} ok"
                         for c in checks]
                lines.append(f"{name} check {'passed' if ok else 'failed'}")
                body = "\n".join(lines) + "\n"
            else:
                body = "ok"
            return web.Response(text=body, status=200 if ok else 500, content_type="text/plain",
                                charset="utf-8", headers=headers)

        async def handle(request: web.Request) -> web.Response:
            head = "/" + request.path.strip("/").split("/", 1)[0]
            if head in ("/livez", "/healthz"):
                return probe(head[1:], self._LIVEZ, request)
            if head == "/readyz":
                return probe("readyz", self._READYZ, request)
            if request.path in ("/version", "/version/"):
                # public-info-viewer lets anonymous clients read /version and the probes
                return web.Response(text=json.dumps(state.version, indent=2), headers=headers,
                                    content_type="application/json")
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
            return web.Response(text=json.dumps(status, indent=2), status=401, headers=headers,
                                content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@dataclasses.dataclass
class KubeProxyHealth:
    """kube-proxy's ProxyHealthServer state (pkg/proxy/healthcheck/proxy_health.go).

    Healthy while no queued rule update is older than `health_timeout`; /healthz also needs
    `node_eligible`. `pending_since_ns` is when the oldest unapplied update was queued.
    """

    health_timeout: float = KUBE_PROXY_HEALTH_TIMEOUT
    node_eligible: bool = True
    last_updated_ns: int = dataclasses.field(default_factory=time.time_ns)
    pending_since_ns: int | None = None
    started_ns: int = dataclasses.field(default_factory=time.time_ns)  # "process start"

    def go_time(self, ns: int) -> str:
        """`ns` as Go prints a clock reading, with its monotonic offset from process start."""
        return go_time(ns, (ns - self.started_ns) / 1e9 if ns >= self.started_ns else None)

    def snapshot(self) -> tuple[bool, int, int]:
        """(healthy ignoring node eligibility, lastUpdated ns, currentTime ns)."""
        now = time.time_ns()
        if self.pending_since_ns is not None and \
                now - self.pending_since_ns >= self.health_timeout * 1e9:
            return False, self.last_updated_ns, now
        # healthy: kube-proxy reports lastUpdated = currentTime (compatibility, see source)
        return True, now, now

    def stall(self) -> None:
        """An update was queued `health_timeout` + 1 s ago and never applied: 503 from now on."""
        now = time.time_ns()
        self.pending_since_ns = now - int((self.health_timeout + 1) * 1e9)
        self.last_updated_ns = self.pending_since_ns

    def sync(self) -> None:
        """The proxier applied everything queued (healthy again)."""
        self.pending_since_ns = None
        self.last_updated_ns = time.time_ns()


class _HealthzEntry(_Entry):
    kind = "healthz"

    def __init__(self, netns: str | None, ip: str, port: int, state: KubeProxyHealth) -> None:
        super().__init__(netns, [(ip, port, socket.SOCK_STREAM)])
        self.state = state
        self.http = _HttpSites()

    async def serve(self, socks: list[socket.socket]) -> None:
        await self.http.start(self._app(), socks, [None])

    async def shutdown(self) -> None:
        await self.http.stop()

    def _app(self) -> web.Application:
        state = self.state

        async def healthz(_: web.Request) -> web.Response:
            healthy, last, now = state.snapshot()
            eligible = state.node_eligible
            # kube-proxy formats with fmt's %q of time.Time: Go's String(), not RFC 3339
            body = (f'{{"lastUpdated": {json.dumps(state.go_time(last))},"currentTime": '
                    f'{json.dumps(state.go_time(now))}, "nodeEligible": {str(eligible).lower()}}}')
            return _json(body, 200 if healthy and eligible else 503)

        async def livez(_: web.Request) -> web.Response:  # ignores node eligibility
            healthy, last, now = state.snapshot()
            body = (f'{{"lastUpdated": {json.dumps(state.go_time(last))},'
                    f'"currentTime": {json.dumps(state.go_time(now))}}}')
            return _json(body, 200 if healthy else 503)

        async def not_found(_: web.Request) -> web.Response:  # Go's ServeMux 404
            return _text("404 page not found\n", status=404)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/livez", livez)
        app.router.add_route("*", "/{tail:.*}", not_found)
        return app


AppPort = PortSpec | int | tuple  # PortSpec, 8080, (8080, "TCP") or (8080, "TCP", "http")


def _as_portspec(port: AppPort) -> PortSpec | int:
    if isinstance(port, tuple):
        return PortSpec(*port) if len(port) > 2 else (
            port[0] if port[1].upper() == "TCP" else PortSpec(port[0], port[1]))
    return port


def app_port_mode(port: AppPort, tls: bool) -> str:
    """How an app pod's port is served: `udp` (echo), `http`, `https` or `tcp` (accept only).

    Bare ints and unnamed `(port, "TCP")` tuples are HTTP; UDP ports echo. Named ports: `http*`
    is HTTP; `https` (or `*-https`) is HTTPS when the app has a TLS context, else plain TCP;
    everything else (postgres, grpc...) is plain TCP.
    """
    port = _as_portspec(port)
    if isinstance(port, int):
        return "http"
    if port.protocol.upper() == "UDP":
        return "udp"
    name = port.name.lower()
    if name == "https" or name.endswith("-https"):
        return "https" if tls else "tcp"
    return "http" if name.startswith("http") else "tcp"


class _AppEntry(_Entry):
    kind = "app"

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self, netns: str | None, ip: str, ports: Sequence[AppPort], name: str,
                 ssl_context: ssl.SSLContext | None) -> None:
        tls = ssl_context is not None
        self.modes = [app_port_mode(p, tls) for p in ports]
        numbers = [p if isinstance(p, int) else p.port for p in map(_as_portspec, ports)]
        binds: list[Bind] = [(ip, n, socket.SOCK_DGRAM if m == "udp" else socket.SOCK_STREAM)
                             for n, m in zip(numbers, self.modes, strict=True)]
        super().__init__(netns, binds)
        self.name = name
        self.ssl_context = ssl_context
        self.http = _HttpSites()
        self.tcp = _RawTcp()
        self.udp: list[asyncio.DatagramTransport] = []

    async def serve(self, socks: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        http = [(s, self.ssl_context if m == "https" else None)
                for s, m in zip(socks, self.modes, strict=True) if m in ("http", "https")]
        try:
            if http:
                await self.http.start(self._app(), [s for s, _ in http], [c for _, c in http])
            await self.tcp.start([s for s, m in zip(socks, self.modes, strict=True) if m == "tcp"])
            for s, m in zip(socks, self.modes, strict=True):
                if m == "udp":
                    transport, _ = await loop.create_datagram_endpoint(_UdpEcho, sock=s)
                    self.udp.append(transport)  # type: ignore[arg-type]
        except BaseException:
            await self.shutdown()
            for s in socks:  # those not yet handed to a server (closing twice is a no-op)
                s.close()
            raise

    async def shutdown(self) -> None:
        await self.http.stop()
        await self.tcp.stop()
        for t in self.udp:
            t.close()
        self.udp.clear()

    def _app(self) -> web.Application:
        name = self.name

        async def hello(_: web.Request) -> web.Response:
            return web.Response(text=name, headers={"X-Pod-Name": name})

        async def payload(request: web.Request) -> web.Response:
            # a large body for path-MTU checks: small requests pass a black hole, this does not
            n = min(int(request.match_info["n"]), self.MAX_BYTES)
            return web.Response(body=b"x" * n, content_type="application/octet-stream",
                                headers={"X-Pod-Name": name})

        app = web.Application()
        app.router.add_get(r"/bytes/{n:\d+}", payload)
        app.router.add_route("*", "/{tail:.*}", hello)
        return app


# -- the owner -----------------------------------------------------------------------------------

class NetServers:
    """One asyncio loop thread serving every lab server; servers are addressed by key.

    All methods are called from threads other than the loop thread (the lab daemon's main
    thread, its API handlers, fault handlers) and block until the loop has done the work.
    """

    def __init__(self, *, thread_name: str = "lab-netservers", call_timeout: float = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._servers: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._timeout = call_timeout
        self._closed = False
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=thread_name,
                                        daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def _call(self, coro: Awaitable[Any]) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("NetServers methods block on the loop; do not call them from it")
        if self._closed:
            raise RuntimeError("NetServers is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    # -- lifecycle per key ---------------------------------------------------------------------
    def _add(self, key: str, entry: _Entry) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("NetServers is closed")
            if key in self._servers:
                raise KeyError(f"a server with key {key!r} already exists")
            self._servers[key] = entry
            try:
                self._start_entry(entry)
            except BaseException:
                del self._servers[key]
                raise

    def _start_entry(self, entry: _Entry) -> None:
        socks = entry.open_sockets()
        try:
            self._call(entry.serve(socks))
        except BaseException:
            for s in socks:  # serve() closes what it took over; closing twice is harmless
                s.close()
            raise
        entry.running = True

    def _entry(self, key: str, kind: type[_Entry] | None = None) -> _Entry:
        try:
            with self._lock:
                entry = self._servers[key]
        except KeyError:
            raise KeyError(f"no lab server with key {key!r}") from None
        if kind is not None and not isinstance(entry, kind):
            raise TypeError(f"lab server {key!r} is a {entry.kind} server, not {kind.kind}")
        return entry

    def start(self, key: str) -> None:
        """Start a stopped server again (new sockets in its netns); no-op if it runs."""
        with self._lock:
            entry = self._entry(key)
            if not entry.running:
                self._start_entry(entry)

    def stop(self, key: str) -> None:
        """Stop a server: its sockets and connections close (connects are refused). Idempotent."""
        with self._lock:
            entry = self._entry(key)
            if entry.running:
                entry.running = False
                self._call(entry.shutdown())

    def restart(self, key: str) -> None:
        """Stop then start (state such as DNS faults, zone and counters is kept)."""
        with self._lock:
            self.stop(key)
            self.start(key)

    def remove(self, key: str) -> None:
        """Stop a server and forget its key."""
        with self._lock:
            self.stop(key)
            del self._servers[key]

    def running(self, key: str) -> bool:
        return self._entry(key).running

    def keys(self, kind: str | None = None) -> list[str]:
        """Keys of all servers (of one kind: dns, apiserver, healthz, app), sorted."""
        with self._lock:
            return sorted(k for k, e in self._servers.items() if kind is None or e.kind == kind)

    def status(self) -> dict[str, dict[str, Any]]:
        """JSON-able state of every server, for `netconform-lab status --json`."""
        out = {}
        with self._lock:
            entries = sorted(self._servers.items())
        for key, entry in entries:
            info = entry.describe()
            if isinstance(entry, _DnsEntry):
                info["faults"] = dataclasses.asdict(entry.server.faults)
                info["stats"] = dict(entry.server.stats)
            elif isinstance(entry, _HealthzEntry):
                info["healthy"], _, _ = entry.state.snapshot()
                info["node_eligible"] = entry.state.node_eligible
            elif isinstance(entry, _HttpsEndpointEntry):
                info["live"], info["ready"] = entry.state.live, entry.state.ready
            out[key] = info
        return out

    # -- DNS ---------------------------------------------------------------------------------------
    def start_dns(self, key: str, netns: str | None, ip: str, records: ZoneData, *, port: int = 53,
                  faults: DnsFaults | None = None, coredns_ports: bool = True) -> DnsServer:
        """Serve `records` on `ip:port` UDP and TCP inside `netns` (a CoreDNS replica).

        `coredns_ports` also serves CoreDNS's :8080/health, :8181/ready (503 while SERVFAIL is
        injected) and :9153/metrics on the same IP. Returns the `DnsServer` (zone, faults, stats).
        """
        server = DnsServer(records, faults)
        self._add(key, _DnsEntry(netns, ip, port, server, coredns_ports))
        return server

    def dns(self, key: str) -> DnsServer:
        """The DnsServer behind `key` (to read `stats` or swap `zone`/`faults`)."""
        return self._entry(key, _DnsEntry).server  # type: ignore[attr-defined]

    def set_dns_faults(self, key: str, **changes: Any) -> DnsFaults:
        """Change some fault switches of one DNS server: udp, tcp, servfail, delay."""
        server = self.dns(key)
        server.faults = dataclasses.replace(server.faults, **changes)
        return server.faults

    def update_dns(self, records: ZoneData, keys: Iterable[str] | None = None) -> None:
        """Serve new records (e.g. `cluster_records(spec)` after pods were added) everywhere."""
        for key in (self.keys("dns") if keys is None else keys):
            self.dns(key).zone = records

    # -- apiserver endpoints -----------------------------------------------------------------------
    def start_https_endpoint(self, key: str, netns: str | None, ip: str, port: int,
                             ssl_context: ssl.SSLContext | None, *,
                             version: dict[str, str] | None = None) -> None:
        """An apiserver endpoint on `ip:port` in `netns`: /livez, /readyz, /healthz and /version
        without auth, 401 Status JSON elsewhere. `ssl_context` None serves plain HTTP."""
        state = _ApiserverState(dict(version or DEFAULT_APISERVER_VERSION))
        self._add(key, _HttpsEndpointEntry(netns, ip, port, ssl_context, state))

    def set_apiserver_health(self, key: str, *, live: bool | None = None,
                             ready: bool | None = None) -> None:
        """live=False fails /livez, /healthz and /readyz (etcd); ready=False only /readyz."""
        state = self._entry(key, _HttpsEndpointEntry).state  # type: ignore[attr-defined]
        if live is not None:
            state.live = live
        if ready is not None:
            state.ready = ready

    # -- kube-proxy healthz -------------------------------------------------------------------------
    def start_healthz(self, key: str, netns: str | None, *, ip: str = "0.0.0.0",
                      port: int = KUBE_PROXY_HEALTHZ_PORT,
                      health_timeout: float = KUBE_PROXY_HEALTH_TIMEOUT) -> KubeProxyHealth:
        """kube-proxy's healthz server (/healthz, /livez) in a node's netns."""
        state = KubeProxyHealth(health_timeout=health_timeout)
        self._add(key, _HealthzEntry(netns, ip, port, state))
        return state

    def set_healthz(self, key: str, *, stale: bool | None = None,
                    node_eligible: bool | None = None) -> KubeProxyHealth:
        """stale=True: rule updates stopped being applied (503 at once, lastUpdated frozen);
        stale=False: synced again. node_eligible=False: node deleted/tainted (503 on /healthz
        only)."""
        state: KubeProxyHealth = self._entry(key, _HealthzEntry).state  # type: ignore[attr-defined]
        if stale is True:
            state.stall()
        elif stale is False:
            state.sync()
        if node_eligible is not None:
            state.node_eligible = node_eligible
        return state

    # -- app pods -----------------------------------------------------------------------------------
    def start_app(self, key: str, netns: str | None, ip: str, ports: Sequence[AppPort], name: str,
                  *, ssl_context: ssl.SSLContext | None = None) -> None:
        """An app pod's servers on each declared port (see `app_port_mode`): HTTP answers 200
        with `name` (and `/bytes/<n>` returns n bytes), TCP ports accept, UDP ports echo."""
        if not ports:
            raise ValueError(f"app server {key!r} needs at least one port")
        self._add(key, _AppEntry(netns, ip, ports, name, ssl_context))

    # -- shutdown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every server, close every socket, stop the loop and join its thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            running = [e for e in self._servers.values() if e.running]
            for e in running:
                e.running = False

            async def shutdown_all() -> None:
                results = await asyncio.gather(*(e.shutdown() for e in running),
                                               return_exceptions=True)
                for r in results:
                    if isinstance(r, BaseException):
                        log.warning("lab server shutdown failed: %r", r)
                # anything still pending (e.g. a handler mid-request) goes too
                pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await self._loop.shutdown_asyncgens()
                await self._loop.shutdown_default_executor()

            try:
                self._call(shutdown_all())
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(self._timeout)
                if not self._thread.is_alive():
                    self._loop.close()
                self._servers.clear()

    def __enter__(self) -> NetServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- wiring for a whole lab ---------------------------------------------------------------------

def apiserver_ssl_context(ca: CertificateAuthority, cert_dir: Path, endpoint_ip: str,
                          spec: LabSpec) -> ssl.SSLContext:
    """A serving context for one apiserver endpoint, with the SANs a real apiserver certificate
    carries: the endpoint IP, the kubernetes ClusterIP (pods connect through its DNAT) and the
    `kubernetes.default.svc.<domain>` names."""
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             f"kubernetes.default.svc.{spec.cluster_domain}"]
    return ca.server_context(cert_dir, f"kube-apiserver-{endpoint_ip}",
                             ips=[endpoint_ip, spec.kubernetes_service_ip], dns=names)


def serve_lab(servers: NetServers, spec: LabSpec, ca: CertificateAuthority, cert_dir: Path, *,
              records: ZoneData | None = None, apiserver_netns: str | None = None) -> list[str]:
    """Start every namespace server `spec` implies; return their keys (see `server_key`).

    CoreDNS pods: DNS on the pod IP; apiserver endpoints: HTTPS on each apiserver IP in the
    underlay netns (or `apiserver_netns`); every node: kube-proxy healthz; app pods: their
    ports (HTTPS for `https` ports, certificate for the pod IP and its services' names).
    """
    records = records if records is not None else cluster_records(spec)
    started: list[str] = []

    def add(key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        fn(key, *args, **kwargs)
        started.append(key)

    try:
        for pod in spec.pods:
            if pod.role == "coredns":
                add(server_key("dns", pod.key), servers.start_dns, pod.netns, pod.ip, records)
        for ip in spec.apiserver_ips:
            add(server_key("apiserver", ip), servers.start_https_endpoint,
                apiserver_netns or spec.underlay_netns, ip, 443,
                apiserver_ssl_context(ca, cert_dir, ip, spec))
        for node in spec.nodes:
            add(server_key("healthz", node.name), servers.start_healthz, node.netns)
        for pod in spec.pods:
            if pod.role != "app" or not pod.ports:
                continue
            ctx = None
            if any(app_port_mode(p, True) == "https" for p in pod.ports):
                names = [f"{s.name}.{s.namespace}.svc.{spec.cluster_domain}"
                         for s in spec.services if pod.key in s.endpoints]
                ctx = ca.server_context(cert_dir, f"app-{pod.namespace}-{pod.name}",
                                        ips=[pod.ip], dns=names)
            add(server_key("app", pod.key), servers.start_app, pod.netns, pod.ip, pod.ports,
                pod.name, ssl_context=ctx)
    except BaseException:
        for key in started:  # all or nothing: a half-served lab would confuse every check
            try:
                servers.remove(key)
            except Exception:  # noqa: BLE001 - best effort while unwinding
                log.exception("cannot remove lab server %s", key)
        raise
    return started
