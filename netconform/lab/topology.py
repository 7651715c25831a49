"""The lab's topology: one pure description of the cluster that every lab part derives from.

`build_spec(name, flavor, nodes, pods_per_node)` returns a `LabSpec` (plain dataclasses, JSON-able
through `to_dict`/`from_dict`). The dataplane, the kube-proxy rules, the Kubernetes API objects, the
DNS records and the AWS seed are all computed from it, so they can never disagree.

Address plan (see shared/reference/lab-blueprint.md, widened so 8 nodes x 20 pods fit):

=================  ==========================  ==========================
                   vpc-cni (EKS-like)          flannel (kubeadm-like)
=================  ==========================  ==========================
node subnet        10.0.0.0/20, gw 10.0.0.1     172.18.0.0/24, gw .1
node IPs           10.0.0.10, .11, ...          172.18.0.10, .11, ...
pod IPs            10.0.1.10 + n (VPC IPs)      10.244.<node>.0/24, from .2
pod gateway        169.254.1.1 (static neigh)   cni0 = 10.244.<node>.1
service CIDR       172.20.0.0/16                10.96.0.0/12
kubernetes svc     172.20.0.1                   10.96.0.1
kube-dns svc       172.20.0.10                  10.96.0.10
apiserver eps      10.0.200.11, .12             172.18.0.201, .202
external host      198.51.100.10 (TEST-NET-2)   198.51.100.10
MTU                9001 (pods 9001)             1500, flannel.1/pods 1450
=================  ==========================  ==========================
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

FLAVORS = ("vpc-cni", "flannel")
VXLAN_PORT = 8472
VXLAN_VNI = 1
VXLAN_OVERHEAD = 50
VPC_CNI_GATEWAY = "169.254.1.1"
KUBE_PROXY_HEALTHZ_PORT = 10256
EXTERNAL_HOST_IP = "198.51.100.10"


@dataclass
class PortSpec:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | None = None  # services only; None = same as port


@dataclass
class NodeSpec:
    name: str
    index: int
    ip: str
    netns: str
    eth0_mac: str
    cgroup_driver: str  # "cgroupfs" | "systemd": nodes alternate so both layouts exist
    instance_id: str = ""  # filled by the AWS seed
    pod_cidr: str = ""  # flannel: 10.244.N.0/24
    bridge_ip: str = ""  # flannel: cni0 address (the pods' gateway)
    vtep_mac: str = ""  # flannel: flannel.1 MAC
    vtep_ip: str = ""  # flannel: flannel.1 address (10.244.N.0)
    trunk: bool = False  # vpc-cni: node has a trunk ENI (SGFP capable)
    trunk_mac: str = ""
    trunk_eni_id: str = ""  # filled by the AWS seed
    primary_eni_id: str = ""  # filled by the AWS seed
    mtu: int = 1500


@dataclass
class PodSpec:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    host_network: bool
    netns: str  # hostNetwork pods: the node's netns
    role: str  # app | coredns | kube-proxy | aws-node | kube-flannel | debug
    labels: dict[str, str]
    owner_kind: str  # ReplicaSet | StatefulSet | DaemonSet | "" (bare pod)
    owner_name: str
    workload_kind: str  # Deployment | StatefulSet | DaemonSet | ""
    workload_name: str
    container_name: str
    container_id: str  # 64 hex, containerd
    image: str
    ports: list[PortSpec] = field(default_factory=list)
    service_account: str = "default"
    mac: str = ""  # pod eth0
    host_veth: str = ""  # node-side veth name
    host_veth_mac: str = ""
    mtu: int = 1500
    # Security groups for pods (vpc-cni only)
    sgfp: bool = False
    vlan_id: int = 0
    branch_mac: str = ""
    branch_eni_id: str = ""  # filled by the AWS seed
    security_groups: list[str] = field(default_factory=list)  # SG *names*; ids via LabSpec.sg_ids
    qos_class: str = "BestEffort"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class ServiceSpec:
    namespace: str
    name: str
    cluster_ip: str  # "None" for headless
    ports: list[PortSpec]
    selector: dict[str, str]
    endpoints: list[str] = field(default_factory=list)  # pod keys ns/name; apiserver: IPs
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class SecurityGroupPolicySpec:
    namespace: str
    name: str
    pod_selector: dict[str, str]
    group_names: list[str]


@dataclass
class LabSpec:
    name: str
    flavor: str
    cluster_domain: str
    region: str
    vpc_cidr: str
    node_subnet: str
    gateway_ip: str
    service_cidr: str
    pod_cidr: str  # flannel cluster CIDR; vpc-cni: the node subnet
    pod_gateway: str  # vpc-cni 169.254.1.1; flannel: per node (see NodeSpec.bridge_ip)
    dns_service_ip: str
    kubernetes_service_ip: str
    apiserver_ips: list[str]
    external_ip: str
    underlay_mtu: int
    pod_mtu: int
    nodes: list[NodeSpec]
    pods: list[PodSpec]
    services: list[ServiceSpec]
    security_group_policies: list[SecurityGroupPolicySpec] = field(default_factory=list)
    # security group name -> id; filled by the AWS seed (names are stable, ids are moto's)
    sg_ids: dict[str, str] = field(default_factory=dict)
    vpc_id: str = ""
    subnet_id: str = ""
    cluster_name: str = ""

    # -- lookups -------------------------------------------------------------------------
    @property
    def underlay_netns(self) -> str:
        return f"nc-{self.name}-vpc"

    @property
    def external_netns(self) -> str:
        return f"nc-{self.name}-ext"

    @property
    def netns_prefix(self) -> str:
        return f"nc-{self.name}-"

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod(self, key: str) -> PodSpec:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)

    def service(self, key: str) -> ServiceSpec:
        for s in self.services:
            if s.key == key:
                return s
        raise KeyError(key)

    def pods_on(self, node: str) -> list[PodSpec]:
        return [p for p in self.pods if p.node == node]

    def endpoint_pods(self, svc: ServiceSpec) -> list[PodSpec]:
        return [self.pod(k) for k in svc.endpoints if "/" in k]

    def all_netns(self) -> list[str]:
        names = [self.underlay_netns, self.external_netns] + [n.netns for n in self.nodes]
        names += [p.netns for p in self.pods if not p.host_network]
        return list(dict.fromkeys(names))

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabSpec:
        d = dict(d)
        d["nodes"] = [NodeSpec(**n) for n in d["nodes"]]
        d["pods"] = [_pod_from_dict(p) for p in d["pods"]]
        d["services"] = [
            ServiceSpec(**{**s, "ports": [PortSpec(**pt) for pt in s["ports"]]}) for s in d["services"]
        ]
        d["security_group_policies"] = [
            SecurityGroupPolicySpec(**g) for g in d.get("security_group_policies", [])
        ]
        return cls(**d)


def _pod_from_dict(p: dict[str, Any]) -> PodSpec:
    return PodSpec(**{**p, "ports": [PortSpec(**pt) for pt in p.get("ports", [])]})


# -- helpers ---------------------------------------------------------------------------------

def _mac(*parts: str) -> str:
    """A stable, locally administered unicast MAC derived from `parts`."""
    h = hashlib.sha1("/".join(parts).encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


def vpc_cni_host_veth(namespace: str, pod: str, prefix: str = "eni") -> str:
    """The VPC CNI's host veth name: prefix + sha1("<ns>.<pod>")[:11] (pkg/networkutils/names.go)."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def _flannel_host_veth(namespace: str, pod: str) -> str:
    return "veth" + hashlib.sha1(f"{namespace}/{pod}".encode()).hexdigest()[:8]


