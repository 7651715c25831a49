"""The lab's dataplane: network namespaces, links, addresses, routes and rules built from a LabSpec.

Layout (shared/reference/lab-blueprint.md):

- ``nc-<lab>-vpc``   the VPC router / underlay: bridge ``br0`` (the subnet gateway) joining every
  node's ``eth0``; the apiserver endpoint IPs; a veth to the "external" host; in the vpc-cni
  flavour the trunk ENI ports, whose VLAN sub-interfaces join the bridge (branch ENIs).
- ``nc-<lab>-ext``   the opt-in "external" host behind a 1500-MTU link (like an internet gateway).
- ``nc-<lab>-node<i>`` a node's host namespace.
- ``nc-<lab>-<ns>-<pod>`` one per non-hostNetwork pod.

The root namespace is never given an address or route into the lab.
"""
from __future__ import annotations

import ipaddress
import subprocess
from contextlib import contextmanager
from typing import Iterator

from pyroute2 import IPRoute, netns as pr_netns

from .topology import LabSpec, NodeSpec, PodSpec, VXLAN_PORT, VXLAN_VNI

RUN_NETNS = "/run/netns"


def _run(argv: list[str], timeout: float = 10) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def sysctl(netns: str, **values: str | int) -> None:
    """Set sysctls inside `netns` (keys with '/' or '.'; `ip netns exec` switches /proc/sys/net)."""
    argv = ["ip", "netns", "exec", netns, "sysctl", "-q", "-w"]
    argv += [f"{k}={v}" for k, v in values.items()]
    _run(argv)


@contextmanager
def _ipr(netns: str) -> Iterator[IPRoute]:
    ipr = IPRoute(netns=netns)
    try:
        yield ipr
    finally:
        ipr.close()


