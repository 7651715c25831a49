"""Cluster DNS records computed from the lab topology (no root, no sockets)."""
from __future__ import annotations

import dataclasses

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from netconform.lab.dnsserver import (
    DnsFaults,
    DnsServer,
    cluster_records,
    dashed,
    reverse_name,
)
from netconform.lab.topology import PodSpec, PortSpec, ServiceSpec, build_spec


@pytest.fixture(scope="module")
def spec():
    return build_spec("unit", "vpc-cni", nodes=2, pods_per_node=3)


@pytest.fixture(scope="module")
def zone(spec):
    return cluster_records(spec)


def rdata(zone, name, qtype):
    return sorted(str(rr.rdata) for rr in zone.lookup(name, qtype).answer)


def test_service_a_records_are_cluster_ips(spec, zone):
    for svc in spec.services:
        if svc.headless:
            continue
        assert rdata(zone, f"{svc.name}.{svc.namespace}.svc.cluster.local", "A") == [svc.cluster_ip]
    assert rdata(zone, "kubernetes.default.svc.cluster.local", "A") == ["172.20.0.1"]
    assert rdata(zone, "kube-dns.kube-system.svc.cluster.local", "A") == [spec.dns_service_ip]


def test_headless_service_answers_endpoint_pods_and_statefulset_hostname(spec, zone):
    db = spec.pod("shop/db-0")
    assert spec.service("shop/db").headless
    assert rdata(zone, "db.shop.svc.cluster.local", "A") == [db.ip]
    assert rdata(zone, "db-0.db.shop.svc.cluster.local", "A") == [db.ip]
    # non-StatefulSet endpoints are named by their dashed IP
    web = spec.endpoint_pods(spec.service("default/web"))[0]
    assert rdata(zone, f"{dashed(web.ip)}.web.default.svc.cluster.local", "A") == [web.ip]


