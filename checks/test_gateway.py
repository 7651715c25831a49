"""Default gateway: from the pod's *own* routing table to a live interface on its node
(k8snetlook pinged the host's gateway instead, which says nothing about the pod)."""
from __future__ import annotations

import pytest

from fixtures.probing import node_prober_for
from netconform.analysis.routes import default_gateway, gateway_neighbour, link_by_mac

FAMILIES = [pytest.param("inet", id="v4"), pytest.param("inet6", id="v6")]


def _pod_gateway(pod, family, pod_probe):
    version = 4 if family == "inet" else 6
    if not pod.ip_of_family(version):
        pytest.skip(f"pod {pod.key} has no IPv{version} address")
    gw = default_gateway(pod_probe("netinfo:routes"), family)
    assert gw is not None and (gw.address or gw.dev), (
        f"pod {pod.key} has no IPv{version} default route in its own routing table: nothing can leave it")
    return gw


def _usable_neighbour(pod_probe, gw):
    neigh = gateway_neighbour(pod_probe("netinfo:neighbours", all_states=True), gw)
    if neigh is None or not neigh.usable:
        # A learned gateway (bridge CNIs) has no entry until traffic needs one: send one packet.
        pod_probe.call("icmp:ping", dst=gw.address, timeout=1.0, _fresh=True)
        neigh = gateway_neighbour(pod_probe("netinfo:neighbours", all_states=True, _fresh=True), gw)
    return neigh


@pytest.mark.check("gateway.route")
@pytest.mark.parametrize("family", FAMILIES)
def test_gateway_route(request, pod, family, pod_probe, evidence):
    gw = _pod_gateway(pod, family, pod_probe)
    if gw.address is None:
        pytest.skip(f"pod {pod.key} routes by device only ({gw.route}): no gateway neighbour to check")
    assert gw.reachable_via, (
        f"pod {pod.key}: default gateway {gw.address} is not reachable on-link (no route covers it "
        f"and the default route is not onlink): `{gw.route}` cannot be used")
    neigh = _usable_neighbour(pod_probe, gw)
    state = ",".join(neigh.state) if neigh else "no entry"
    assert neigh is not None and neigh.usable, (
        f"pod {pod.key}: its gateway {gw.address} on {gw.dev} has no usable neighbour entry ({state}): "
        f"ARP/NDP for the gateway fails, so no packet leaves the pod")
    node = node_prober_for(request, pod.node, evidence)
    if node is None:
        pytest.skip(f"pod side is fine ({gw.address} -> {neigh.lladdr}, {state}); node {pod.node} "
                    f"cannot be inspected from here to confirm the interface behind it")
    link = link_by_mac(node("netinfo:links"), neigh.lladdr)
    assert link is not None, (
        f"pod {pod.key}: gateway {gw.address} resolves to MAC {neigh.lladdr} ({state}), but no "
        f"interface on node {pod.node} has that MAC: the entry is stale and the pod's packets go nowhere")
    assert link.up, (
        f"pod {pod.key}: gateway {gw.address} leads to {link.name} on node {pod.node}, which is "
        f"{'administratively down' if not link.admin_up else link.operstate}: the pod is cut off at its first hop")


@pytest.mark.check("gateway.reachable")
@pytest.mark.parametrize("family", FAMILIES)
def test_gateway_reachable(pod, family, pod_probe):
    gw = _pod_gateway(pod, family, pod_probe)
    timeout = pod_probe.timeout
    ways = []  # (what, destination): the gateway, and the node behind it
    if gw.address:
        ways.append((f"gateway {gw.address}", gw.address if family == "inet" or "%" in gw.address
                     else f"{gw.address}%{gw.dev}"))
    # The VPC CNI's 169.254.1.1 belongs to no interface and never answers: the node does.
    node_ip = pod.host_ip if family == "inet" else ""
    if node_ip:
        ways.append((f"node {pod.node} ({node_ip})", node_ip))
    # Both at once, done at the first reply: a gateway that never answers costs nothing then.
    replies = pod_probe.first([("icmp:ping", {"dst": dst, "count": 2, "timeout": timeout / 2}) for _, dst in ways],
                              lambda r: r["ok"])
    if any(r is not None and r["ok"] for r in replies):
        return
    tried = [f"{what}: {r['error_kind'] if r else 'no reply'}" for (what, _), r in zip(ways, replies)]
    pytest.fail(f"pod {pod.key}: nothing answered through its gateway {gw.address or gw.dev} "
                f"({'; '.join(tried)}) - node {pod.node} is not forwarding for this pod "
                f"(drop on its host veth, veth down, or forwarding off)", pytrace=False)