def _suffix(n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the apimachinery rand.String alphabet
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _rs_hash() -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(10))


def wire_pod(pod: PodSpec, lab: str, flavor: str, mtu: int, *, sgfp: bool = False) -> None:
    """Give a non-hostNetwork pod its link identity: MACs, MTU and the CNI's host veth name.
    Used for the spec's pods and for pods created later through the lab API."""
    pod.mac = _mac(lab, pod.key, "eth0")
    pod.host_veth_mac = _mac(lab, pod.key, "host")
    pod.mtu = mtu
    if flavor == "vpc-cni":
        # SGFP strict mode uses the "vlan" host veth prefix (CNI pkg/networkutils/names.go)
        pod.host_veth = vpc_cni_host_veth(pod.namespace, pod.name, "vlan" if sgfp else "eni")
    else:
        pod.host_veth = _flannel_host_veth(pod.namespace, pod.name)


def pod_netns_name(lab: str, namespace: str, pod: str) -> str:
    return f"nc-{lab}-{namespace}-{pod}"


def validate_lab_name(name: str) -> str:
    """Lab names are 1-12 of [a-z0-9]: no '-', so the prefix `nc-<lab>-` of one lab never
    matches another lab's namespaces (lab "a" vs lab "a-b") and teardown can sweep by prefix."""
    import re

    if not re.fullmatch(r"[a-z0-9]{1,12}", name or ""):
        raise ValueError(f"lab name {name!r} must be 1-12 characters of a-z and 0-9")
    return name