def _idx(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise RuntimeError(f"link {name} not found")
    return found[0]


def netns_exists(name: str) -> bool:
    return name in pr_netns.listnetns()


class Dataplane:
    """Builds and tears down the namespaces of one lab. Every method is safe to call twice."""

    def __init__(self, spec: LabSpec):
        self.spec = spec
        self.vpc = spec.flavor == "vpc-cni"
        self.prefixlen = ipaddress.ip_network(spec.node_subnet).prefixlen

    # -- whole lab ---------------------------------------------------------------------------
    def build(self) -> None:
        self._underlay()
        self._external()
        for node in self.spec.nodes:
            self._node(node)
        if not self.vpc:
            for node in self.spec.nodes:
                self._flannel_peers(node)
        for pod in self.spec.pods:
            if not pod.host_network:
                self.add_pod(pod)

    def namespaces(self) -> list[str]:
        return [n for n in pr_netns.listnetns() if n.startswith(self.spec.netns_prefix)]

    # -- underlay / VPC router ---------------------------------------------------------------
    def _underlay(self) -> None:
        s = self.spec
        ns = s.underlay_netns
        pr_netns.create(ns)
        with _ipr(ns) as ipr:
            ipr.link("set", index=_idx(ipr, "lo"), state="up")
            ipr.link("add", ifname="br0", kind="bridge")
            br = _idx(ipr, "br0")
            ipr.link("set", index=br, mtu=s.underlay_mtu, state="up")
            ipr.addr("add", index=br, address=s.gateway_ip, prefixlen=self.prefixlen)
            subnet = ipaddress.ip_network(s.node_subnet)
            # This kernel has no dummy links: endpoints outside the subnet live on the router's lo.
            api = _idx(ipr, "lo")
            for ip in s.apiserver_ips:
                # Endpoints inside the node subnet (flannel plan) must answer ARP on the bridge.
                target = br if ipaddress.ip_address(ip) in subnet else api
                ipr.addr("add", index=target, address=ip, prefixlen=32)
        sysctl(ns, **{"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                      "net.ipv4.conf.default.rp_filter": 0})

    def _external(self) -> None:
        s = self.spec
        pr_netns.create(s.external_netns)
        gw = str(ipaddress.ip_address(s.external_ip) - 9)  # 198.51.100.1: the "internet gateway"
        with _ipr(s.underlay_netns) as vpc:
            vpc.link("add", ifname="ext0", kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": s.external_netns})
            i = _idx(vpc, "ext0")
            # 1500: the IGW limit (EC2 MTU doc) — the lab's PMTU path class "external".
            vpc.link("set", index=i, mtu=1500, state="up")
            vpc.addr("add", index=i, address=gw, prefixlen=24)
        with _ipr(s.external_netns) as ext:
            ext.link("set", index=_idx(ext, "lo"), state="up")
            e = _idx(ext, "eth0")
            ext.link("set", index=e, mtu=1500, state="up")
            ext.addr("add", index=e, address=s.external_ip, prefixlen=24)
            ext.route("add", dst="0.0.0.0/0", gateway=gw)

    # -- nodes -------------------------------------------------------------------------------
    def _node(self, node: NodeSpec) -> None:
        s = self.spec
        pr_netns.create(node.netns)
        with _ipr(s.underlay_netns) as vpc:
            port = f"n{node.index}"
            vpc.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": node.netns})
            p = _idx(vpc, port)
            vpc.link("set", index=p, mtu=node.mtu, master=_idx(vpc, "br0"), state="up")
            if node.trunk:
                vpc.link("add", ifname=f"t{node.index}", kind="veth",
                         peer={"ifname": "eth1", "net_ns_fd": node.netns})
                vpc.link("set", index=_idx(vpc, f"t{node.index}"), mtu=node.mtu, state="up")
        with _ipr(node.netns) as ipr:
            ipr.link("set", index=_idx(ipr, "lo"), state="up")
            eth0 = _idx(ipr, "eth0")
            ipr.link("set", index=eth0, address=node.eth0_mac, mtu=node.mtu, state="up")
            ipr.addr("add", index=eth0, address=node.ip, prefixlen=self.prefixlen)
            ipr.route("add", dst="0.0.0.0/0", gateway=s.gateway_ip)
            if node.trunk:
                eth1 = _idx(ipr, "eth1")  # the trunk ENI: no address, only VLAN children
                ipr.link("set", index=eth1, address=node.trunk_mac, mtu=node.mtu, state="up")
            if not self.vpc:
                ipr.link("add", ifname="cni0", kind="bridge")
                br = _idx(ipr, "cni0")
                ipr.link("set", index=br, mtu=s.pod_mtu, state="up")
                ipr.addr("add", index=br, address=node.bridge_ip,
                         prefixlen=ipaddress.ip_network(node.pod_cidr).prefixlen)
                ipr.link("add", ifname="flannel.1", kind="vxlan", vxlan_id=VXLAN_VNI,
                         vxlan_port=VXLAN_PORT, vxlan_local=node.ip, vxlan_link=eth0,
                         vxlan_learning=0)
                vx = _idx(ipr, "flannel.1")
                ipr.link("set", index=vx, address=node.vtep_mac, state="up")
                ipr.addr("add", index=vx, address=node.vtep_ip, prefixlen=32)
        values: dict[str, str | int] = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                                        "net.ipv4.conf.default.rp_filter": 0}
        if self.vpc:
            # The VPC fabric delivers a pod's secondary IP to its instance; in the lab the node
            # answers ARP for the pods it routes to (proxy ARP), without the usual random delay.
            values.update({"net.ipv4.conf.eth0.proxy_arp": 1, "net.ipv4.neigh.eth0.proxy_delay": 0})
        else:
            values["net.bridge.bridge-nf-call-iptables"] = 1
        sysctl(node.netns, **values)
        if not self.vpc:
            # flanneld's masquerade for pod traffic leaving the cluster network
            _run(["ip", "netns", "exec", node.netns, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING",
                  "-s", s.pod_cidr, "!", "-d", s.pod_cidr, "-m", "comment", "--comment",
                  "flanneld masq", "-j", "MASQUERADE", "--random-fully"])

    def _flannel_peers(self, node: NodeSpec) -> None:
        """What flanneld programs per peer: onlink route, permanent neighbour and FDB entry."""
        with _ipr(node.netns) as ipr:
            vx = _idx(ipr, "flannel.1")
            for peer in self.spec.nodes:
                if peer.name == node.name:
                    continue
                ipr.neigh("replace", dst=peer.vtep_ip, lladdr=peer.vtep_mac, ifindex=vx, state="permanent")
                # flanneld: NeighSet(AF_BRIDGE, NTF_SELF, NUD_PERMANENT); "append" is the verb
                # pyroute2 maps onto that request (128 = NUD_PERMANENT).
                ipr.fdb("append", ifindex=vx, lladdr=peer.vtep_mac, dst=peer.ip, state=128)
                ipr.route("replace", dst=peer.pod_cidr, gateway=peer.vtep_ip, oif=vx, flags=["onlink"])

    # -- pods --------------------------------------------------------------------------------
    def add_pod(self, pod: PodSpec) -> None:
        node = self.spec.node(pod.node)
        if not netns_exists(pod.netns):
            pr_netns.create(pod.netns)
        with _ipr(node.netns) as host:
            host.link("add", ifname=pod.host_veth, kind="veth",
                      peer={"ifname": "eth0", "net_ns_fd": pod.netns})
            hv = _idx(host, pod.host_veth)
            host.link("set", index=hv, address=pod.host_veth_mac, mtu=pod.mtu, state="up")
            if self.vpc:
                self._vpc_host_side(host, node, pod, hv)
            else:
                host.link("set", index=hv, master=_idx(host, "cni0"))
        with _ipr(pod.netns) as ipr:
            ipr.link("set", index=_idx(ipr, "lo"), state="up")
            eth0 = _idx(ipr, "eth0")
            ipr.link("set", index=eth0, address=pod.mac, mtu=pod.mtu, state="up")
            if self.vpc:
                # VPC CNI: /32 address, gateway 169.254.1.1 on-link with a static ARP entry
                # pointing at the host veth (cmd/routed-eni-cni-plugin/driver/driver.go).
                ipr.addr("add", index=eth0, address=pod.ip, prefixlen=32)
                gw = self.spec.pod_gateway
                ipr.route("add", dst=f"{gw}/32", oif=eth0, scope="link")
                ipr.route("add", dst="0.0.0.0/0", gateway=gw, oif=eth0)
                ipr.neigh("replace", dst=gw, lladdr=pod.host_veth_mac, ifindex=eth0, state="permanent")
            else:
                plen = ipaddress.ip_network(node.pod_cidr).prefixlen
                ipr.addr("add", index=eth0, address=pod.ip, prefixlen=plen)
                ipr.route("add", dst="0.0.0.0/0", gateway=node.bridge_ip)

    def _vpc_host_side(self, host: IPRoute, node: NodeSpec, pod: PodSpec, hv: int) -> None:
        host.route("replace", dst=f"{pod.ip}/32", oif=hv, scope="link")
        # ToContainerRulePriority: traffic to any local pod uses main (pkg/networkutils/network.go)
        host.rule("add", dst=pod.ip, dst_len=32, table=254, priority=512)
        if not pod.sgfp:
            return
        # Branch ENI, standard enforcing mode: link vlan.eth.<vlanId>, table vlanId+100, rules at
        # 512 (above) and 1536 (from the pod) — CNI pkg/networkutils, eks-networking.md §2.6.
        # This kernel has no 802.1Q support, so the branch link is a veth straight to the VPC
        # bridge instead of a VLAN on the trunk: same name, MAC, table and rules; only the
        # link kind differs (checks must not insist on kind "vlan").
        vname = f"vlan.eth.{pod.vlan_id}"
        vpc_port = f"b{node.index}-{pod.vlan_id}"
        host.link("add", ifname=vname, kind="veth",
                  peer={"ifname": vpc_port, "net_ns_fd": self.spec.underlay_netns})
        vl = _idx(host, vname)
        host.link("set", index=vl, address=pod.branch_mac, mtu=node.mtu, state="up")
        table = pod.vlan_id + 100
        host.route("replace", dst=f"{self.spec.gateway_ip}/32", oif=vl, scope="link", table=table)
        host.route("replace", dst="0.0.0.0/0", gateway=self.spec.gateway_ip, oif=vl, table=table)
        host.rule("add", src=pod.ip, src_len=32, table=table, priority=1536)
        with _ipr(self.spec.underlay_netns) as vpc:
            t = _idx(vpc, vpc_port)
            vpc.link("set", index=t, mtu=node.mtu, master=_idx(vpc, "br0"), state="up")

    def remove_pod(self, pod: PodSpec) -> None:
        """Undo add_pod (the CNI DEL): host links, rules, then the namespace."""
        node = self.spec.node(pod.node)
        if netns_exists(node.netns):
            with _ipr(node.netns) as host:
                for name in (pod.host_veth, f"vlan.eth.{pod.vlan_id}" if pod.sgfp else ""):
                    if name and host.link_lookup(ifname=name):
                        host.link("del", index=_idx(host, name))
                if self.vpc:
                    for rule in host.get_rules(family=2):
                        dst, src = rule.get_attr("FRA_DST"), rule.get_attr("FRA_SRC")
                        if pod.ip in (dst, src):
                            host.rule("del", priority=rule.get_attr("FRA_PRIORITY"),
                                      dst=dst, dst_len=rule["dst_len"] if dst else 0,
                                      src=src, src_len=rule["src_len"] if src else 0,
                                      table=rule.get_attr("FRA_TABLE"))
        if netns_exists(pod.netns):
            pr_netns.remove(pod.netns)

