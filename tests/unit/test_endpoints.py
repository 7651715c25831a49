"""Service ports from EndpointSlices shaped as the API returns them (several slices per service)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netconform.analysis.endpoints import ready_addresses, service_ports

DATA = Path(__file__).parent / "data" / "endpointslices"


@pytest.fixture(scope="module")
def slices():
    return json.loads((DATA / "cluster.json").read_text())["items"]


def group(groups, service, port_name="", protocol="TCP", address_type="IPv4"):
    found = [g for g in groups if (g.service, g.port_name, g.protocol, g.address_type)
             == (service, port_name, protocol, address_type)]
    assert len(found) == 1, f"{service}/{port_name}/{protocol}/{address_type}: {len(found)} groups"
    return found[0]


def test_kubernetes_service_without_target_ref(slices):
    g = group(service_ports(slices), "kubernetes", "https")
    assert g.namespace == "default"
    assert [(e.address, e.port) for e in g.ready] == [("10.0.200.11", 443), ("10.0.200.12", 443)]
    assert all(e.target is None and e.node is None for e in g.ready)
    assert g.not_ready == []


def test_endpoints_are_merged_across_slices_and_deduplicated(slices):
    groups = service_ports(slices)
    dns = group(groups, "kube-dns", "dns", "UDP")
    assert [e.address for e in dns.ready] == ["10.0.1.16", "10.0.2.40", "10.0.3.7"]
    assert dns.not_ready == []
    dup = next(e for e in dns.ready if e.address == "10.0.2.40")
    # listed not-ready in one slice and ready in the other (the controller is moving it)
    assert dup.slices == ["kube-dns-7xk2p", "kube-dns-q9v4n"]
    assert dup.target == "Pod kube-system/coredns-5d78c9869d-p2m8d"
    assert dup.node == "ip-10-0-2-9.us-west-2.compute.internal" and dup.zone == "us-west-2b"
    # each protocol and port name is its own group
    assert {(g.port_name, g.protocol) for g in groups if g.service == "kube-dns"} == {
        ("dns", "UDP"), ("dns-tcp", "TCP"), ("metrics", "TCP")}
    assert [e.port for e in group(groups, "kube-dns", "metrics").ready] == [9153, 9153, 9153]


def test_absent_ready_means_ready_and_terminating_is_not_ready(slices):
    web = group(service_ports(slices), "web", "http")
    assert [e.address for e in web.ready] == ["10.244.1.7", "10.244.2.16"]
    unknown = web.ready[1]
    assert (unknown.ready, unknown.serving, unknown.terminating) == (True, True, False)
    assert [(e.address, e.serving, e.terminating) for e in web.not_ready] == [("10.244.2.15", True, True)]


def test_dual_stack_families_are_separate_groups(slices):
    groups = service_ports(slices)
    v4 = group(groups, "web", "http", address_type="IPv4")
    v6 = group(groups, "web", "http", address_type="IPv6")
    assert [e.address for e in v6.ready] == ["fd00:10:244:1::7", "fd00:10:244:2::10"]
    assert [e.address for e in v6.not_ready] == ["fd00:10:244:2::f"]
    assert all(":" not in e.address for e in v4.ready + v4.not_ready)


def test_slice_without_ports_gives_port_none_and_headless_addresses(slices):
    db = [g for g in service_ports(slices) if g.service == "db"]
    assert len(db) == 1
    assert (db[0].port_name, db[0].protocol, db[0].namespace) == ("", None, "shop")
    assert [(e.address, e.port, e.hostname) for e in db[0].ready] == [("10.0.1.20", None, "db-0"),
                                                                      ("10.0.2.31", None, "db-1")]
    assert [e.hostname for e in db[0].not_ready] == ["db-2"]
    assert ready_addresses(slices, "shop", "db") == ["10.0.1.20", "10.0.2.31"]
    assert ready_addresses(slices, "default", "web", "IPv6") == ["fd00:10:244:1::7", "fd00:10:244:2::10"]


def test_fqdn_slices_and_unowned_slices(slices):
    groups = service_ports(slices)
    fqdn = group(groups, "partner-api", "https", address_type="FQDN")
    assert [e.address for e in fqdn.ready] == ["api.partner.example"]
    # a slice that names no service is not part of any service
    assert not any(e.address == "192.0.2.10" for g in groups for e in g.ready + g.not_ready)


def test_duplicate_in_one_slice_pair_keeps_the_ready_copy_whatever_the_order(slices):
    dns_slices = [s for s in slices if s["metadata"]["name"].startswith("kube-dns-")]
    for order in (dns_slices, list(reversed(dns_slices))):
        g = group(service_ports(order), "kube-dns", "dns", "UDP")
        assert "10.0.2.40" in [e.address for e in g.ready]


def test_unnamed_port_defaults_protocol_tcp():
    s = {"metadata": {"name": "api-abcde", "namespace": "x", "labels": {"kubernetes.io/service-name": "api"}},
         "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": False}}],
         "ports": [{"port": 8443}]}
    (g,) = service_ports([s])
    assert (g.port_name, g.protocol, g.ready) == ("", "TCP", [])
    assert [(e.address, e.port, e.ready, e.serving) for e in g.not_ready] == [("10.1.0.5", 8443, False, False)]
