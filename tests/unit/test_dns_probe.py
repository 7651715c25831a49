"""dns.query and dns.resolve_like_pod against the lab's dnslib cluster DNS (custom cluster domain).

`query` runs in-process against servers on 127.0.0.1:<port>; `resolve_like_pod` runs through the
local runner in a throwaway namespace whose lo holds the kube-dns ClusterIP and a CoreDNS
endpoint IP, each with a DNS server on :53, because a resolv.conf cannot name a port.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess

import pytest

from netconform.lab.dnsserver import cluster_records
from netconform.lab.netservers import NetServers
from netconform.lab.topology import PortSpec, ServiceSpec, build_spec
from netconform.probes.dns import query
from netconform.runners.local import LocalRunner

DOMAIN = "k8s.corp.example"
KUBE_DNS, COREDNS_EP = "172.20.0.10", "10.0.1.16"
RESOLV = (f"search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\n"
          f"nameserver {KUBE_DNS}\n"
          "options ndots:5 attempts:1\n")


@pytest.fixture(scope="module")
def spec():
    spec = build_spec("unit", "vpc-cni", nodes=2, pods_per_node=30, cluster_domain=DOMAIN)
    web = [p.key for p in spec.pods if p.labels.get("app") == "web"]
    # a headless service big enough that its A answer does not fit a 512-byte UDP reply
    big = ServiceSpec("default", "web-hl", "None", [PortSpec(8080, "TCP", "http")], {"app": "web"}, endpoints=web)
    return dataclasses.replace(spec, services=[*spec.services, big])


@pytest.fixture(scope="module")
def zone(spec):
    return cluster_records(spec)


@pytest.fixture(scope="module")
def servers():
    with NetServers(thread_name="test-dns-probe") as s:
        yield s


@pytest.fixture(scope="module")
def loopback_dns(servers, zone):
    """A DNS server on 127.0.0.1:<free port>, UDP and TCP."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            servers.start_dns("lo", None, "127.0.0.1", zone, port=port, coredns_ports=False)
            break
        except OSError:  # the UDP side of that port is taken: try another
            continue
    yield port
    servers.set_dns_faults("lo", udp=True, tcp=True, servfail=False)


def ips(spec, app):
    return sorted(p.ip for p in spec.pods if p.labels.get("app") == app)


def test_a_record_of_the_kubernetes_service(loopback_dns):
    r = query("127.0.0.1", f"kubernetes.default.svc.{DOMAIN}", port=loopback_dns)
    assert (r.ok, r.rcode, r.answers, r.ttl, r.transport) == (True, "NOERROR", ["172.20.0.1"], 5, "udp")
    assert r.name == f"kubernetes.default.svc.{DOMAIN}."
    assert {"QR", "AA", "RD", "RA"} <= set(r.flags) and not r.authority_soa
    assert r.records == [f"kubernetes.default.svc.{DOMAIN}. 5 IN A 172.20.0.1"]
    assert r.local_ip == "127.0.0.1" and r.latency_ms is not None
    json.dumps(dataclasses.asdict(r))


def test_nxdomain_and_nodata_carry_the_soa(loopback_dns):
    nx = query("127.0.0.1", f"no-such-service.default.svc.{DOMAIN}", port=loopback_dns)
    assert (nx.ok, nx.rcode, nx.answers, nx.authority_soa, nx.error_kind) == (True, "NXDOMAIN", [], True, None)
    assert nx.soa.startswith(f"{DOMAIN}. ")
    nodata = query("127.0.0.1", f"kubernetes.default.svc.{DOMAIN}", "AAAA", port=loopback_dns)
    assert (nodata.ok, nodata.rcode, nodata.answers, nodata.authority_soa) == (True, "NOERROR", [], True)


def test_headless_service_answers_its_endpoints_over_tcp(spec, loopback_dns):
    r = query("127.0.0.1", f"db.shop.svc.{DOMAIN}", tcp=True, port=loopback_dns)
    assert (r.ok, r.transport, sorted(r.answers)) == (True, "tcp", ips(spec, "db"))


def test_big_answer_is_truncated_over_udp_and_complete_over_tcp_or_edns(spec, loopback_dns):
    name = f"web-hl.default.svc.{DOMAIN}"
    udp = query("127.0.0.1", name, port=loopback_dns)
    assert (udp.ok, udp.error_kind, udp.answers) == (False, "truncated", [])
    assert "TC" in udp.flags
    tcp = query("127.0.0.1", name, tcp=True, port=loopback_dns)
    assert tcp.ok and sorted(tcp.answers) == ips(spec, "web") and len(tcp.answers) > 30
    assert query("127.0.0.1", name, edns0=True, port=loopback_dns).ok


