"""Default gateway, its neighbour entry and the node-side link: recorded `ip -j` output from VPC CNI,
flannel and IPv6 pods, and live netinfo dumps of a throwaway pod/node namespace pair."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from netconform.analysis.routes import default_gateway, default_gateways, gateway_neighbour, link_by_mac

DATA = Path(__file__).parent / "data" / "ipjson"


def load(path: str):
    return json.loads((DATA / path).read_text())


def test_vpc_cni_pod_gateway_resolves_to_its_host_veth():
    gw = default_gateway(load("vpc-cni/pod-route.json"), "inet")
    assert (gw.address, gw.dev, gw.onlink, gw.link_local) == ("169.254.1.1", "eth0", False, True)
    assert gw.reachable_via == "169.254.1.1/32 dev eth0"
    assert gw.route == "default via 169.254.1.1 dev eth0"
    n = gateway_neighbour(load("vpc-cni/pod-neigh.json"), gw)
    assert (n.lladdr, n.state, n.usable, n.router) == ("e6:2c:8b:1f:3a:5d", ["permanent"], True, False)
    link = link_by_mac(load("vpc-cni/node-link.json"), n.lladdr)
    assert (link.name, link.kind, link.up, link.operstate, link.mtu) == ("eni3a5e2f0c1d7", "veth", True, "UP", 9001)
    assert link.same_mac == []


def test_vpc_cni_host_veth_down_is_reported():
    link = link_by_mac(load("vpc-cni/node-link.json"), "72:0D:C4:9A:13:B8")  # MAC case does not matter
    assert (link.name, link.admin_up, link.up, link.operstate) == ("enib81f0e6c2d9", False, False, "DOWN")


def test_no_node_link_with_that_mac():
    assert link_by_mac(load("vpc-cni/node-link.json"), "02:00:00:00:00:01") is None


def test_flannel_pod_gateway_is_the_cni0_bridge_even_when_a_port_shares_its_mac():
    gw = default_gateway(load("flannel/pod-route.json"), "inet")
    assert (gw.address, gw.link_local, gw.reachable_via) == ("10.244.1.1", False, "10.244.1.0/24 dev eth0")
    n = gateway_neighbour(load("flannel/pod-neigh.json"), gw)
    assert (n.address, n.state, n.usable) == ("10.244.1.1", ["reachable"], True)
    link = link_by_mac(load("flannel/node-link.json"), n.lladdr)
    # the bridge took the MAC of its first port: the bridge is where the gateway IP lives
    assert (link.name, link.kind, link.master, link.up) == ("cni0", None, None, True)
    assert link.same_mac == ["veth5f1c2a9b"]
    down = link_by_mac(load("flannel/node-link-cni0-down.json"), n.lladdr)
    assert (down.name, down.up) == ("cni0", False)


def test_bridge_recreated_after_its_ports_is_still_chosen_over_them():
    # netinfo shape; cni0 was deleted and re-created (flannel restart), so its index is higher
    links = [{"name": "veth5f1c2a9b", "index": 5, "state": "up", "operstate": "UP", "mtu": 1450,
              "mac": "7e:3a:91:5c:0b:f2", "kind": "veth", "carrier": True, "parent_index": 2, "master_index": 9},
             {"name": "cni0", "index": 9, "state": "up", "operstate": "UP", "mtu": 1450,
              "mac": "7e:3a:91:5c:0b:f2", "kind": "bridge", "carrier": True, "parent_index": None,
              "master_index": None}]
    link = link_by_mac(links, "7e:3a:91:5c:0b:f2")
    assert (link.name, link.kind, link.same_mac) == ("cni0", "bridge", ["veth5f1c2a9b"])
    assert link_by_mac(links[:1], "7e:3a:91:5c:0b:f2").master == "9"  # the bridge is not in the list


def test_flannel_gateway_arp_failed():
    gw = default_gateway(load("flannel/pod-route.json"), "inet")
    n = gateway_neighbour(load("flannel/pod-neigh-failed.json"), gw)
    assert (n.lladdr, n.state, n.usable) == (None, ["failed"], False)
    assert gateway_neighbour([], gw) is None


def test_ipv6_vpc_cni_pod_link_local_gateway():
    gw = default_gateway(load("vpc-cni-ipv6/pod-route6.json"), "inet6")
    assert (gw.address, gw.dev, gw.metric, gw.link_local) == ("fe80::1", "eth0", 1024, True)
    assert gw.reachable_via == "fe80::1/128 dev eth0"
    n = gateway_neighbour(load("vpc-cni-ipv6/pod-neigh6.json"), gw)
    assert (n.lladdr, n.state, n.router) == ("b2:4e:6a:19:c0:3d", ["permanent"], False)
    assert link_by_mac(load("vpc-cni-ipv6/node-link.json"), n.lladdr).name == "eni71c0d2e8a4f"
    # the IPv4 egress-only interface of an IPv6 pod has its own default route
    v4 = default_gateway(load("vpc-cni-ipv6/pod-route.json"), "inet")
    assert (v4.address, v4.dev, v4.reachable_via) == ("169.254.172.1", "v4if0", "169.254.172.0/22 dev v4if0")
    assert default_gateway(load("vpc-cni-ipv6/pod-route.json"), "inet6") is None


def test_family_is_told_from_addresses_when_both_outputs_are_mixed():
    both = load("vpc-cni-ipv6/pod-route.json") + load("vpc-cni-ipv6/pod-route6.json")
    gws = default_gateways(both)
    assert {f: g.address for f, g in gws.items()} == {"inet": "169.254.172.1", "inet6": "fe80::1"}


def test_onlink_multipath_and_metric():
    routes = [
        {"dst": "default", "gateway": "169.254.1.1", "dev": "eth0", "flags": ["onlink"]},
        {"dst": "default", "gateway": "10.0.0.1", "dev": "eth1", "metric": 100, "flags": []},
        {"dst": "10.0.0.0/24", "dev": "eth1", "protocol": "kernel", "scope": "link", "flags": []},
    ]
    gw = default_gateway(routes)
    assert (gw.address, gw.onlink, gw.reachable_via, gw.alternatives) == ("169.254.1.1", True, "onlink dev eth0", 1)
    multipath = [{"dst": "default", "metric": 10, "flags": [], "nexthops": [
        {"gateway": "10.0.0.1", "dev": "eth0", "weight": 1, "flags": []},
        {"gateway": "10.0.1.1", "dev": "eth1", "weight": 1, "flags": ["onlink"]}]}]
    gw = default_gateway(multipath)
    assert (gw.address, gw.dev, gw.onlink, len(gw.nexthops)) == ("10.0.0.1", "eth0", True, 2)


def test_gateway_without_a_connected_route():
    gw = default_gateway([{"dst": "default", "gateway": "10.9.0.1", "dev": "eth0", "flags": []}])
    assert gw.reachable_via is None
    assert default_gateway([{"dst": "10.0.0.0/8", "dev": "eth0", "flags": []}]) is None
    dev_only = default_gateway([{"dst": "default", "dev": "wg0", "scope": "link", "flags": []}])
    assert (dev_only.address, dev_only.reachable_via) == (None, "dev wg0")


# -- live: netinfo dumps of a vpc-cni style pod namespace and its node namespace -----------------

def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def vpc_pod(make_netns):
    pod, node = make_netns("gwpod"), make_netns("gwnode")
    _sh("ip", "-n", node, "link", "add", "eni0test", "type", "veth", "peer", "name", "eth0", "netns", pod)
    mac = json.loads(subprocess.run(["ip", "-j", "-n", node, "link", "show", "eni0test"], capture_output=True,
                                    text=True, check=True, timeout=10).stdout)[0]["address"]
    _sh("ip", "-n", node, "link", "set", "eni0test", "up")
    for cmd in (["addr", "add", "10.0.12.34/32", "dev", "eth0"],
                ["-6", "addr", "add", "fd00:12::34/128", "dev", "eth0", "nodad"],
                ["link", "set", "eth0", "up"],
                ["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"],
                ["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"],
                ["neigh", "add", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent"],
                ["-6", "route", "add", "fe80::1", "dev", "eth0"],
                ["-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"],
                ["-6", "neigh", "add", "fe80::1", "lladdr", mac, "dev", "eth0", "nud", "permanent"]):
        _sh("ip", "-n", pod, *cmd)
    return pod, node, mac


def test_live_netinfo_dumps_of_a_vpc_cni_pod(vpc_pod):
    from netconform.runners.local import LocalRunner

    pod, node, mac = vpc_pod
    with LocalRunner(f"/run/netns/{pod}") as in_pod, LocalRunner(f"/run/netns/{node}") as in_node:
        routes = in_pod.call("netinfo:routes", {}, timeout=10).raise_for_status()
        neigh = in_pod.call("netinfo:neighbours", {}, timeout=10).raise_for_status()
        gws = default_gateways(routes)
        assert gws["inet"].address == "169.254.1.1" and gws["inet"].reachable_via == "169.254.1.1/32 dev eth0"
        assert gws["inet6"].address == "fe80::1" and gws["inet6"].link_local
        for family in ("inet", "inet6"):
            n = gateway_neighbour(neigh, gws[family])
            assert (n.lladdr, n.state, n.usable) == (mac, ["permanent"], True), family
        link = link_by_mac(in_node.call("netinfo:links", {}, timeout=10).raise_for_status(), mac)
        assert (link.name, link.kind, link.up) == ("eni0test", "veth", True)
        _sh("ip", "-n", node, "link", "set", "eni0test", "down")
        link = link_by_mac(in_node.call("netinfo:links", {}, timeout=10).raise_for_status(), mac)
        assert (link.name, link.admin_up, link.up) == ("eni0test", False, False)
    # the analysis results are JSON-able evidence
    json.dumps(dataclasses.asdict(link))
