"""Lab faults: each breaks one thing the way it breaks in real clusters, and heals it.

A fault is a small class with a name, a one-line summary, a default target, `apply` and `heal`.
Faults are idempotent and combine; every change lives inside the lab's own namespaces or the
lab process (so `down` undoes them too, even after a crash). Later faults (MTU, VXLAN, netns
leak, duplicate IP, conntrack, kube-proxy, SG, ENI throttles) are added the same way.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import ClassVar, Protocol

from .topology import LabSpec, PodSpec


class LabRuntime(Protocol):
    """What a fault may touch: the spec and the lab process's parts."""

    spec: LabSpec

    def stop_server(self, key: str) -> None: ...
    def start_server(self, key: str) -> None: ...
    def apply_kube_proxy(self, node: str, skip_services: frozenset[str] = frozenset()) -> None: ...


class FaultError(ValueError):
    """A fault cannot be applied as asked (unknown target, wrong flavour)."""


def iptables(netns: str, *args: str) -> None:
    out = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-w", *args],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} in {netns}: {out.stderr.strip()}")


def _rule_present(netns: str, table: str, chain: str, *rule: str) -> bool:
    out = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-w", "-t", table, "-C", chain, *rule],
                         capture_output=True, timeout=10)
    return out.returncode == 0


def _insert_once(netns: str, table: str, chain: str, *rule: str) -> None:
    if not _rule_present(netns, table, chain, *rule):
        iptables(netns, "-t", table, "-I", chain, *rule)


def _delete_all(netns: str, table: str, chain: str, *rule: str) -> None:
    while _rule_present(netns, table, chain, *rule):
        iptables(netns, "-t", table, "-D", chain, *rule)