def test_filtered_udp_times_out_while_tcp_answers(servers, loopback_dns):
    name = f"kubernetes.default.svc.{DOMAIN}"
    servers.set_dns_faults("lo", udp=False)
    try:
        udp = query("127.0.0.1", name, timeout=0.3, port=loopback_dns)
        tcp = query("127.0.0.1", name, tcp=True, timeout=2.0, port=loopback_dns)
    finally:
        servers.set_dns_faults("lo", udp=True)
    assert (udp.ok, udp.error_kind, udp.rcode, udp.errno_name) == (False, "timeout", None, None)
    assert tcp.ok and tcp.answers == ["172.20.0.1"]
    servers.set_dns_faults("lo", tcp=False)
    try:
        assert query("127.0.0.1", name, tcp=True, timeout=0.3, port=loopback_dns).error_kind == "timeout"
    finally:
        servers.set_dns_faults("lo", tcp=True)


def test_servfail_is_an_error(servers, loopback_dns):
    servers.set_dns_faults("lo", servfail=True)
    try:
        r = query("127.0.0.1", f"kubernetes.default.svc.{DOMAIN}", port=loopback_dns)
    finally:
        servers.set_dns_faults("lo", servfail=False)
    assert (r.ok, r.rcode, r.error_kind) == (False, "SERVFAIL", "servfail")


def test_nothing_listening_is_refused_not_a_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    udp = query("127.0.0.1", "kubernetes.default.svc.cluster.local", timeout=2.0, port=port)
    assert (udp.ok, udp.error_kind, udp.errno_name) == (False, "refused", "ECONNREFUSED")
    tcp = query("127.0.0.1", "kubernetes.default.svc.cluster.local", tcp=True, timeout=2.0, port=port)
    assert (tcp.ok, tcp.error_kind) == (False, "refused")


# -- resolve_like_pod, in a pod-like namespace -------------------------------------------------

@pytest.fixture
def pod(make_netns, servers, zone):
    """(runner, servers keys) for a namespace with kube-dns and one CoreDNS endpoint on lo:53."""
    ns = make_netns("dns")
    for ip in (KUBE_DNS, COREDNS_EP):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "lo"], check=True, timeout=10)
    keys = {ip: f"{ns}/{ip}" for ip in (KUBE_DNS, COREDNS_EP)}
    for ip, key in keys.items():
        servers.start_dns(key, ns, ip, zone, coredns_ports=False)
    runner = LocalRunner(f"/run/netns/{ns}")
    yield runner, keys
    runner.close()
    for key in keys.values():
        servers.remove(key)


def resolve(runner, resolv_conf, name, **kwargs):
    call = runner.call("dns:resolve_like_pod", {"resolv_conf": resolv_conf, "name": name, **kwargs}, timeout=30)
    return call.raise_for_status()


def tried(r):
    return [(t["name"], t["server"], t["transport"], t["rcode"] or t["error_kind"]) for t in r["tries"]]


def test_short_name_resolves_through_the_search_list(pod):
    runner, _ = pod
    r = resolve(runner, RESOLV, "kubernetes.default")
    assert (r["ok"], r["outcome"], r["answers"]) == (True, "answer", ["172.20.0.1"])
    assert r["answered_name"] == f"kubernetes.default.svc.{DOMAIN}."
    assert tried(r) == [(f"kubernetes.default.default.svc.{DOMAIN}.", KUBE_DNS, "udp", "NXDOMAIN"),
                        (f"kubernetes.default.svc.{DOMAIN}.", KUBE_DNS, "udp", "NOERROR")]
    assert r["candidates"][-1] == "kubernetes.default."


def test_ndots_decides_whether_the_name_is_asked_as_is_first(pod):
    runner, _ = pod
    r = resolve(runner, RESOLV.replace("ndots:5", "ndots:1"), "kubernetes.default")
    assert r["ok"] and [t[0] for t in tried(r)] == [
        "kubernetes.default.", f"kubernetes.default.default.svc.{DOMAIN}.", f"kubernetes.default.svc.{DOMAIN}."]
    absolute = resolve(runner, RESOLV, f"kubernetes.default.svc.{DOMAIN}.")
    assert [t[0] for t in tried(absolute)] == [f"kubernetes.default.svc.{DOMAIN}."]


