"""NetServers in throwaway namespaces: servers in one netns, clients in another, over a veth pair."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from netconform.lab import nsutil
from netconform.lab.dnsserver import cluster_records, dashed
from netconform.lab.netservers import NetServers, apiserver_ssl_context, serve_lab, server_key
from netconform.lab.pki import CertificateAuthority
from netconform.lab.topology import PortSpec, ServiceSpec, build_spec

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
EXTRA_IPS = ["10.77.0.11", "10.77.0.12"]  # e.g. apiserver endpoints next to a DNS pod IP
# How long a client waits where an answer is expected: generous, since the servers run on one
# asyncio thread of this (possibly loaded, 2-core) machine; only a broken server waits it out.
# Where *no* answer is the expected outcome, the tests pass their own short timeout.
WAIT = 30.0


def eventually(what: str, cond, within: float = WAIT) -> None:
    """Wait until `cond()` holds (e.g. the server thread has counted a datagram it got)."""
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        time.sleep(0.01)


@dataclasses.dataclass
class Pair:
    srv: str
    cli: str


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def pair(make_netns) -> Pair:
    """A server netns and a client netns joined by a veth pair (10.77.0.0/24)."""
    srv, cli = make_netns("srv"), make_netns("cli")
    # both ends are created directly in the namespaces: the root namespace never sees them
    ip(srv, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cli)
    ip(srv, "addr", "add", f"{SERVER_IP}/24", "dev", "eth0")
    for extra in EXTRA_IPS:
        ip(srv, "addr", "add", f"{extra}/24", "dev", "eth0")
    ip(cli, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    ip(srv, "link", "set", "eth0", "up")
    ip(cli, "link", "set", "eth0", "up")
    return Pair(srv, cli)


@pytest.fixture
def servers():
    s = NetServers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def spec():
    return build_spec("nst", "vpc-cni", nodes=1, pods_per_node=3)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


# -- clients, each with its sockets inside the client netns ---------------------------------

def dns_udp(ns: str, name: str, rdtype: str = "A", server: str = SERVER_IP, timeout: float = WAIT,
            use_edns: bool = False) -> dns.message.Message:
    sock = nsutil.socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        q = dns.message.make_query(name, rdtype, use_edns=use_edns)
        return dns.query.udp(q, server, timeout=timeout, sock=sock)


def dns_tcp(ns: str, name: str, rdtype: str = "A", server: str = SERVER_IP,
            timeout: float = WAIT) -> dns.message.Message:
    sock = nsutil.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))  # dnspython wants a connected socket
        sock.setblocking(False)
        return dns.query.tcp(dns.message.make_query(name, rdtype), server, timeout=timeout,
                             sock=sock)


def answers(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


@dataclasses.dataclass
class Http:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_get(ns: str, url: str, context: ssl.SSLContext | None = None,
             timeout: float = WAIT) -> Http:
    def get() -> Http:
        # no proxies from the environment: the request must leave from this netns directly
        handlers = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(url, timeout=timeout) as r:
                return Http(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Http(e.code, dict(e.headers), e.read())
    return nsutil.run_in_netns(ns, get)


def tcp_connect(ns: str, host: str, port: int, timeout: float = WAIT) -> None:
    sock = nsutil.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, port))


def listeners(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htuln"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return [line for line in out.splitlines() if line.strip()]


# -- DNS --------------------------------------------------------------------------------------

@pytest.fixture
def dns_server(pair, servers, spec):
    zone = cluster_records(spec)
    servers.start_dns("dns/a", pair.srv, SERVER_IP, zone)
    return "dns/a"


@pytest.mark.parametrize("query", [dns_udp, dns_tcp], ids=["udp", "tcp"])
def test_dns_answers_cluster_records(pair, dns_server, spec, query):
    db = spec.pod("shop/db-0")
    assert answers(query(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]
    assert answers(query(pair.cli, "db.shop.svc.cluster.local")) == [db.ip]  # headless
    assert answers(query(pair.cli, "db-0.db.shop.svc.cluster.local")) == [db.ip]
    srv = query(pair.cli, "_postgres._tcp.db.shop.svc.cluster.local", "SRV")
    assert answers(srv) == ["0 100 5432 db-0.db.shop.svc.cluster.local."]
    assert [rd.to_text() for rrset in srv.additional for rd in rrset] == [db.ip]
    ptr = query(pair.cli, dns.reversename.from_address(db.ip).to_text(), "PTR")
    assert answers(ptr) == ["db-0.db.shop.svc.cluster.local."]
    ptr = query(pair.cli, dns.reversename.from_address(spec.dns_service_ip).to_text(), "PTR")
    assert answers(ptr) == ["kube-dns.kube-system.svc.cluster.local."]
    nx = query(pair.cli, "nope.default.svc.cluster.local")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA
    assert nx.authority[0].name.to_text() == "cluster.local."
    assert answers(query(pair.cli, "external.netconform.test")) == [spec.external_ip]
    assert query(pair.cli, "example.com").rcode() == dns.rcode.NXDOMAIN


def test_dns_udp_blocked_tcp_answers(pair, servers, dns_server):
    servers.set_dns_faults(dns_server, udp=False)
    with pytest.raises(dns.exception.Timeout):
        dns_udp(pair.cli, "kubernetes.default.svc.cluster.local", timeout=0.5)
    assert answers(dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]
    stats = servers.dns(dns_server).stats
    # it arrived and was dropped (the server thread may count it after our client gave up)
    eventually("the dropped query counted", lambda: stats["udp_queries"] >= 1)
    assert stats["udp_queries"] == 1 and stats["dropped"] == 1
    servers.set_dns_faults(dns_server, udp=True)
    assert answers(dns_udp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]


def test_dns_tcp_blocked_udp_answers(pair, servers, dns_server):
    servers.set_dns_faults(dns_server, tcp=False)
    with pytest.raises(dns.exception.Timeout):
        dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local", timeout=0.5)
    assert answers(dns_udp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]


def test_dns_servfail_and_delay(pair, servers, dns_server):
    servers.set_dns_faults(dns_server, servfail=True)
    assert dns_udp(pair.cli, "kubernetes.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    assert dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    servers.set_dns_faults(dns_server, servfail=False, delay=1.5)
    with pytest.raises(dns.exception.Timeout):  # slower than the client is willing to wait
        dns_udp(pair.cli, "kubernetes.default.svc.cluster.local", timeout=0.3)
    assert answers(dns_udp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]
    assert answers(dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]


def test_dns_stop_start_restart(pair, servers, dns_server):
    servers.stop(dns_server)
    assert not servers.running(dns_server)
    with pytest.raises(dns.exception.Timeout):
        dns_udp(pair.cli, "kubernetes.default.svc.cluster.local", timeout=0.5)
    with pytest.raises(ConnectionRefusedError):
        dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local")
    servers.stop(dns_server)  # idempotent
    servers.start(dns_server)
    assert answers(dns_udp(pair.cli, "kubernetes.default.svc.cluster.local")) == ["172.20.0.1"]
    # a restart keeps the fault switches
    servers.set_dns_faults(dns_server, servfail=True)
    servers.restart(dns_server)
    assert dns_tcp(pair.cli, "kubernetes.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL


def test_dns_serves_updated_records(pair, servers, dns_server, spec):
    spec = dataclasses.replace(spec, services=list(spec.services))
    spec.services.append(ServiceSpec("tools", "api", "172.20.0.200", [PortSpec(80, "TCP", "http")],
                                     {}))
    assert dns_udp(pair.cli, "api.tools.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    servers.update_dns(cluster_records(spec))
    assert answers(dns_udp(pair.cli, "api.tools.svc.cluster.local")) == ["172.20.0.200"]


def test_dns_big_headless_answer_truncates_over_udp(pair, servers):
    spec = build_spec("big", "vpc-cni", nodes=2, pods_per_node=30)
    web = [p.key for p in spec.pods if p.labels.get("app") == "web"]
    spec.services.append(ServiceSpec("default", "web-hl", "None", [PortSpec(8080, "TCP", "http")],
                                     {"app": "web"}, endpoints=web))
    servers.start_dns("dns/big", pair.srv, SERVER_IP, cluster_records(spec))
    udp = dns_udp(pair.cli, "web-hl.default.svc.cluster.local")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert len(answers(dns_tcp(pair.cli, "web-hl.default.svc.cluster.local"))) == len(web)


def test_coredns_health_ready_metrics(pair, servers, dns_server):
    assert http_get(pair.cli, f"http://{SERVER_IP}:8080/health").body == b"OK"
    assert http_get(pair.cli, f"http://{SERVER_IP}:8181/ready").status == 200
    dns_udp(pair.cli, "kubernetes.default.svc.cluster.local")
    metrics = http_get(pair.cli, f"http://{SERVER_IP}:9153/metrics").body.decode()
    assert re.search(r'coredns_dns_requests_total\{[^}]*proto="udp"[^}]*\} 1\b', metrics)
    servers.set_dns_faults(dns_server, servfail=True)
    assert http_get(pair.cli, f"http://{SERVER_IP}:8181/ready").status == 503


# -- apiserver endpoints ------------------------------------------------------------------------

@pytest.fixture
def apiserver(pair, servers, spec, ca, tmp_path):
    for i, addr in enumerate(EXTRA_IPS):
        servers.start_https_endpoint(f"apiserver/{i}", pair.srv, addr, 443,
                                     apiserver_ssl_context(ca, tmp_path, addr, spec))
    return ssl.create_default_context(cafile=str(ca.cert_path))


def test_apiserver_endpoint_tls_verified_against_lab_ca(pair, apiserver, tmp_path):
    for addr in EXTRA_IPS:
        r = http_get(pair.cli, f"https://{addr}/livez", apiserver)
        assert (r.status, r.body) == (200, b"ok")
    assert http_get(pair.cli, f"https://{EXTRA_IPS[0]}/readyz", apiserver).body == b"ok"
    verbose = http_get(pair.cli, f"https://{EXTRA_IPS[0]}/livez?verbose", apiserver).body.decode()
    assert "[+]ping ok" in verbose and verbose.endswith("livez check passed\n")
    version = http_get(pair.cli, f"https://{EXTRA_IPS[0]}/version", apiserver).json()
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    # a client trusting another CA must fail the handshake: TLS is really verified
    other = CertificateAuthority.create(tmp_path / "other-ca")
    with pytest.raises(urllib.error.URLError) as exc:
        http_get(pair.cli, f"https://{EXTRA_IPS[0]}/livez",
                 ssl.create_default_context(cafile=str(other.cert_path)))
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)


def test_apiserver_endpoint_requires_auth_elsewhere(pair, apiserver):
    r = http_get(pair.cli, f"https://{EXTRA_IPS[0]}/api", apiserver)
    assert r.status == 401 and r.headers["Content-Type"].startswith("application/json")
    status = r.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Unauthorized", 401)
    assert http_get(pair.cli, f"https://{EXTRA_IPS[0]}/api/v1/pods", apiserver).status == 401


def test_apiserver_endpoint_not_ready_and_stopped(pair, servers, apiserver):
    servers.set_apiserver_health("apiserver/0", ready=False)
    r = http_get(pair.cli, f"https://{EXTRA_IPS[0]}/readyz", apiserver)
    assert r.status == 500 and b"readyz check failed" in r.body
    assert http_get(pair.cli, f"https://{EXTRA_IPS[0]}/livez", apiserver).status == 200
    servers.stop("apiserver/0")
    with pytest.raises(ConnectionRefusedError):
        tcp_connect(pair.cli, EXTRA_IPS[0], 443)
    assert http_get(pair.cli, f"https://{EXTRA_IPS[1]}/livez", apiserver).status == 200


# -- kube-proxy healthz ---------------------------------------------------------------------------

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC( m=\+\d+\.\d{9})?$")


def go_seconds(text: str) -> float:
    stamp = text.split(" m=")[0].replace(" +0000 UTC", "")
    whole, _, frac = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + float("0." + (frac or "0"))


def test_kube_proxy_healthz(pair, servers):
    servers.start_healthz("healthz/n0", pair.srv)
    r = http_get(pair.cli, f"http://{SERVER_IP}:10256/healthz")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["nodeEligible"] is True
    assert GO_TIME.match(body["lastUpdated"]) and GO_TIME.match(body["currentTime"])
    assert http_get(pair.cli, f"http://{SERVER_IP}:10256/livez").status == 200
    assert http_get(pair.cli, f"http://{SERVER_IP}:10256/other").status == 404

    servers.set_healthz("healthz/n0", stale=True)
    r = http_get(pair.cli, f"http://{SERVER_IP}:10256/healthz")
    assert r.status == 503
    body = r.json()
    assert go_seconds(body["currentTime"]) - go_seconds(body["lastUpdated"]) > 60
    assert http_get(pair.cli, f"http://{SERVER_IP}:10256/livez").status == 503

    servers.set_healthz("healthz/n0", stale=False, node_eligible=False)
    r = http_get(pair.cli, f"http://{SERVER_IP}:10256/healthz")
    assert r.status == 503 and r.json()["nodeEligible"] is False
    assert http_get(pair.cli, f"http://{SERVER_IP}:10256/livez").status == 200  # ignores it


# -- app servers ----------------------------------------------------------------------------------

def test_app_server_http_tcp_udp_and_stop(pair, servers):
    ports = [PortSpec(8080, "TCP", "http"), PortSpec(5432, "TCP", "postgres"),
             PortSpec(5353, "UDP", "echo")]
    servers.start_app("app/web-1", pair.srv, SERVER_IP, ports, "web-7d9c-x2")
    r = http_get(pair.cli, f"http://{SERVER_IP}:8080/")
    assert (r.status, r.body) == (200, b"web-7d9c-x2")
    assert len(http_get(pair.cli, f"http://{SERVER_IP}:8080/bytes/100000").body) == 100000
    tcp_connect(pair.cli, SERVER_IP, 5432)
    udp = nsutil.socket_in_netns(pair.cli, socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        udp.settimeout(WAIT)
        udp.sendto(b"ping", (SERVER_IP, 5353))
        assert udp.recvfrom(100)[0] == b"ping"

    servers.stop("app/web-1")
    for port in (8080, 5432):
        with pytest.raises(ConnectionRefusedError):
            tcp_connect(pair.cli, SERVER_IP, port)
    servers.start("app/web-1")
    assert http_get(pair.cli, f"http://{SERVER_IP}:8080/").body == b"web-7d9c-x2"


def test_app_ports_given_as_tuples(pair, servers):
    # (port, protocol) as the daemon passes them: TCP serves HTTP, UDP echoes
    servers.start_app("app/t", pair.srv, SERVER_IP, [(8081, "TCP"), (5354, "UDP")], "t-1")
    assert http_get(pair.cli, f"http://{SERVER_IP}:8081/").body == b"t-1"
    udp = nsutil.socket_in_netns(pair.cli, socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        udp.settimeout(WAIT)
        udp.sendto(b"x", (SERVER_IP, 5354))
        assert udp.recvfrom(10)[0] == b"x"
    assert servers.status()["app/t"]["listen"] == [f"tcp/{SERVER_IP}:8081", f"udp/{SERVER_IP}:5354"]


def test_app_https_port(pair, servers, ca, tmp_path):
    port = PortSpec(8443, "TCP", "https")
    ctx = ca.server_context(tmp_path, "payments", ips=[EXTRA_IPS[0]])
    servers.start_app("app/pay-tls", pair.srv, EXTRA_IPS[0], [port], "payments-1", ssl_context=ctx)
    servers.start_app("app/pay-tcp", pair.srv, EXTRA_IPS[1], [port], "payments-2")
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    assert http_get(pair.cli, f"https://{EXTRA_IPS[0]}:8443/", client).body == b"payments-1"
    tcp_connect(pair.cli, EXTRA_IPS[1], 8443)  # no TLS context: plain TCP accept


# -- errors and cleanup ------------------------------------------------------------------------------

def test_start_errors_leave_nothing_registered(pair, servers, spec):
    with pytest.raises(OSError, match=rf"10\.99\.0\.1:53 in netns {pair.srv}"):
        servers.start_dns("dns/x", pair.srv, "10.99.0.1", cluster_records(spec))
    assert "dns/x" not in servers.keys()
    with pytest.raises(FileNotFoundError, match="nct-nonexistent"):
        servers.start_healthz("healthz/x", "nct-nonexistent-000000")
    servers.start_healthz("healthz/x", pair.srv)
    with pytest.raises(KeyError):
        servers.start_healthz("healthz/x", pair.srv)
    with pytest.raises(OSError, match="Address already in use"):
        servers.start_healthz("healthz/y", pair.srv)  # same port in the same netns
    with pytest.raises(KeyError):
        servers.stop("nope")
    assert servers.keys() == ["healthz/x"]
    assert [line for line in listeners(pair.srv) if ":53 " in line] == []


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_leaves_no_thread_socket_or_process(pair, spec, ca, tmp_path):
    threads_before = set(threading.enumerate())
    fds_before = _fds()
    s = NetServers()
    s.start_dns("dns", pair.srv, SERVER_IP, cluster_records(spec))
    s.start_https_endpoint("api", pair.srv, EXTRA_IPS[0], 443,
                           apiserver_ssl_context(ca, tmp_path, EXTRA_IPS[0], spec))
    s.start_healthz("hz", pair.srv)
    s.start_app("app", pair.srv, EXTRA_IPS[1], [8080, PortSpec(5432, "TCP", "postgres")], "w")
    s.set_dns_faults("dns", delay=5)  # leaves a delayed answer pending at close
    assert len(listeners(pair.srv)) == 2 + 3 + 1 + 1 + 2
    # open client connections that close() must cut
    held = nsutil.socket_in_netns(pair.cli, socket.AF_INET, socket.SOCK_STREAM)
    held.settimeout(WAIT)
    held.connect((EXTRA_IPS[1], 5432))
    quiet = nsutil.socket_in_netns(pair.cli, socket.AF_INET, socket.SOCK_DGRAM)
    quiet.sendto(dns.message.make_query("web.default.svc.cluster.local", "A").to_wire(),
                 (SERVER_IP, 53))
    assert http_get(pair.cli, f"http://{SERVER_IP}:10256/healthz").status == 200
    # the query has reached the server and its delayed answer is pending when close() runs
    eventually("the DNS server got the query", lambda: s.dns("dns").stats["udp_queries"] >= 1)

    s.close()
    s.close()  # idempotent
    assert held.recv(10) == b""  # the server side closed the connection
    held.close()
    quiet.close()
    assert set(threading.enumerate()) == threads_before
    assert _fds() == fds_before
    assert listeners(pair.srv) == []
    assert subprocess.run(["ip", "netns", "pids", pair.srv], capture_output=True, text=True,
                          check=True).stdout.strip() == ""
    with pytest.raises(RuntimeError):
        s.start_healthz("again", pair.srv)


# -- a whole lab's worth -----------------------------------------------------------------------------

def test_serve_lab_starts_every_server_from_the_spec(make_netns, ca, tmp_path):
    spec = build_spec("nst2", "vpc-cni", nodes=1, pods_per_node=3)
    # map each lab netns onto a throwaway one, and give each its addresses on lo
    node = spec.nodes[0]
    node.netns = make_netns("node")
    ip(node.netns, "addr", "add", f"{node.ip}/32", "dev", "lo")
    for pod in spec.pods:
        if pod.host_network:
            pod.netns = node.netns
        else:
            pod.netns = make_netns("pod")
            ip(pod.netns, "addr", "add", f"{pod.ip}/32", "dev", "lo")
    underlay = make_netns("vpc")
    for addr in spec.apiserver_ips:
        ip(underlay, "addr", "add", f"{addr}/32", "dev", "lo")

    with NetServers() as s:
        keys = serve_lab(s, spec, ca, tmp_path, apiserver_netns=underlay)
        coredns = [p for p in spec.pods if p.role == "coredns"]
        apps = [p for p in spec.pods if p.role == "app"]
        assert sorted(keys) == sorted(
            [server_key("dns", p.key) for p in coredns]
            + [server_key("apiserver", a) for a in spec.apiserver_ips]
            + [server_key("healthz", node.name)] + [server_key("app", p.key) for p in apps])
        for p in coredns:
            r = dns_udp(p.netns, "db-0.db.shop.svc.cluster.local", server=p.ip)
            assert answers(r) == [spec.pod("shop/db-0").ip]
        trust = ssl.create_default_context(cafile=str(ca.cert_path))
        for addr in spec.apiserver_ips:
            assert http_get(underlay, f"https://{addr}/livez", trust).body == b"ok"
        assert http_get(node.netns, f"http://{node.ip}:10256/healthz").status == 200
        for p in apps:
            port = p.ports[0]
            if port.name == "https":  # SGFP payments pods: TLS with the pod IP in the cert
                assert http_get(p.netns, f"https://{p.ip}:{port.port}/", trust).body == p.name.encode()
            elif port.name == "http":
                assert http_get(p.netns, f"http://{p.ip}:{port.port}/").body == p.name.encode()
            else:
                tcp_connect(p.netns, p.ip, port.port)
        assert f"{dashed(coredns[0].ip)}" in " ".join(cluster_records(spec).names())


def test_fifty_servers_start_and_answer(pair, servers, record_property):
    """Not a benchmark (nothing asserted on time): 50 servers on one loop, all answering."""
    addrs = [f"10.77.1.{i}" for i in range(1, 51)]
    for a in addrs:
        ip(pair.srv, "addr", "add", f"{a}/32", "dev", "lo")
    ip(pair.cli, "route", "add", "10.77.1.0/24", "via", SERVER_IP)
    before = threading.active_count()
    t0 = time.perf_counter()
    for i, a in enumerate(addrs):
        servers.start_app(f"app/{i}", pair.srv, a, [8080], f"pod-{i}")
    record_property("start_50_app_servers_s", round(time.perf_counter() - t0, 4))
    assert threading.active_count() == before  # no thread per server
    for i, a in enumerate(addrs):
        assert http_get(pair.cli, f"http://{a}:8080/").body == f"pod-{i}".encode()