def _tag(name: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", f"netconform-lab fault {name}")


@dataclass(frozen=True)
class Fault:
    name: ClassVar[str]
    summary: ClassVar[str]

    def default_target(self, spec: LabSpec) -> str:
        return ""

    def describe(self, spec: LabSpec, target: str) -> str:
        return self.summary + (f" (target {target})" if target else "")

    def apply(self, lab: LabRuntime, target: str) -> None:
        raise NotImplementedError

    def heal(self, lab: LabRuntime, target: str) -> None:
        raise NotImplementedError


def _app_pod(spec: LabSpec, target: str, *, last_node: bool = False) -> PodSpec:
    if target:
        try:
            pod = spec.pod(target)
        except KeyError:
            raise FaultError(f"no pod {target!r} in lab {spec.name}") from None
        if pod.host_network:
            raise FaultError(f"{target} is a hostNetwork pod")
        return pod
    web = [p for p in spec.pods if p.role == "app" and p.labels.get("app") == "web"]
    return web[-1] if last_node else web[0]


class GatewayDown(Fault):
    """The node stops forwarding for one pod: its traffic dies at the node-side veth."""

    name = "gateway-down"
    summary = "one pod's default gateway (the node side of its veth) stops forwarding"

    def default_target(self, spec: LabSpec) -> str:
        return _app_pod(spec, "").key

    def _rules(self, lab: LabRuntime, target: str) -> tuple[str, list[tuple[str, ...]]]:
        pod = _app_pod(lab.spec, target)
        node = lab.spec.node(pod.node)
        if lab.spec.flavor == "flannel":
            # bridged pods enter through cni0; br_netfilter's physdev names the pod's port
            match = ("-m", "physdev", "--physdev-in", pod.host_veth)
        else:
            match = ("-i", pod.host_veth)
        return node.netns, [("filter", "FORWARD", *match, *_tag(self.name), "-j", "DROP"),
                            ("filter", "INPUT", *match, *_tag(self.name), "-j", "DROP")]

    def apply(self, lab: LabRuntime, target: str) -> None:
        netns, rules = self._rules(lab, target)
        for table, chain, *rule in rules:
            _insert_once(netns, table, chain, *rule)

    def heal(self, lab: LabRuntime, target: str) -> None:
        netns, rules = self._rules(lab, target)
        for table, chain, *rule in rules:
            _delete_all(netns, table, chain, *rule)


class DnsDown(Fault):
    name = "dns-down"
    summary = "every cluster DNS server (CoreDNS replica) stops"

    def apply(self, lab: LabRuntime, target: str) -> None:
        for pod in _coredns(lab.spec):
            lab.stop_server(f"dns:{pod.key}")

    def heal(self, lab: LabRuntime, target: str) -> None:
        for pod in _coredns(lab.spec):
            lab.start_server(f"dns:{pod.key}")


class DnsReplicaDown(Fault):
    """One CoreDNS replica's server stops while its pod stays Ready: kube-dns keeps balancing onto it.

    Queries through the ClusterIP then fail only when kube-proxy picks that replica, so checks
    that ask once may fail by chance; their diagnosis must still name the replica.
    """

    name = "dns-replica-down"
    summary = "one CoreDNS replica's server stops (its pod stays Ready, kube-dns still balances onto it)"

    def default_target(self, spec: LabSpec) -> str:
        return _coredns(spec)[0].key

    def _pod(self, spec: LabSpec, target: str) -> PodSpec:
        pods = {p.key: p for p in _coredns(spec)}
        if target not in pods:
            raise FaultError(f"{target!r} is not a CoreDNS pod ({', '.join(pods)})")
        return pods[target]

    def apply(self, lab: LabRuntime, target: str) -> None:
        lab.stop_server(f"dns:{self._pod(lab.spec, target).key}")

    def heal(self, lab: LabRuntime, target: str) -> None:
        lab.start_server(f"dns:{self._pod(lab.spec, target).key}")


class DnsUdpBlocked(Fault):
    name = "dns-udp-blocked"
    summary = "UDP/53 to every CoreDNS replica is dropped; TCP/53 still works"

    def _rule(self) -> tuple[str, ...]:
        return ("-p", "udp", "--dport", "53", *_tag(self.name), "-j", "DROP")

    def apply(self, lab: LabRuntime, target: str) -> None:
        for pod in _coredns(lab.spec):
            _insert_once(pod.netns, "filter", "INPUT", *self._rule())

    def heal(self, lab: LabRuntime, target: str) -> None:
        for pod in _coredns(lab.spec):
            _delete_all(pod.netns, "filter", "INPUT", *self._rule())


class ApiserverEndpointDown(Fault):
    """The apiserver behind one endpoint IP is down: connections to it are refused.

    Refused rather than dropped on purpose: kube-proxy picks a ClusterIP's endpoint at random,
    and a refusal lets a ClusterIP probe retry cheaply and reach a live endpoint, so the
    ClusterIP verdict stays deterministic while the per-endpoint check names the dead one.
    """

    name = "apiserver-endpoint-down"
    summary = "one apiserver endpoint stops answering (its apiserver is down, connections refused)"

    def default_target(self, spec: LabSpec) -> str:
        return spec.apiserver_ips[0]

    def _key(self, spec: LabSpec, target: str) -> str:
        if target not in spec.apiserver_ips:
            raise FaultError(f"{target!r} is not an apiserver endpoint ({', '.join(spec.apiserver_ips)})")
        return f"apiserver:{target}"

    def apply(self, lab: LabRuntime, target: str) -> None:
        lab.stop_server(self._key(lab.spec, target))

    def heal(self, lab: LabRuntime, target: str) -> None:
        lab.start_server(self._key(lab.spec, target))


class ServiceEndpointDown(Fault):
    name = "service-endpoint-down"
    summary = "one app Service endpoint's server stops (the pod stays Ready)"

    def default_target(self, spec: LabSpec) -> str:
        return _app_pod(spec, "", last_node=True).key

    def apply(self, lab: LabRuntime, target: str) -> None:
        lab.stop_server(f"app:{_app_pod(lab.spec, target).key}")

    def heal(self, lab: LabRuntime, target: str) -> None:
        lab.start_server(f"app:{_app_pod(lab.spec, target).key}")


class KubeDnsDnatMissing(Fault):
    name = "kube-dns-dnat-missing"
    summary = "the kube-dns ClusterIP rules are missing on one node (kube-proxy out of sync)"

    def default_target(self, spec: LabSpec) -> str:
        return spec.nodes[0].name

    def _node(self, spec: LabSpec, target: str) -> str:
        try:
            return spec.node(target).name
        except KeyError:
            raise FaultError(f"no node {target!r} in lab {spec.name}") from None

    def apply(self, lab: LabRuntime, target: str) -> None:
        node = self._node(lab.spec, target)
        lab.apply_kube_proxy(node, frozenset({"kube-system/kube-dns"}))
        # Flows translated before the rules went keep their conntrack entries (UDP ones for 30 s
        # and more), and a new query that reuses such a source port would still be translated:
        # gone rules break new flows, which is what the fault is, so old flows go too (as after
        # the node restart that typically leaves kube-proxy without its rules).
        _forget_flows(lab.spec.node(node).netns, lab.spec.service("kube-system/kube-dns").cluster_ip)

    def heal(self, lab: LabRuntime, target: str) -> None:
        lab.apply_kube_proxy(self._node(lab.spec, target))


def _forget_flows(netns: str, dst: str) -> None:
    """Delete the conntrack entries of flows to `dst` in `netns` (none to delete is fine)."""
    subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-D", "-d", dst], capture_output=True, timeout=10)


def _coredns(spec: LabSpec) -> list[PodSpec]:
    return [p for p in spec.pods if p.role == "coredns"]


FAULTS: dict[str, Fault] = {f.name: f for f in (
    GatewayDown(), DnsDown(), DnsReplicaDown(), DnsUdpBlocked(), ApiserverEndpointDown(), ServiceEndpointDown(),
    KubeDnsDnatMissing(),
)}