# -- the builder -----------------------------------------------------------------------------

def build_spec(
    name: str = "lab",
    flavor: str = "vpc-cni",
    nodes: int = 2,
    pods_per_node: int = 3,
    cluster_domain: str = "cluster.local",
) -> LabSpec:
    """Describe a lab cluster. Pure apart from random UIDs and container ids.

    Per node: `pods_per_node` workload pods (an app Deployment `default/web` on every node, in
    vpc-cni one SGFP pod `shop/payments-*` per node, the StatefulSet pod `shop/db-0` on the first
    node), one CoreDNS replica on each of the first two nodes, and hostNetwork DaemonSet pods
    (kube-proxy, aws-node or kube-flannel).
    """
    validate_lab_name(name)
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, not {flavor!r}")
    if not 1 <= nodes <= 16:
        raise ValueError("nodes must be between 1 and 16")
    if not 1 <= pods_per_node <= 60:
        raise ValueError("pods-per-node must be between 1 and 60")

    vpc = flavor == "vpc-cni"
    if vpc:
        node_subnet = ipaddress.ip_network("10.0.0.0/20")
        gateway, svc_cidr = "10.0.0.1", "172.20.0.0/16"
        k8s_ip, dns_ip = "172.20.0.1", "172.20.0.10"
        api_ips = ["10.0.200.11", "10.0.200.12"]
        underlay_mtu = pod_mtu = 9001
        pod_cidr = str(node_subnet)
    else:
        node_subnet = ipaddress.ip_network("172.18.0.0/24")
        gateway, svc_cidr = "172.18.0.1", "10.96.0.0/12"
        k8s_ip, dns_ip = "10.96.0.1", "10.96.0.10"
        api_ips = ["172.18.0.201", "172.18.0.202"]
        underlay_mtu, pod_mtu = 1500, 1500 - VXLAN_OVERHEAD
        pod_cidr = "10.244.0.0/16"

    node_specs: list[NodeSpec] = []
    for i in range(nodes):
        ip = str(node_subnet.network_address + 10 + i)
        nname = (f"ip-{ip.replace('.', '-')}.us-west-2.compute.internal" if vpc
                 else f"{name}-worker-{i}")
        n = NodeSpec(
            name=nname,
            index=i,
            ip=ip,
            netns=f"nc-{name}-node{i}",
            eth0_mac=_mac(name, nname, "eth0"),
            cgroup_driver="cgroupfs" if i % 2 == 0 else "systemd",
            mtu=underlay_mtu,
        )
        if vpc:
            n.trunk = True
            n.trunk_mac = _mac(name, nname, "trunk")
        else:
            n.pod_cidr = f"10.244.{i}.0/24"
            n.bridge_ip = f"10.244.{i}.1"
            n.vtep_ip = f"10.244.{i}.0"
            n.vtep_mac = _mac(name, nname, "flannel.1")
        node_specs.append(n)

    ip_alloc = _PodIpAllocator(vpc, node_specs)
    pods: list[PodSpec] = []

    def add_pod(namespace: str, pname: str, node: NodeSpec, role: str, labels: dict[str, str],
                owner_kind: str, owner_name: str, workload_kind: str, workload_name: str,
                container: str, image: str, ports: list[PortSpec], host_network: bool = False,
                sgfp: bool = False, sa: str = "default", qos: str = "BestEffort") -> PodSpec:
        p = PodSpec(
            namespace=namespace, name=pname, uid=str(uuid.uuid4()), node=node.name,
            ip=node.ip if host_network else ip_alloc.next(node),
            host_network=host_network,
            netns=node.netns if host_network else pod_netns_name(name, namespace, pname),
            role=role, labels=labels, owner_kind=owner_kind, owner_name=owner_name,
            workload_kind=workload_kind, workload_name=workload_name, container_name=container,
            container_id=secrets.token_hex(32), image=image, ports=ports, service_account=sa,
            qos_class=qos,
        )
        if not host_network:
            wire_pod(p, name, flavor, pod_mtu, sgfp=sgfp)
        if sgfp:
            p.sgfp = True
            p.vlan_id = 1 + sum(1 for q in pods if q.sgfp and q.node == node.name)
            p.branch_mac = _mac(name, p.key, "branch")
            p.security_groups = ["payments-sg", "db-clients-sg"]
        pods.append(p)
        return p

    # workloads -----------------------------------------------------------------------------
    web_rs = f"web-{_rs_hash()}"
    pay_rs = f"payments-{_rs_hash()}"
    web_labels = {"app": "web", "pod-template-hash": web_rs.split("-", 1)[1]}
    pay_labels = {"app": "payments", "pod-template-hash": pay_rs.split("-", 1)[1]}
    web_ports = [PortSpec(8080, "TCP", "http")]
    for node in node_specs:
        kinds = ["web"]
        if vpc:
            kinds.append("payments")
        if node.index == 0:
            kinds.append("db")
        while len(kinds) < pods_per_node:
            kinds.append("web")
        for kind in kinds[:max(pods_per_node, 1)]:
            if kind == "web":
                add_pod("default", f"{web_rs}-{_suffix()}", node, "app", dict(web_labels),
                        "ReplicaSet", web_rs, "Deployment", "web", "web",
                        "registry.k8s.io/e2e-test-images/agnhost:2.53", web_ports)
            elif kind == "payments":
                add_pod("shop", f"{pay_rs}-{_suffix()}", node, "app", dict(pay_labels),
                        "ReplicaSet", pay_rs, "Deployment", "payments", "payments",
                        "registry.k8s.io/e2e-test-images/agnhost:2.53",
                        [PortSpec(8443, "TCP", "https")], sgfp=True, sa="payments")
            else:
                add_pod("shop", "db-0", node, "app",
                        {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0",
                         "apps.kubernetes.io/pod-index": "0"},
                        "StatefulSet", "db", "StatefulSet", "db", "postgres",
                        "docker.io/library/postgres:16", [PortSpec(5432, "TCP", "postgres")])

    # CoreDNS: two replicas on different nodes (one node: both on it)
    dns_rs = f"coredns-{_rs_hash()}"
    dns_labels = {"k8s-app": "kube-dns", "pod-template-hash": dns_rs.split("-", 1)[1]}
    dns_ports = [PortSpec(53, "UDP", "dns"), PortSpec(53, "TCP", "dns-tcp"), PortSpec(9153, "TCP", "metrics")]
    for r in range(2):
        add_pod("kube-system", f"{dns_rs}-{_suffix()}", node_specs[r % len(node_specs)], "coredns",
                dict(dns_labels), "ReplicaSet", dns_rs, "Deployment", "coredns", "coredns",
                "registry.k8s.io/coredns/coredns:v1.11.3", dns_ports, sa="coredns",
                qos="Burstable")

    # hostNetwork DaemonSets
    for node in node_specs:
        add_pod("kube-system", f"kube-proxy-{_suffix()}", node, "kube-proxy",
                {"k8s-app": "kube-proxy", "controller-revision-hash": "6d8f4b7c9"},
                "DaemonSet", "kube-proxy", "DaemonSet", "kube-proxy", "kube-proxy",
                "registry.k8s.io/kube-proxy:v1.32.0", [], host_network=True, sa="kube-proxy",
                qos="Burstable")
        if vpc:
            add_pod("kube-system", f"aws-node-{_suffix()}", node, "aws-node",
                    {"k8s-app": "aws-node", "controller-revision-hash": "5f7b8c6d4"},
                    "DaemonSet", "aws-node", "DaemonSet", "aws-node", "aws-node",
                    "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2",
                    [PortSpec(61678, "TCP", "metrics")], host_network=True, sa="aws-node",
                    qos="Burstable")
        else:
            add_pod("kube-flannel", f"kube-flannel-ds-{_suffix()}", node, "kube-flannel",
                    {"app": "flannel", "k8s-app": "flannel", "controller-revision-hash": "7c9d5b8f6"},
                    "DaemonSet", "kube-flannel-ds", "DaemonSet", "kube-flannel-ds", "kube-flannel",
                    "ghcr.io/flannel-io/flannel:v0.26.1", [], host_network=True, sa="flannel",
                    qos="Burstable")

    # services ------------------------------------------------------------------------------
    svc_alloc = _ServiceIpAllocator(svc_cidr)
    services = [
        ServiceSpec("default", "kubernetes", k8s_ip, [PortSpec(443, "TCP", "https", 443)], {},
                    endpoints=list(api_ips), labels={"component": "apiserver", "provider": "kubernetes"}),
        ServiceSpec("kube-system", "kube-dns", dns_ip,
                    [PortSpec(53, "UDP", "dns", 53), PortSpec(53, "TCP", "dns-tcp", 53),
                     PortSpec(9153, "TCP", "metrics", 9153)],
                    {"k8s-app": "kube-dns"},
                    labels={"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                            "kubernetes.io/name": "CoreDNS"}),
        ServiceSpec("default", "web", svc_alloc.next(), [PortSpec(80, "TCP", "http", 8080)],
                    {"app": "web"}, labels={"app": "web"}),
        ServiceSpec("shop", "db", "None", [PortSpec(5432, "TCP", "postgres", 5432)], {"app": "db"},
                    labels={"app": "db"}),
    ]
    if vpc:
        services.append(ServiceSpec("shop", "payments", svc_alloc.next(),
                                    [PortSpec(443, "TCP", "https", 8443)], {"app": "payments"},
                                    labels={"app": "payments"}))
    for svc in services:
        if svc.selector:
            svc.endpoints = [p.key for p in pods if not p.host_network
                             and all(p.labels.get(k) == v for k, v in svc.selector.items())]

    sgps = []
    if vpc:
        # Two policies select the payments pods: the RC unions their groups (helper.go).
        sgps = [SecurityGroupPolicySpec("shop", "payments-sgp", {"app": "payments"}, ["payments-sg"]),
                SecurityGroupPolicySpec("shop", "db-clients-sgp", {"app": "payments"}, ["db-clients-sg"])]

    return LabSpec(
        name=name, flavor=flavor, cluster_domain=cluster_domain, region="us-west-2",
        vpc_cidr="10.0.0.0/16" if vpc else "172.18.0.0/16", node_subnet=str(node_subnet),
        gateway_ip=gateway, service_cidr=svc_cidr, pod_cidr=pod_cidr,
        pod_gateway=VPC_CNI_GATEWAY if vpc else "", dns_service_ip=dns_ip,
        kubernetes_service_ip=k8s_ip, apiserver_ips=api_ips, external_ip=EXTERNAL_HOST_IP,
        underlay_mtu=underlay_mtu, pod_mtu=pod_mtu, nodes=node_specs, pods=pods,
        services=services, security_group_policies=sgps, cluster_name=f"netconform-{name}",
    )


class _PodIpAllocator:
    def __init__(self, vpc: bool, nodes: list[NodeSpec]):
        self.vpc = vpc
        self.next_vpc = ipaddress.ip_address("10.0.1.10")
        self.per_node = {n.name: 2 for n in nodes}

    def next(self, node: NodeSpec) -> str:
        if self.vpc:
            ip, self.next_vpc = self.next_vpc, self.next_vpc + 1
            return str(ip)
        host = self.per_node[node.name]
        if host > 254:
            raise ValueError(f"node {node.name} has no free pod IP left in {node.pod_cidr}")
        self.per_node[node.name] = host + 1
        return str(ipaddress.ip_network(node.pod_cidr).network_address + host)


class _ServiceIpAllocator:
    def __init__(self, cidr: str):
        self.next_ip = ipaddress.ip_network(cidr).network_address + 100

    def next(self) -> str:
        ip, self.next_ip = self.next_ip, self.next_ip + 1
        return str(ip)
