"""kube-proxy rules loaded into a real network namespace carry real traffic (needs root)."""
from __future__ import annotations

import collections
import os
import selectors
import socket
import subprocess
import threading

import pytest

from netconform.lab import kubeproxy as kp
from netconform.lab.nsutil import bound_socket, socket_in_netns
from netconform.lab.topology import LabSpec, PortSpec, ServiceSpec, build_spec

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)")]

CLIENT, EP1, EP2 = "10.244.0.2", "10.244.0.5", "10.244.0.6"
POD = "10.244.0.20"
ECHO_VIP, EMPTY_VIP, OTHER_VIP = "10.96.7.7", "10.96.7.8", "10.96.7.9"
# How long a client waits where an answer is expected (the echo servers are one thread of this
# possibly loaded machine); where no answer is the expected outcome the tests pass a short one.
WAIT = 30.0


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=10).stdout


def lab_spec() -> LabSpec:
    """A flannel spec whose services point at the endpoint addresses of the test namespace."""
    spec = build_spec("kpt", "flannel", nodes=1, pods_per_node=1)
    spec.services = [
        ServiceSpec("test", "echo", ECHO_VIP, [PortSpec(80, "TCP", "http", 8080), PortSpec(53, "UDP", "dns", 5353)],
                    {}, endpoints=[EP1, EP2]),
        ServiceSpec("test", "empty", EMPTY_VIP, [PortSpec(80, "TCP", "http", 8080)], {}, endpoints=[]),
        ServiceSpec("test", "other", OTHER_VIP, [PortSpec(81, "TCP", "http", 8080)], {}, endpoints=[EP2]),
        ServiceSpec("test", "headless", "None", [PortSpec(80, "TCP", "http", 8080)], {}, endpoints=[EP1]),
    ]
    return spec


class EchoServers:
    """A TCP (8080) and a UDP (5353) server on each endpoint IP; each answers with its own IP."""

    def __init__(self, netns: str, ips: list[str]):
        self.socks = [bound_socket(netns, ip, 8080) for ip in ips]
        self.socks += [bound_socket(netns, ip, 5353, socket.SOCK_DGRAM) for ip in ips]
        self.hits: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                ip = s.getsockname()[0]
                try:
                    # Counted before answering: once a client has its answer, its hit is counted
                    # (the tests compare counts right after a client returns).
                    if s.type == socket.SOCK_STREAM:
                        conn, _peer = s.accept()
                        with conn:
                            self.hits["tcp", ip] += 1
                            conn.setblocking(True)
                            conn.sendall(ip.encode())
                    else:
                        _data, peer = s.recvfrom(512)
                        self.hits["udp", ip] += 1
                        s.sendto(ip.encode(), peer)
                except (BlockingIOError, ConnectionError):
                    continue
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        for s in self.socks:
            s.close()


@pytest.fixture
def node(make_netns):
    """A 'node' namespace: kpt0 holds a client address and two endpoint addresses; a default
    route (as on a real node) so packets to a ClusterIP reach the nat OUTPUT hook. kpt0 is one
    end of a veth pair (no dummy module on every kernel) whose other end answers nothing."""
    ns = make_netns("kp")
    sh("ip", "-n", ns, "link", "add", "kpt0", "type", "veth", "peer", "name", "kpt1")
    for dev in ("kpt0", "kpt1"):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    for ip in (CLIENT, EP1, EP2):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "kpt0")
    sh("ip", "-n", ns, "route", "add", "default", "dev", "kpt0", "src", CLIENT)
    return ns


@pytest.fixture
def servers(node):
    srv = EchoServers(node, [EP1, EP2])
    yield srv
    srv.close()


def tcp_ask(netns: str, ip: str, port: int, timeout: float = WAIT) -> str:
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((ip, port))
        return s.recv(64).decode()


def udp_ask(netns: str, ip: str, port: int, timeout: float = WAIT) -> str:
    # a connected UDP socket only accepts the answer from ip:port, i.e. after the reverse NAT
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((ip, port))
        s.send(b"?")
        return s.recv(64).decode()


