"""What a run diagnoses: target pods and nodes, resolved from the cluster snapshot (pure).

>>> plan = plan_targets(snap, pod_refs=[("default", "web-0")])
>>> [p.key for p in plan.pods], [n.name for n in plan.nodes]
(['default/web-0'], ['ip-10-0-0-10.us-west-2.compute.internal'])
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .analysis.selectors import parse_label_selector, selector_matches
from .errors import UsageError
from .kube import Snapshot

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "kube-flannel"})


@dataclass
class PodTarget:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    ips: list[str]
    phase: str
    host_network: bool
    host_ip: str
    container_ids: list[str]
    ports: list[dict]  # [{"name", "containerPort", "protocol"}]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def not_probeable(self) -> str:
        """Why pod-netns checks cannot run on this pod ('' when they can)."""
        if self.phase != "Running":
            return f"pod {self.key} is {self.phase or 'in an unknown phase'}, not Running: it has no network to test"
        if self.host_network:
            return f"pod {self.key} uses hostNetwork: it shares node {self.node}'s network namespace (see the node checks)"
        if not self.ip:
            return f"pod {self.key} has no IP yet (CNI ADD has not completed)"
        return ""

    def ip_of_family(self, family: int) -> str:
        return next((ip for ip in self.ips if (":" in ip) == (family == 6)), "")


@dataclass
class NodeTarget:
    name: str
    ip: str
    host_network_pods: list[PodTarget]  # how to find the node's netns on the node


@dataclass
class TargetPlan:
    pods: list[PodTarget]
    nodes: list[NodeTarget]
    no_pod_reason: str = ""  # set when there is no pod target: why pod checks skip


def pod_target(pod: dict) -> PodTarget:
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    ips = [p["ip"] for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    cids = [c.get("containerID", "") for c in status.get("containerStatuses") or [] if c.get("containerID")]
    ports = [p for c in spec.get("containers", []) for p in c.get("ports") or []]
    return PodTarget(
        namespace=meta.get("namespace", "default"), name=meta["name"], uid=meta.get("uid", ""),
        node=spec.get("nodeName", ""), ip=status.get("podIP", ""), ips=ips,
        phase=status.get("phase", ""), host_network=bool(spec.get("hostNetwork")),
        host_ip=status.get("hostIP", ""), container_ids=cids, ports=ports,
        labels=dict(meta.get("labels") or {}),
    )


# -- the plan ---------------------------------------------------------------------------------
def plan_targets(snap: Snapshot, *, pod_refs: list[tuple[str, str]] = (), selector: str = "",
                 namespace: str = "", node_names: list[str] = (), lab_default: bool = False) -> TargetPlan:
    """Resolve the run's targets. Unknown pods or nodes are usage errors (one line each)."""
    pods: list[PodTarget] = []
    for ns, name in pod_refs:
        pod = snap.pod(ns, name)
        if pod is None:
            if ns not in snap.namespaces():
                raise UsageError(f"--pod {ns}/{name}: namespace {ns!r} does not exist (or has no pods) "
                                 f"in context {snap.context}")
            raise UsageError(f"--pod {ns}/{name}: no such pod in namespace {ns} (context {snap.context})")
        pods.append(pod_target(pod))
    if selector:
        try:
            reqs = parse_label_selector(selector)
        except ValueError as e:
            raise UsageError(f"--selector {selector!r}: {e} (e.g. app=web,tier in (a,b),!legacy)") from None
        chosen = [pod_target(p) for p in snap.pods
                  if (not namespace or p["metadata"].get("namespace") == namespace)
                  and selector_matches(reqs, p["metadata"].get("labels") or {})]
        if not chosen:
            where = f" in namespace {namespace}" if namespace else ""
            raise UsageError(f"--selector {selector!r} matches no pod{where}")
        pods += chosen
    elif namespace and not pod_refs:
        raise UsageError("--namespace narrows --selector; give --selector (or --pod NS/NAME)")
    no_pod_reason = ""
    if not pods and not pod_refs and not selector:
        if lab_default:
            pods = [pod_target(p) for p in snap.pods
                    if p["metadata"].get("namespace") not in SYSTEM_NAMESPACES
                    and not p.get("spec", {}).get("hostNetwork")
                    and p.get("status", {}).get("phase") == "Running"]
        else:
            no_pod_reason = ("no target pod: give --pod NS/NAME or --selector LABELS [--namespace NS] "
                             "to run the pod checks")
    pods = list({p.key: p for p in pods}.values())

    # Node checks follow the target pods; with no target at all they cover every node (on a
    # node, or as an in-cluster Job, that includes the local one).
    wanted = list(node_names) or sorted({p.node for p in pods if p.node}) or (
        [] if pod_refs or selector else sorted(n["metadata"]["name"] for n in snap.nodes))
    nodes = []
    for name in wanted:
        node = snap.node(name)
        if node is None and name in node_names:
            raise UsageError(f"--node {name}: no such node in context {snap.context}")
        ip = next((a["address"] for a in (node or {}).get("status", {}).get("addresses", [])
                   if a.get("type") == "InternalIP"), "")
        hostnet = [pod_target(p) for p in snap.pods_on(name)
                   if p.get("spec", {}).get("hostNetwork") and p.get("status", {}).get("phase") == "Running"]
        nodes.append(NodeTarget(name=name, ip=ip, host_network_pods=hostnet))
    return TargetPlan(pods=pods, nodes=nodes, no_pod_reason=no_pod_reason)