def test_name_that_cannot_exist_is_nxdomain_after_every_candidate(pod):
    runner, _ = pod
    r = resolve(runner, RESOLV, "netconform-no-such-name-7f3a")
    assert (r["ok"], r["outcome"], r["error_kind"]) == (False, "nxdomain", "nxdomain")
    assert [t[3] for t in tried(r)] == ["NXDOMAIN"] * 4 and len(r["candidates"]) == 4


def test_headless_service_from_another_namespace(spec, pod):
    runner, _ = pod
    r = resolve(runner, RESOLV, "db.shop")
    assert r["answered_name"] == f"db.shop.svc.{DOMAIN}." and sorted(r["answers"]) == ips(spec, "db")


def test_next_nameserver_after_a_silent_one(pod, servers):
    runner, keys = pod
    servers.set_dns_faults(keys[KUBE_DNS], udp=False)
    conf = RESOLV.replace(f"nameserver {KUBE_DNS}\n", f"nameserver {KUBE_DNS}\nnameserver {COREDNS_EP}\n")
    r = resolve(runner, conf, "kubernetes.default", timeout=0.3)
    assert r["ok"] and [(t[1], t[3]) for t in tried(r)] == [
        (KUBE_DNS, "timeout"), (COREDNS_EP, "NXDOMAIN"), (KUBE_DNS, "timeout"), (COREDNS_EP, "NOERROR")]


def test_timeout_everywhere_ends_the_search_but_asks_the_name_as_is(pod, servers):
    runner, keys = pod
    servers.set_dns_faults(keys[KUBE_DNS], udp=False)
    r = resolve(runner, RESOLV, "kubernetes.default", timeout=0.3)
    assert (r["ok"], r["outcome"]) == (False, "timeout")
    assert [t[0] for t in tried(r)] == [f"kubernetes.default.default.svc.{DOMAIN}.", "kubernetes.default."]
    # the same pod over TCP works: "UDP/53 is filtered"
    tcp = resolve(runner, RESOLV, "kubernetes.default", tcp=True)
    assert tcp["ok"] and {t[2] for t in tried(tcp)} == {"tcp"}
    assert resolve(runner, RESOLV.replace("attempts:1", "attempts:1 use-vc"), "kubernetes.default")["ok"]


def test_servfail_moves_on_to_the_next_candidate(pod, servers):
    runner, keys = pod
    servers.set_dns_faults(keys[KUBE_DNS], servfail=True)
    r = resolve(runner, RESOLV, "kubernetes.default")
    assert (r["ok"], r["outcome"]) == (False, "servfail")
    assert [t[3] for t in tried(r)] == ["SERVFAIL"] * 4


def test_truncated_udp_answer_is_retried_over_tcp(spec, pod):
    runner, _ = pod
    r = resolve(runner, RESOLV, "web-hl")
    assert r["ok"] and sorted(r["answers"]) == ips(spec, "web")
    assert [(t[2], t[3]) for t in tried(r)] == [("udp", "NOERROR"), ("tcp", "NOERROR")]
    assert r["tries"][0]["error_kind"] == "truncated"


def test_rotate_starts_each_query_at_the_next_server(pod):
    runner, _ = pod
    conf = f"nameserver {KUBE_DNS}\nnameserver {COREDNS_EP}\nsearch default.svc.{DOMAIN} svc.{DOMAIN}\n" \
           "options ndots:5 rotate\n"
    r = resolve(runner, conf, "kubernetes.default")
    assert r["ok"] and [t[1] for t in tried(r)] == [KUBE_DNS, COREDNS_EP]
    assert any("rotate" in n for n in r["notes"])


def test_no_server_listening_gives_up_at_once(pod):
    runner, _ = pod
    # no route to the nameserver, or nothing listening on it: glibc stops after the first name
    no_route = resolve(runner, RESOLV.replace(KUBE_DNS, "192.0.2.53"), "kubernetes.default")
    assert (no_route["outcome"], len(no_route["tries"])) == ("unreachable", 1)
    listening_nowhere = resolve(runner, RESOLV.replace(f"nameserver {KUBE_DNS}", "nameserver 127.0.0.1"),
                                "kubernetes.default")
    assert (listening_nowhere["outcome"], len(listening_nowhere["tries"])) == ("refused", 1)