def test_headless_service_with_many_endpoints_gets_one_a_each(spec):
    spec = dataclasses.replace(spec, services=list(spec.services))
    web_pods = [p.key for p in spec.pods if p.labels.get("app") == "web"]
    assert len(web_pods) >= 2
    spec.services.append(ServiceSpec("default", "web-hl", "None", [PortSpec(8080, "TCP", "http")],
                                     {"app": "web"}, endpoints=web_pods))
    zone = cluster_records(spec)
    ips = sorted(spec.pod(k).ip for k in web_pods)
    assert rdata(zone, "web-hl.default.svc.cluster.local", "A") == ips
    srv = zone.lookup("_http._tcp.web-hl.default.svc.cluster.local", QTYPE.SRV)
    assert sorted(str(rr.rdata.target) for rr in srv.answer) == sorted(
        f"{dashed(ip)}.web-hl.default.svc.cluster.local." for ip in ips)
    assert {rr.rdata.weight for rr in srv.answer} == {100 // len(ips)}
    assert sorted(str(rr.rdata) for rr in srv.additional) == ips


def test_srv_records(spec, zone):
    assert rdata(zone, "_http._tcp.web.default.svc.cluster.local", "SRV") == [
        "0 100 80 web.default.svc.cluster.local."]
    assert rdata(zone, "_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV") == [
        "0 100 53 kube-dns.kube-system.svc.cluster.local."]
    assert rdata(zone, "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local", "SRV") == [
        "0 100 53 kube-dns.kube-system.svc.cluster.local."]
    assert rdata(zone, "_https._tcp.kubernetes.default.svc.cluster.local", "SRV") == [
        "0 100 443 kubernetes.default.svc.cluster.local."]
    # headless: one SRV per endpoint, target port, the target's A as additional data
    ans = zone.lookup("_postgres._tcp.db.shop.svc.cluster.local", "SRV")
    assert [str(rr.rdata) for rr in ans.answer] == ["0 100 5432 db-0.db.shop.svc.cluster.local."]
    assert [str(rr.rdata) for rr in ans.additional] == [spec.pod("shop/db-0").ip]
    # the protocol label must match the port's protocol
    assert zone.lookup("_dns._tcp.kube-dns.kube-system.svc.cluster.local", "SRV").rcode == RCODE.NXDOMAIN


def test_ptr_records(spec, zone):
    web_svc = spec.service("default/web")
    assert rdata(zone, reverse_name(web_svc.cluster_ip), "PTR") == ["web.default.svc.cluster.local."]
    assert rdata(zone, reverse_name(spec.dns_service_ip), "PTR") == [
        "kube-dns.kube-system.svc.cluster.local."]
    db = spec.pod("shop/db-0")
    assert rdata(zone, reverse_name(db.ip), "PTR") == ["db-0.db.shop.svc.cluster.local."]
    web = spec.endpoint_pods(web_svc)[0]
    assert rdata(zone, reverse_name(web.ip), "PTR") == [
        f"{dashed(web.ip)}.web.default.svc.cluster.local."]
    assert rdata(zone, reverse_name(spec.apiserver_ips[0]), "PTR") == [
        f"{dashed(spec.apiserver_ips[0])}.kubernetes.default.svc.cluster.local."]
    assert zone.lookup(reverse_name("10.0.99.99"), "PTR").rcode == RCODE.NXDOMAIN


def test_pod_records_for_every_pod_with_its_own_ip(spec):
    zone = cluster_records(spec, pods="verified")
    for pod in spec.pods:
        name = f"{dashed(pod.ip)}.{pod.namespace}.pod.cluster.local"
        if pod.host_network:  # shares the node IP: no pod record of its own
            assert zone.lookup(name, "A").rcode == RCODE.NXDOMAIN
        else:
            assert rdata(zone, name, "A") == [pod.ip]

def test_pod_records_insecure_and_verified(spec, zone):
    web = spec.pod(spec.service("default/web").endpoints[0])
    other_ns = f"{dashed(web.ip)}.shop.pod.cluster.local"
    # `pods insecure` (EKS/kubeadm default): any dashed IPv4 in any namespace answers
    assert rdata(zone, other_ns, "A") == [web.ip]
    assert rdata(zone, "10-9-8-7.anything.pod.cluster.local", "A") == ["10.9.8.7"]
    assert zone.lookup("10-9-8-7.anything.pod.cluster.local", "AAAA").rcode == RCODE.NOERROR
    for bad in ("10-9-8-300.x.pod.cluster.local", "web.x.pod.cluster.local",
                "10-9-8-7.pod.cluster.local"):
        assert zone.lookup(bad, "A").rcode == RCODE.NXDOMAIN, bad
    # `pods verified`: only real pods, in their own namespace
    verified = cluster_records(spec, pods="verified")
    assert verified.lookup(other_ns, "A").rcode == RCODE.NXDOMAIN
    assert rdata(verified, f"{dashed(web.ip)}.default.pod.cluster.local", "A") == [web.ip]
    with pytest.raises(ValueError):
        cluster_records(spec, pods="disabled")


def test_unknown_cluster_name_is_nxdomain_with_soa(zone):
    ans = zone.lookup("nope.default.svc.cluster.local", "A")
    assert ans.rcode == RCODE.NXDOMAIN and ans.answer == () and ans.authoritative
    assert len(ans.authority) == 1
    soa = ans.authority[0]
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == "cluster.local."
    assert str(soa.rdata.mname) == "ns.dns.cluster.local."
    # search-list expansions of a fully qualified name are unknown too
    assert zone.lookup("web.default.svc.cluster.local.default.svc.cluster.local", "A").rcode \
        == RCODE.NXDOMAIN


def test_existing_name_without_the_type_is_nodata(zone):
    for name in ("web.default.svc.cluster.local", "svc.cluster.local", "default.svc.cluster.local"):
        ans = zone.lookup(name, "AAAA")
        assert ans.rcode == RCODE.NOERROR and ans.answer == ()
        assert [rr.rtype for rr in ans.authority] == [QTYPE.SOA]


def test_zone_apex_records(spec, zone):
    assert rdata(zone, "cluster.local", "NS") == ["ns.dns.cluster.local."]
    assert rdata(zone, "ns.dns.cluster.local", "A") == [spec.dns_service_ip]
    assert rdata(zone, "cluster.local", "SOA")[0].startswith("ns.dns.cluster.local. hostmaster.")
    assert rdata(zone, "dns-version.cluster.local", "TXT") == ['"1.1.0"']


def test_upstream_stand_in(spec, zone):
    assert rdata(zone, "external.netconform.test", "A") == [spec.external_ip]
    assert rdata(zone, "EXTERNAL.netconform.test.", "A") == [spec.external_ip]
    for name in ("example.com", "other.netconform.test", "kubernetes.default"):
        ans = zone.lookup(name, "A")
        assert ans.rcode == RCODE.NXDOMAIN and ans.answer == ()


def test_lookup_is_case_insensitive(zone):
    assert rdata(zone, "Web.DEFAULT.svc.Cluster.Local.", "A") == rdata(
        zone, "web.default.svc.cluster.local", "A")


@pytest.mark.parametrize("flavor", ["flannel", "vpc-cni"])
def test_non_default_cluster_domain(flavor):
    spec = build_spec("unit2", flavor, nodes=1, pods_per_node=3, cluster_domain="corp.internal")
    zone = cluster_records(spec)
    assert zone.cluster_domain == "corp.internal."
    assert rdata(zone, "kubernetes.default.svc.corp.internal", "A") == [spec.kubernetes_service_ip]
    db = spec.pod("shop/db-0")
    assert rdata(zone, "db-0.db.shop.svc.corp.internal", "A") == [db.ip]
    assert rdata(zone, "_postgres._tcp.db.shop.svc.corp.internal", "SRV") == [
        "0 100 5432 db-0.db.shop.svc.corp.internal."]
    assert rdata(zone, reverse_name(db.ip), "PTR") == ["db-0.db.shop.svc.corp.internal."]
    assert rdata(zone, f"{dashed(db.ip)}.shop.pod.corp.internal", "A") == [db.ip]
    # the default domain is just another unknown name now
    ans = zone.lookup("kubernetes.default.svc.cluster.local", "A")
    assert ans.rcode == RCODE.NXDOMAIN and not ans.authoritative
    nx = zone.lookup("nope.svc.corp.internal", "A")
    assert nx.rcode == RCODE.NXDOMAIN and str(nx.authority[0].rname) == "corp.internal."
    if flavor == "flannel":
        assert db.ip.startswith("10.244.") and spec.kubernetes_service_ip == "10.96.0.1"


def test_records_follow_added_pods_and_services(spec, zone):
    spec = dataclasses.replace(spec, pods=list(spec.pods), services=list(spec.services))
    node = spec.nodes[0]
    bare = PodSpec(namespace="tools", name="debug", uid="u", node=node.name, ip="10.0.1.250",
                   host_network=False, netns="nc-unit-tools-debug", role="debug", labels={},
                   owner_kind="", owner_name="", workload_kind="", workload_name="",
                   container_name="debug", container_id="0" * 64, image="busybox")
    spec.pods.append(bare)
    spec.services.append(ServiceSpec("tools", "api", "172.20.0.200",
                                     [PortSpec(8080, "TCP", "http"), PortSpec(9000, "TCP", "")],
                                     {"app": "none"}))
    new = cluster_records(spec)
    assert rdata(new, "api.tools.svc.cluster.local", "A") == ["172.20.0.200"]
    assert rdata(new, "10-0-1-250.tools.pod.cluster.local", "A") == ["10.0.1.250"]
    # a pod that backs no service reverses to its pod record
    assert rdata(new, reverse_name("10.0.1.250"), "PTR") == ["10-0-1-250.tools.pod.cluster.local."]
    # named ports get SRV records, unnamed ones do not
    assert rdata(new, "_http._tcp.api.tools.svc.cluster.local", "SRV") == [
        "0 100 8080 api.tools.svc.cluster.local."]
    assert not [n for n in new.names() if n.startswith("_9000") or n.startswith("_.")]
    # the old zone is untouched and the SOA serial moved
    assert zone.lookup("api.tools.svc.cluster.local", "A").rcode == RCODE.NXDOMAIN
    assert new.soas["cluster.local."].rdata.times[0] != zone.soas["cluster.local."].rdata.times[0]
    assert cluster_records(spec).soas["cluster.local."].rdata.times[0] == \
        new.soas["cluster.local."].rdata.times[0]


# -- message level (DnsServer.respond, no sockets) ------------------------------------------

def ask(server, name, qtype="A", *, max_size=None, edns=None, qid=4242):
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    return DNSRecord.parse(server.respond(q.pack(), max_size=max_size))


def test_respond_keeps_id_and_case_of_the_question(zone):
    r = ask(DnsServer(zone), "WEB.Default.svc.cluster.local", qid=777)
    assert r.header.id == 777 and r.header.qr and r.header.aa and r.header.ra
    assert str(r.rr[0].rname) == "WEB.Default.svc.cluster.local."
    assert r.header.rcode == RCODE.NOERROR


def test_respond_servfail_fault(zone):
    server = DnsServer(zone, DnsFaults(servfail=True))
    r = ask(server, "web.default.svc.cluster.local")
    assert r.header.rcode == RCODE.SERVFAIL and not r.rr
    server.faults = DnsFaults()
    assert ask(server, "web.default.svc.cluster.local").header.rcode == RCODE.NOERROR
    assert server.rcodes == {"SERVFAIL": 1, "NOERROR": 1}


def test_respond_truncates_big_udp_answers():
    spec = build_spec("big", "vpc-cni", nodes=2, pods_per_node=30)
    web = [p.key for p in spec.pods if p.labels.get("app") == "web"]
    spec.services.append(ServiceSpec("default", "web-hl", "None", [PortSpec(8080, "TCP", "http")],
                                     {"app": "web"}, endpoints=web))
    server = DnsServer(cluster_records(spec))
    udp = ask(server, "web-hl.default.svc.cluster.local", max_size=65507)
    assert udp.header.tc and not udp.rr
    big_edns = ask(server, "web-hl.default.svc.cluster.local", max_size=65507, edns=4096)
    assert not big_edns.header.tc and len(big_edns.rr) == len(web)
    tcp = ask(server, "web-hl.default.svc.cluster.local")
    assert not tcp.header.tc and len(tcp.rr) == len(web)


def test_respond_rejects_garbage():
    server = DnsServer(cluster_records(build_spec("g", nodes=1, pods_per_node=1)))
    assert server.respond(b"\x01") is None
    bad = DNSRecord.parse(server.respond(b"\x12\x34" + b"\x01\x00" + b"\x00\x01" + b"\xff" * 10))
    assert bad.header.id == 0x1234 and bad.header.rcode == RCODE.FORMERR
    # a response is never answered (no reflection loops)
    q = DNSRecord.question("web.default.svc.cluster.local")
    q.header.qr = 1
    assert server.respond(q.pack()) is None