def answers_from(ask, netns: str, ip: str, port: int, want: set[str], tries: int = 40) -> set[str]:
    """Ask until every endpoint in `want` answered (each try picks one with p=1/2) or tries run out."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(ask(netns, ip, port))
        if seen >= want:
            break
    return seen


def builtin_jumps(dump: str) -> collections.Counter[tuple[str, str, str]]:
    """(table, built-in chain, target) -> how many rules, from iptables-save output."""
    out: collections.Counter[tuple[str, str, str]] = collections.Counter()
    table = ""
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and line.split()[1] in kp.BUILTIN_CHAINS:
            tokens = line.split()
            out[table, tokens[1], tokens[tokens.index("-j") + 1]] += 1
    return out


# -- traffic ---------------------------------------------------------------------------------

def test_cluster_ip_reaches_both_endpoints_over_tcp_and_udp(node, servers):
    kp.apply_rules(node, kp.render_rules(lab_spec(), "kpt-worker-0"))
    assert answers_from(tcp_ask, node, ECHO_VIP, 80, {EP1, EP2}) == {EP1, EP2}
    assert answers_from(udp_ask, node, ECHO_VIP, 53, {EP1, EP2}) == {EP1, EP2}
    assert tcp_ask(node, OTHER_VIP, 81) == EP2
    assert servers.hits["tcp", EP1] and servers.hits["udp", EP2]


def test_service_without_endpoints_is_rejected(node, servers):
    kp.apply_rules(node, kp.render_rules(lab_spec(), "kpt-worker-0"))
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(node, EMPTY_VIP, 80)


def test_headless_service_vip_is_not_proxied(node, servers):
    kp.apply_rules(node, kp.render_rules(lab_spec(), "kpt-worker-0"))
    assert "test/headless" not in kp.dump_rules(node)


def test_reapply_with_skip_services_removes_the_cluster_ip(node, servers):
    spec = lab_spec()
    kp.apply_rules(node, kp.render_rules(spec, "kpt-worker-0"))
    assert tcp_ask(node, ECHO_VIP, 80) in (EP1, EP2)
    echo_chain = kp.service_chain_name("test/echo:http", "tcp")
    assert echo_chain in kp.dump_rules(node)

    kp.apply_rules(node, kp.render_rules(spec, "kpt-worker-0", skip_services=frozenset({"test/echo"})))
    hits = sum(servers.hits.values())
    with pytest.raises(OSError):  # no DNAT any more: nothing on kpt0's link answers the ClusterIP
        tcp_ask(node, ECHO_VIP, 80, timeout=0.5)
    with pytest.raises(OSError):
        udp_ask(node, ECHO_VIP, 53, timeout=0.5)
    assert sum(servers.hits.values()) == hits
    dump = kp.dump_rules(node)
    assert echo_chain not in dump  # stale chains deleted, not just unreferenced
    assert not any(kp.endpoint_chain_name("test/echo:http", "tcp", f"{ip}:8080") in dump for ip in (EP1, EP2))
    assert tcp_ask(node, OTHER_VIP, 81) == EP2  # the other service is untouched

    kp.apply_rules(node, kp.render_rules(spec, "kpt-worker-0"))  # heal
    assert tcp_ask(node, ECHO_VIP, 80) in (EP1, EP2)


def test_prerouting_path_from_a_pod_namespace(make_netns, node, servers):
    """Traffic from a pod (veth, vpc-cni-style gateway 169.254.1.1) goes through nat PREROUTING."""
    pod = make_netns("kppod")
    sh("ip", "link", "add", "kpt-host0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
    host_mac = sh("ip", "-n", node, "-br", "link", "show", "kpt-host0").split()[2]
    sh("ip", "-n", node, "link", "set", "kpt-host0", "up")
    sh("ip", "-n", node, "route", "add", f"{POD}/32", "dev", "kpt-host0")
    sh("ip", "-n", pod, "link", "set", "eth0", "up")
    sh("ip", "-n", pod, "addr", "add", f"{POD}/32", "dev", "eth0")
    sh("ip", "-n", pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    sh("ip", "-n", pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    sh("ip", "-n", pod, "neigh", "add", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")

    with pytest.raises(OSError):  # before kube-proxy: nothing answers the ClusterIP
        tcp_ask(pod, ECHO_VIP, 80, timeout=0.5)
    kp.apply_rules(node, kp.render_rules(lab_spec(), "kpt-worker-0"))
    assert answers_from(tcp_ask, pod, ECHO_VIP, 80, {EP1, EP2}) == {EP1, EP2}
    assert udp_ask(pod, ECHO_VIP, 53) in (EP1, EP2)


# -- idempotence and state -------------------------------------------------------------------

def test_repeated_apply_leaves_each_builtin_jump_once(node):
    spec = lab_spec()
    text = kp.render_rules(spec, "kpt-worker-0")
    for _ in range(3):
        kp.apply_rules(node, text)
    # a stray duplicate (as `iptables -A` by hand would leave) and someone else's rule
    sh("ip", "netns", "exec", node, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
    sh("ip", "netns", "exec", node, "iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment",
       "--comment", "flanneld masq", "-s", "10.244.0.0/16", "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE")
    kp.apply_rules(node, text)
    jumps = builtin_jumps(kp.dump_rules(node))
    assert jumps == {
        ("filter", "INPUT", "KUBE-PROXY-FIREWALL"): 1, ("filter", "INPUT", "KUBE-NODEPORTS"): 1,
        ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES"): 1, ("filter", "INPUT", "KUBE-FIREWALL"): 1,
        ("filter", "FORWARD", "KUBE-PROXY-FIREWALL"): 1, ("filter", "FORWARD", "KUBE-FORWARD"): 1,
        ("filter", "FORWARD", "KUBE-SERVICES"): 1, ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES"): 1,
        ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL"): 1, ("filter", "OUTPUT", "KUBE-SERVICES"): 1,
        ("filter", "OUTPUT", "KUBE-FIREWALL"): 1,
        ("nat", "PREROUTING", "KUBE-SERVICES"): 1, ("nat", "OUTPUT", "KUBE-SERVICES"): 1,
        ("nat", "POSTROUTING", "KUBE-POSTROUTING"): 1, ("nat", "POSTROUTING", "MASQUERADE"): 1,
    }


def test_saved_state_has_kube_proxy_chains(node):
    spec = lab_spec()
    kp.apply_rules(node, kp.render_rules(spec, "kpt-worker-0"))
    dump = kp.dump_rules(node)
    per_table: dict[str, list[str]] = {}
    table = ""
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            per_table.setdefault(table, []).append(line[1:].split()[0])
    for t in ("mangle", "filter", "nat"):
        assert "KUBE-PROXY-CANARY" in per_table[t]
    assert {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL",
            "KUBE-FIREWALL"} <= set(per_table["filter"])
    svc = kp.service_chain_name("test/echo:http", "tcp")
    sep1 = kp.endpoint_chain_name("test/echo:http", "tcp", f"{EP1}:8080")
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", svc, sep1,
            kp.service_chain_name("test/echo:dns", "udp")} <= set(per_table["nat"])
    # iptables-save's own spelling of what kube-proxy wrote
    assert f"-A {svc} -m comment --comment \"test/echo:http -> {EP1}:8080\" -m statistic --mode random " \
           f"--probability 0.50000000000 -j {sep1}" in dump
    assert f"-A {sep1} -s {EP1}/32 -m comment --comment \"test/echo:http\" -j KUBE-MARK-MASQ" in dump
    assert f"-A {svc} ! -s 10.244.0.0/16 -d {ECHO_VIP}/32 -p tcp" in dump
    assert "-j DNAT --to-destination 10.244.0.5:5353" in dump
    assert '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" ' \
           "-j MASQUERADE --random-fully" in dump
    assert '"kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype ' \
           "--dst-type LOCAL -j KUBE-NODEPORTS" in dump
    assert '"test/empty:http has no endpoints" -m tcp --dport 80 -j REJECT' in dump


def test_vpc_cni_node_rules_load_and_stay_single(node):
    spec = build_spec("kpv", "vpc-cni", nodes=2, pods_per_node=3)
    name = spec.nodes[1].name
    for _ in range(2):
        kp.apply_rules(node, kp.render_node_rules(spec, name))
    kp.apply_rules(node, kp.render_rules(spec, name))  # a kube-proxy-only resync leaves aws-node's alone
    dump = kp.dump_rules(node)
    jumps = builtin_jumps(dump)
    assert jumps["nat", "POSTROUTING", "AWS-SNAT-CHAIN-0"] == 1
    assert jumps["nat", "PREROUTING", "AWS-CONNMARK-CHAIN-0"] == 1
    assert jumps["nat", "PREROUTING", "CONNMARK"] == 1
    assert jumps["mangle", "PREROUTING", "CONNMARK"] == 3
    assert jumps["nat", "POSTROUTING", "KUBE-POSTROUTING"] == 1
    assert f"-j SNAT --to-source {spec.nodes[1].ip} --random-fully" in dump
    assert kp.service_chain_name("kube-system/kube-dns:dns", "udp") in dump


def test_apply_failure_reports_iptables_restore_stderr(node):
    with pytest.raises(kp.KubeProxyApplyError, match=r"(?s)iptables-restore in netns nct-kp-.*NO-SUCH-TARGET"):
        kp.apply_rules(node, "*nat\n:KUBE-TEST - [0:0]\n-A KUBE-TEST -j NO-SUCH-TARGET\nCOMMIT\n")
    with pytest.raises(kp.KubeProxyApplyError, match="nct-kp-missing"):
        kp.dump_rules("nct-kp-missing")
