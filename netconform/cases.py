"""What each reachability check runs against, derived from the cluster snapshot (pure).

Nothing here is assumed about the cluster: the DNS service is found by its kube-dns label, the
apiserver endpoints come from the `kubernetes` Service's EndpointSlices, the CoreDNS replicas
from kube-dns's, and service ports from the Service objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .analysis.endpoints import service_ports
from .kube import Snapshot
from .targets import PodTarget, pod_target


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    name: str  # "ns/pod" for pod endpoints, else the IP
    node: str = ""

    @property
    def id(self) -> str:
        short = self.name.split("/")[-1]
        return f"{short}({self.ip}:{self.port})" if short != self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    cluster_ip: str  # "None" for headless
    port: int
    protocol: str
    port_name: str
    endpoints: tuple[Endpoint, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def id(self) -> str:
        return f"{self.key}:{self.port}/{self.protocol.lower()}"

    @property
    def is_dns(self) -> bool:
        return self.port == 53


def _svc_ports(snap: Snapshot, svc: dict) -> list[ServicePort]:
    meta, spec = svc["metadata"], svc.get("spec", {})
    ns, name = meta.get("namespace", "default"), meta["name"]
    groups = [g for g in service_ports(snap.slices_for(ns, name)) if g.address_type == "IPv4"]
    out = []
    for p in spec.get("ports", []):
        proto = p.get("protocol", "TCP")
        eps = []
        for g in groups:
            if (g.port_name or "") == (p.get("name") or "") and (g.protocol or proto) == proto:
                for e in g.ready:
                    target = e.target.split(" ", 1)[1] if e.target and " " in e.target else e.address
                    eps.append(Endpoint(e.address, e.port or p.get("targetPort") or p["port"], target, e.node or ""))
        out.append(ServicePort(ns, name, spec.get("clusterIP", ""), int(p["port"]), proto,
                               p.get("name") or "", tuple(eps)))
    return out


def kube_dns_service(snap: Snapshot) -> dict | None:
    """The cluster DNS Service: label k8s-app=kube-dns in kube-system (CoreDNS and kube-dns both)."""
    for s in snap.services:
        m = s["metadata"]
        if m.get("namespace") == "kube-system" and (m.get("labels") or {}).get("k8s-app") == "kube-dns":
            return s
    return snap.service("kube-system", "kube-dns")


def dns_service_ip(snap: Snapshot) -> str:
    svc = kube_dns_service(snap)
    return svc["spec"].get("clusterIP", "") if svc else ""


def dns_service_key(snap: Snapshot) -> str:
    """ "kube-system/kube-dns" (or whatever the cluster DNS Service is called)."""
    svc = kube_dns_service(snap)
    return f"{svc['metadata'].get('namespace', 'kube-system')}/{svc['metadata']['name']}" if svc else "kube-system/kube-dns"


def dns_replicas(snap: Snapshot, protocol: str = "UDP") -> list[Endpoint]:
    svc = kube_dns_service(snap)
    if not svc:
        return []
    for sp in _svc_ports(snap, svc):
        if sp.port == 53 and sp.protocol == protocol:
            return list(sp.endpoints)
    return []


def kubernetes_service(snap: Snapshot) -> ServicePort | None:
    svc = snap.service("default", "kubernetes")
    if not svc:
        return None
    ports = [p for p in _svc_ports(snap, svc) if p.protocol == "TCP"]
    return next((p for p in ports if p.port_name == "https"), ports[0] if ports else None)


def apiserver_endpoints(snap: Snapshot) -> list[Endpoint]:
    svc = kubernetes_service(snap)
    return list(svc.endpoints) if svc else []


def service_cases(snap: Snapshot, refs: list[tuple[str, str]]) -> list[ServicePort]:
    """Ports of the services to connect to: the named ones, or kube-dns and kubernetes."""
    chosen: list[dict] = []
    if refs:
        for ns, name in refs:
            svc = snap.service(ns, name)
            if svc is None:
                from .errors import UsageError

                raise UsageError(f"--service {ns}/{name}: no such service (context {snap.context})")
            chosen.append(svc)
    else:
        chosen = [s for s in (kube_dns_service(snap), snap.service("default", "kubernetes")) if s]
    return [p for svc in chosen for p in _svc_ports(snap, svc)]


def headless_service(snap: Snapshot, prefer_namespace: str = "") -> tuple[str, str, list[str]] | None:
    """A headless service with ready endpoints, as (namespace, name, ready IPs), if any."""
    from .analysis.endpoints import ready_addresses

    found = []
    for s in snap.services:
        if s.get("spec", {}).get("clusterIP") != "None":
            continue
        ns, name = s["metadata"].get("namespace", "default"), s["metadata"]["name"]
        ips = ready_addresses(snap.slices_for(ns, name), ns, name)
        if ips:
            found.append((ns != prefer_namespace, ns, name, ips))
    if not found:
        return None
    _, ns, name, ips = sorted(found)[0]
    return ns, name, ips


@dataclass(frozen=True)
class PodPair:
    src: PodTarget
    dst: PodTarget
    relation: str  # "same-node" | "other-node" | "chosen"

    @property
    def id(self) -> str:
        return f"{self.src.key}-to-{self.dst.key}"


def pod_pairs(snap: Snapshot, sources: list[PodTarget], dst_refs: list[tuple[str, str]] = ()) -> list[PodPair]:
    """Each source pod with --dst-pod destinations, or by default one pod on the same node and
    one on each other node (workload pods first, by name, so the choice is stable)."""
    pairs: list[PodPair] = []
    candidates = sorted(
        (pod_target(p) for p in snap.pods
         if not p.get("spec", {}).get("hostNetwork") and p.get("status", {}).get("phase") == "Running"
         and p.get("status", {}).get("podIP")),
        key=lambda t: (t.namespace in ("kube-system", "kube-flannel"), not t.ports, t.key))
    for src in sources:
        if dst_refs:
            for ns, name in dst_refs:
                raw = snap.pod(ns, name)
                if raw is None:
                    from .errors import UsageError

                    raise UsageError(f"--dst-pod {ns}/{name}: no such pod (context {snap.context})")
                pairs.append(PodPair(src, pod_target(raw), "chosen"))
            continue
        nodes = sorted({c.node for c in candidates})
        for node in nodes:
            dst = next((c for c in candidates if c.node == node and c.key != src.key), None)
            if dst is not None:
                pairs.append(PodPair(src, dst, "same-node" if node == src.node else "other-node"))
    return pairs
