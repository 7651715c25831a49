"""The lab's Kubernetes API objects, derived from a `LabSpec`.

`objects_from_spec(spec, ca_pem=..., api_server_url=..., created=...)` returns plain dicts shaped
like a real apiserver's JSON (EKS-like for the vpc-cni flavour, kubeadm-like for flannel), complete
enough for the kubernetes 37 client's strict pydantic models and for `kubectl describe`.

Runtime-created pods go through `prepare_new_pod` (server-side defaults, Pending) and
`mark_pod_running` (scheduled, IPs, container statuses); `pod_lifecycle_events` gives the kubelet
and scheduler events such a pod would have.

>>> objs = objects_from_spec(build_spec(), ca_pem=ca.pem.decode(), api_server_url="https://127.0.0.1:6443",
...                         created=datetime.now(timezone.utc))
>>> [o["kind"] for o in objs][:3]
['Namespace', 'Namespace', 'Namespace']

`API_RESOURCES` lists the built-in resource types the lab API serves (the CRDs add theirs).
"""
from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from netconform.lab.topology import LabSpec, NodeSpec, PodSpec, PortSpec, ServiceSpec

KUBERNETES_VERSION = "v1.32.0"
EKS_KUBELET_VERSION = "v1.32.0-eks-aeac579"
ZONE = "a"  # every lab node sits in <region>a: the lab has one node subnet
SGFP_RESOURCE = "vpc.amazonaws.com/pod-eni"
POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"
CRD_GROUP = "vpcresources.k8s.aws"
# Branch ENI capacity of m5.large (RC pkg/aws/vpc/limits.go, BranchInterface) and its max pods.
TRUNK_INSTANCE_TYPE, TRUNK_BRANCHES, TRUNK_MAX_PODS = "m5.large", 9, 29

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery rand.String alphabet
_DROP_FROM_SELECTOR = ("pod-template-hash", "controller-revision-hash",
                       "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index")


# -- resource types ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceType:
    """One REST resource: what discovery advertises and what the store keys objects by."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(_VERBS)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """The kubectl spelling: `pods`, `deployments.apps`, `cninodes.vpcresources.k8s.aws`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> list[dict[str, Any]]:
        """APIResource entries (the resource and its subresources) for /api/v1 or /apis/g/v."""
        hash_ = hashlib.sha256(self.key.encode()).digest()[:8]
        out: list[dict[str, Any]] = [{
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": list(self.verbs),
            "storageVersionHash": base64.b64encode(hash_).decode(),
        }]
        if self.short_names:
            out[0]["shortNames"] = list(self.short_names)
        if self.categories:
            out[0]["categories"] = list(self.categories)
        for sub in self.subresources:
            verbs = {"exec": ["create", "get"], "log": ["get"]}.get(sub, ["get", "patch", "update"])
            kind = {"exec": "PodExecOptions", "log": "Pod"}.get(sub, self.kind)
            out.append({"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                        "kind": kind, "verbs": verbs})
        return out


def _rt(group: str, version: str, kind: str, plural: str, namespaced: bool = True,
        short: tuple[str, ...] = (), cats: tuple[str, ...] = (), subs: tuple[str, ...] = (),
        verbs: tuple[str, ...] = tuple(_VERBS)) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, short, cats, subs, verbs)


API_RESOURCES: tuple[ResourceType, ...] = (
    _rt("", "v1", "Pod", "pods", short=("po",), cats=("all",), subs=("exec", "log", "status")),
    _rt("", "v1", "Service", "services", short=("svc",), cats=("all",), subs=("status",)),
    _rt("", "v1", "Endpoints", "endpoints", short=("ep",)),
    _rt("", "v1", "Node", "nodes", namespaced=False, short=("no",), subs=("status",)),
    _rt("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",), subs=("status",)),
    _rt("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _rt("", "v1", "Secret", "secrets"),
    _rt("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _rt("", "v1", "Event", "events", short=("ev",)),
    _rt("apps", "v1", "Deployment", "deployments", short=("deploy",), cats=("all",), subs=("status",)),
    _rt("apps", "v1", "ReplicaSet", "replicasets", short=("rs",), cats=("all",), subs=("status",)),
    _rt("apps", "v1", "StatefulSet", "statefulsets", short=("sts",), cats=("all",), subs=("status",)),
    _rt("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), cats=("all",), subs=("status",)),
    _rt("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    _rt("coordination.k8s.io", "v1", "Lease", "leases"),
    # Answered, never stored: the lab token may do everything (kubectl auth can-i).
    _rt("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False,
        verbs=("create",)),
    _rt("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        namespaced=False, short=("crd", "crds"), subs=("status",)),
)


def resource_type_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition object serves (one per served version)."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for v in spec.get("versions", []):
        if not v.get("served", True):
            continue
        out.append(ResourceType(
            group=spec["group"], version=v["name"], kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames", ())), categories=tuple(names.get("categories", ())),
            subresources=("status",) if "status" in (v.get("subresources") or {}) else (),
            printer_columns=tuple(v.get("additionalPrinterColumns", ())),
        ))
    return out


# -- small helpers ----------------------------------------------------------------------------

def ts(when: datetime) -> str:
    """RFC 3339 in UTC with a Z, second precision: the apiserver's metav1.Time format."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def _after(created: datetime, seconds: float) -> datetime:
    """`created` + `seconds`, but never in the future: a lab made a moment ago has everything
    created "now" rather than AGE `<invalid>`."""
    return min(created + timedelta(seconds=seconds), now_utc())


def _seeded(seed: str, n: int, alphabet: str = _ALPHANUMS) -> str:
    h = hashlib.sha256(seed.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in h[:n])


def _hex(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def _lab_seed(spec: LabSpec) -> str:
    # Pod UIDs are random per build_spec() and survive to_dict/from_dict, so UIDs derived from
    # them differ between two labs of the same name but stay stable for one lab's lifetime.
    return spec.pods[0].uid if spec.pods else spec.name


def object_uid(spec: LabSpec, *parts: str) -> str:
    """A stable UID for a lab object that the spec does not carry one for (workloads, nodes…)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"netconform-lab://{_lab_seed(spec)}/" + "/".join(parts)))


def _meta(name: str, uid: str, created: datetime, namespace: str | None = None,
          labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
          owner: dict[str, Any] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": "1", "creationTimestamp": ts(created)}
    if namespace is not None:
        m["namespace"] = namespace
    if labels:
        m["labels"] = dict(labels)
    if annotations:
        m["annotations"] = dict(annotations)
    if owner:
        m["ownerReferences"] = [owner]
    return m


def _owner(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def instance_id(spec: LabSpec, node: NodeSpec) -> str:
    """The node's EC2 instance id: from the AWS seed, else a stable stand-in of the same shape."""
    return node.instance_id or "i-0" + _hex(f"{_lab_seed(spec)}/{node.name}/instance", 16)


def branch_eni_id(spec: LabSpec, pod: PodSpec) -> str:
    return pod.branch_eni_id or "eni-0" + _hex(f"{_lab_seed(spec)}/{pod.key}/branch", 16)


def sg_ids(spec: LabSpec, names: list[str]) -> list[str]:
    """Security group ids for names (the AWS seed fills spec.sg_ids; unseeded names stay names)."""
    return [spec.sg_ids.get(n, n) for n in names]


def _image_id(image: str) -> str:
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _zone(spec: LabSpec) -> str:
    return spec.region + ZONE


# -- namespaces, config maps, service accounts ------------------------------------------------

def namespace_object(name: str, uid: str, created: datetime) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta(name, uid, created, labels={"kubernetes.io/metadata.name": name}),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def _configmap(spec: LabSpec, ns: str, name: str, data: dict[str, str], created: datetime,
               labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(name, object_uid(spec, "cm", ns, name), created, ns, labels, annotations),
            "data": data}


def corefile(cluster_domain: str) -> str:
    """CoreDNS's stock Corefile (kubeadm and EKS ship the same one)."""
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n"
        "       lameduck 5s\n"
        "    }\n"
        "    ready\n"
        f"    kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{\n"
        "       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n"
        "       ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n"
        "       max_concurrent 1000\n"
        "    }\n"
        "    cache 30\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def kube_proxy_config(spec: LabSpec) -> str:
    """A KubeProxyConfiguration in iptables mode, as in EKS's kube-proxy-config ConfigMap."""
    return (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
        "bindAddress: 0.0.0.0\n"
        "clientConnection:\n"
        "  acceptContentTypes: \"\"\n"
        "  burst: 10\n"
        "  contentType: application/vnd.kubernetes.protobuf\n"
        "  kubeconfig: /var/lib/kube-proxy/kubeconfig\n"
        "  qps: 5\n"
        f"clusterCIDR: \"{spec.pod_cidr}\"\n"
        "configSyncPeriod: 15m0s\n"
        "conntrack:\n"
        "  maxPerCore: 32768\n"
        "  min: 131072\n"
        "  tcpCloseWaitTimeout: 1h0m0s\n"
        "  tcpEstablishedTimeout: 24h0m0s\n"
        "enableProfiling: false\n"
        "healthzBindAddress: 0.0.0.0:10256\n"
        "hostnameOverride: \"\"\n"
        "iptables:\n"
        "  masqueradeAll: false\n"
        "  masqueradeBit: 14\n"
        "  minSyncPeriod: 1s\n"
        "  syncPeriod: 30s\n"
        "ipvs:\n"
        "  excludeCIDRs: null\n"
        "  minSyncPeriod: 0s\n"
        "  scheduler: \"\"\n"
        "  syncPeriod: 30s\n"
        "kind: KubeProxyConfiguration\n"
        "metricsBindAddress: 0.0.0.0:10249\n"
        "mode: \"iptables\"\n"
        "nodePortAddresses: null\n"
        "oomScoreAdj: -998\n"
        "portRange: \"\"\n"
    )


def _flannel_net_conf(spec: LabSpec) -> str:
    return json.dumps({"Network": spec.pod_cidr, "EnableNFTables": False,
                       "Backend": {"Type": "vxlan"}}, indent=2) + "\n"


_ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as "
    "the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of "
    "Kubernetes clusters.")

_FLANNEL_CNI_CONF = json.dumps({
    "name": "cbr0", "cniVersion": "0.3.1",
    "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}}],
}, indent=2) + "\n"


# -- nodes ------------------------------------------------------------------------------------

def node_object(spec: LabSpec, node: NodeSpec, created: datetime) -> dict[str, Any]:
    """A Node as kubelet (+ the AWS cloud provider / flanneld) reports it."""
    vpc = spec.flavor == "vpc-cni"
    zone = _zone(spec)
    iid = instance_id(spec, node)
    labels = {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": node.name,
        "node.kubernetes.io/instance-type": TRUNK_INSTANCE_TYPE if vpc else "t3.large",
        "beta.kubernetes.io/instance-type": TRUNK_INSTANCE_TYPE if vpc else "t3.large",
        "topology.kubernetes.io/region": spec.region, "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": spec.region,
        "failure-domain.beta.kubernetes.io/zone": zone,
    }
    annotations = {
        "alpha.kubernetes.io/provided-node-ip": node.ip,
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    if vpc:
        labels.update({
            "eks.amazonaws.com/capacityType": "ON_DEMAND",
            "eks.amazonaws.com/nodegroup": f"{spec.cluster_name or spec.name}-ng",
            "eks.amazonaws.com/nodegroup-image": "ami-0" + _hex(spec.name + "/ami", 16),
            "topology.k8s.aws/zone-id": "usw2-az1",
            "k8s.io/cloud-provider-aws": _hex(spec.cluster_name or spec.name, 32),
        })
    else:
        annotations.update({
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": json.dumps({"VNI": 1, "VtepMAC": node.vtep_mac},
                                                                separators=(",", ":")),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": node.ip,
            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
        })
    capacity = {"cpu": "2", "ephemeral-storage": "83873772Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                "memory": "7910348Ki" if vpc else "8139636Ki", "pods": str(TRUNK_MAX_PODS if vpc else 110)}
    allocatable = dict(capacity, cpu="1930m", **{"ephemeral-storage": "76224326324"},
                       memory="7220172Ki" if vpc else "8037236Ki")
    if vpc and node.trunk:
        capacity[SGFP_RESOURCE] = allocatable[SGFP_RESOURCE] = str(TRUNK_BRANCHES)
    ready_at = _after(created, 20)
    conditions = []
    if not vpc:
        conditions.append({"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                           "message": "Flannel is running on this node",
                           "lastHeartbeatTime": ts(ready_at), "lastTransitionTime": ts(ready_at)})
    for ctype, reason, msg in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ):
        conditions.append({"type": ctype, "status": "False", "reason": reason, "message": msg,
                           "lastHeartbeatTime": ts(now_utc()), "lastTransitionTime": ts(created)})
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status",
                       "lastHeartbeatTime": ts(now_utc()), "lastTransitionTime": ts(ready_at)})
    addresses = [{"type": "InternalIP", "address": node.ip}]
    if vpc:
        addresses.append({"type": "InternalDNS", "address": node.name})
    addresses.append({"type": "Hostname", "address": node.name})
    node_spec: dict[str, Any] = {}
    if vpc or node.instance_id:
        node_spec["providerID"] = f"aws:///{zone}/{iid}"
    if node.pod_cidr:
        node_spec["podCIDR"] = node.pod_cidr
        node_spec["podCIDRs"] = [node.pod_cidr]
    images = sorted({p.image for p in spec.pods_on(node.name)})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": _meta(node.name, object_uid(spec, "node", node.name), created,
                          labels=labels, annotations=annotations),
        "spec": node_spec,
        "status": {
            "addresses": addresses, "allocatable": allocatable, "capacity": capacity,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": [{"names": [_image_id(i), i], "sizeBytes": 20_000_000 + len(i) * 1000} for i in images],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{_lab_seed(spec)}/{node.name}/boot")),
                "containerRuntimeVersion": "containerd://1.7.23" if vpc else "containerd://1.7.22",
                "kernelVersion": "6.1.115-126.197.amzn2023.x86_64" if vpc else "6.1.0-28-amd64",
                "kubeProxyVersion": EKS_KUBELET_VERSION if vpc else KUBERNETES_VERSION,
                "kubeletVersion": EKS_KUBELET_VERSION if vpc else KUBERNETES_VERSION,
                "machineID": _hex(f"{node.name}/machine", 32),
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.6.20241212" if vpc else "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "ec2" + _hex(f"{node.name}/sysuuid", 5) + "-" + _hex(node.name, 4) + "-"
                              + _hex(node.name + "2", 4) + "-" + _hex(node.name + "3", 4) + "-"
                              + _hex(node.name + "4", 12),
            },
        },
    }


def cninode_object(spec: LabSpec, node: NodeSpec, node_uid: str, created: datetime) -> dict[str, Any]:
    """The CNINode ipamd keeps per node; the SecurityGroupsForPods feature marks trunk nodes."""
    body: dict[str, Any] = {}
    if node.trunk:
        body["features"] = [{"name": "SecurityGroupsForPods"}]
    meta = _meta(node.name, object_uid(spec, "cninode", node.name), created,
                 owner={"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid})
    meta["finalizers"] = ["networking.k8s.aws/resource-cleanup"]
    return {"apiVersion": f"{CRD_GROUP}/v1alpha1", "kind": "CNINode", "metadata": meta, "spec": body}


def lease_object(spec: LabSpec, node: NodeSpec, node_uid: str, created: datetime) -> dict[str, Any]:
    """The kubelet's heartbeat Lease in kube-node-lease (kubectl describe node shows it)."""
    renew = now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": _meta(node.name, object_uid(spec, "lease", node.name), created, "kube-node-lease",
                              owner={"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid}),
            "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": renew}}


# -- pods -------------------------------------------------------------------------------------

def _pod_created(spec: LabSpec, pod: PodSpec, created: datetime) -> datetime:
    base = {"kube-proxy": 25, "aws-node": 25, "kube-flannel": 25, "coredns": 60}.get(pod.role, 300)
    return _after(created, base + spec.pods.index(pod) if pod in spec.pods else base)


def _resources(pod: PodSpec) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if pod.role == "coredns":
        res = {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}}
    elif pod.role == "kube-proxy":
        res = {"requests": {"cpu": "100m"}}
    elif pod.role == "aws-node":
        res = {"requests": {"cpu": "25m"}}
    elif pod.role == "kube-flannel":
        res = {"requests": {"cpu": "100m", "memory": "50Mi"}}
    elif pod.qos_class == "Guaranteed":
        res = {"limits": {"cpu": "250m", "memory": "256Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}
    elif pod.qos_class == "Burstable":
        res = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if pod.sgfp:
        # The RC's mutating webhook adds the branch ENI resource to containers[0] only.
        res = {k: dict(v) for k, v in res.items()}
        res.setdefault("limits", {})[SGFP_RESOURCE] = "1"
        res.setdefault("requests", {})[SGFP_RESOURCE] = "1"
    return res


def _container_ports(ports: list[PortSpec]) -> list[dict[str, Any]]:
    out = []
    for p in ports:
        d: dict[str, Any] = {"containerPort": p.port, "protocol": p.protocol}
        if p.name:
            d["name"] = p.name
        out.append(d)
    return out


def _container(pod: PodSpec, spec: LabSpec, api_volume: str) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": pod.container_name, "image": pod.image, "imagePullPolicy": "IfNotPresent",
        "resources": _resources(pod), "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": api_volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "readOnly": True}],
    }
    if pod.ports:
        c["ports"] = _container_ports(pod.ports)
    if pod.role == "coredns":
        c["args"] = ["-conf", "/etc/coredns/Corefile"]
        c["volumeMounts"].insert(0, {"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True})
        c["livenessProbe"] = {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                              "initialDelaySeconds": 60, "timeoutSeconds": 5, "periodSeconds": 10,
                              "successThreshold": 1, "failureThreshold": 5}
        c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"},
                               "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                               "failureThreshold": 3}
    elif pod.role == "kube-proxy":
        c["command"] = ["kube-proxy", "--v=2", "--config=/var/lib/kube-proxy-config/config",
                        "--hostname-override=$(NODE_NAME)"]
        c["env"] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                     "fieldPath": "spec.nodeName"}}}]
        c["securityContext"] = {"privileged": True}
    elif pod.role == "aws-node":
        env = {
            "ADDITIONAL_ENI_TAGS": "{}", "AWS_VPC_CNI_NODE_PORT_SUPPORT": "true",
            "AWS_VPC_ENI_MTU": str(spec.pod_mtu), "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "false",
            "AWS_VPC_K8S_CNI_EXTERNALSNAT": "false", "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
            "AWS_VPC_K8S_CNI_LOG_FILE": "/host/var/log/aws-routed-eni/ipamd.log",
            "AWS_VPC_K8S_CNI_VETHPREFIX": "eni",
            "AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/aws-routed-eni/plugin.log",
            "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG", "CLUSTER_NAME": spec.cluster_name or spec.name,
            "DISABLE_INTROSPECTION": "false", "DISABLE_METRICS": "false",
            "DISABLE_NETWORK_RESOURCE_PROVISIONING": "false", "ENABLE_IPv4": "true", "ENABLE_IPv6": "false",
            "ENABLE_POD_ENI": "true", "ENABLE_PREFIX_DELEGATION": "false",
            "POD_SECURITY_GROUP_ENFORCING_MODE": "strict", "VPC_CNI_VERSION": pod.image.rsplit(":", 1)[-1],
            "WARM_ENI_TARGET": "1", "WARM_PREFIX_TARGET": "1",
        }
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
        c["env"].append({"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                            "fieldPath": "spec.nodeName"}}})
        c["securityContext"] = {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}
    elif pod.role == "kube-flannel":
        c["command"] = ["/opt/bin/flanneld"]
        c["args"] = ["--ip-masq", "--kube-subnet-mgr"]
        c["env"] = [{"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
                    for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"))]
        c["env"].append({"name": "EVENT_QUEUE_DEPTH", "value": "5000"})
        c["securityContext"] = {"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}
    return c


def _api_access_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.namespace"}}]}},
    ]}}


def pod_eni_annotation(spec: LabSpec, pod: PodSpec) -> str:
    """The RC's `vpc.amazonaws.com/pod-eni` JSON list (eks-networking.md §1.4) for an SGFP pod."""
    eni = branch_eni_id(spec, pod)
    return json.dumps([{
        "eniId": eni, "ifAddress": pod.branch_mac, "privateIp": pod.ip, "ipv6Addr": "",
        "vlanId": pod.vlan_id, "subnetCidr": spec.node_subnet, "subnetV6Cidr": "",
        "associationID": "trunk-assoc-0" + _hex(f"{eni}/assoc", 16),
    }], separators=(",", ":"))


def workload_uid(spec: LabSpec, kind: str, namespace: str, name: str) -> str:
    """UID of a lab workload object (Deployment, ReplicaSet, StatefulSet, DaemonSet)."""
    return object_uid(spec, kind, namespace, name)


def pod_object(spec: LabSpec, pod: PodSpec, *, created: datetime, started: datetime | None = None,
               base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Running Pod object for one spec pod.

    Without `base`, the whole object is built from the spec: `created` is the cluster's creation
    time (the pod is stamped a little after it) and owner references carry the UID
    `workload_uid` gives the pod's ReplicaSet/StatefulSet/DaemonSet. With `base` (a pod a client
    created through the API, e.g. from `prepare_new_pod`), that object is kept as sent and only
    bound to the spec pod's node, IP and container id, started at `started` or else `created`.
    """
    node = spec.node(pod.node)
    if base is not None:
        obj = copy.deepcopy(base)
        obj["apiVersion"], obj["kind"] = "v1", "Pod"
        meta = obj.setdefault("metadata", {})
        meta.setdefault("name", pod.name)
        meta.setdefault("namespace", pod.namespace)
        meta.setdefault("uid", pod.uid)
        meta.setdefault("creationTimestamp", ts(created))
        if pod.sgfp:
            meta.setdefault("annotations", {})[POD_ENI_ANNOTATION] = pod_eni_annotation(spec, pod)
        containers = obj.get("spec", {}).get("containers") or [{}]
        ids = {containers[0].get("name", pod.container_name): pod.container_id}
        return mark_pod_running(obj, node_name=node.name, host_ip=node.ip, pod_ip=pod.ip,
                                container_ids=ids, started=started or created)
    pod_created = _pod_created(spec, pod, created)
    api_volume = "kube-api-access-" + _seeded(pod.uid, 5)
    annotations: dict[str, str] = {}
    if pod.sgfp:
        annotations[POD_ENI_ANNOTATION] = pod_eni_annotation(spec, pod)
    owner = None
    if pod.owner_kind:
        owner = _owner("apps/v1", pod.owner_kind, pod.owner_name,
                       workload_uid(spec, pod.owner_kind, pod.namespace, pod.owner_name))
    meta = _meta(pod.name, pod.uid, pod_created, pod.namespace, pod.labels, annotations, owner)
    if pod.owner_kind in ("ReplicaSet", "DaemonSet"):
        meta["generateName"] = f"{pod.owner_name}-"
    body: dict[str, Any] = {
        "containers": [_container(pod, spec, api_volume)],
        "dnsPolicy": "ClusterFirstWithHostNet" if pod.host_network else "ClusterFirst",
        "enableServiceLinks": True,
        "nodeName": pod.node,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": pod.service_account,
        "serviceAccountName": pod.service_account,
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
        ],
        "volumes": [_api_access_volume(api_volume)],
    }
    if pod.host_network:
        body["hostNetwork"] = True
    if pod.owner_kind == "DaemonSet":
        body["priorityClassName"], body["priority"] = "system-node-critical", 2000001000
        body["tolerations"] = [{"operator": "Exists"}] + [
            {"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": e}
            for k, e in (("not-ready", "NoExecute"), ("unreachable", "NoExecute"), ("disk-pressure", "NoSchedule"),
                         ("memory-pressure", "NoSchedule"), ("pid-pressure", "NoSchedule"),
                         ("unschedulable", "NoSchedule"), ("network-unavailable", "NoSchedule"))]
        body["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                    "values": [pod.node]}]}]}}}
    if pod.role == "coredns":
        body["priorityClassName"], body["priority"] = "system-cluster-critical", 2000000000
        body["dnsPolicy"] = "Default"
        body["volumes"].insert(0, {"name": "config-volume", "configMap": {
            "name": "coredns", "defaultMode": 420, "items": [{"key": "Corefile", "path": "Corefile"}]}})
    if pod.owner_kind == "StatefulSet":
        body["hostname"], body["subdomain"] = pod.name, pod.owner_name
    if pod.role == "aws-node":
        init_env = [{"name": "DISABLE_TCP_EARLY_DEMUX", "value": "true"},
                    {"name": "ENABLE_IPv6", "value": "false"}]
        body["initContainers"] = [{
            "name": "aws-vpc-cni-init", "image": pod.image.replace("amazon-k8s-cni:", "amazon-k8s-cni-init:"),
            "imagePullPolicy": "IfNotPresent", "env": init_env, "resources": {"requests": {"cpu": "25m"}},
            "securityContext": {"privileged": True}, "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }]
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body, "status": {"phase": "Pending"}}
    obj["status"]["qosClass"] = qos_class(obj)
    start = started or _after(pod_created, 2)
    container_ids = {pod.container_name: pod.container_id}
    if pod.role == "aws-node":
        container_ids["aws-vpc-cni-init"] = _hex(pod.container_id + "/init", 64)
    return mark_pod_running(obj, node_name=node.name, host_ip=node.ip, pod_ip=pod.ip,
                            container_ids=container_ids, started=start)


def qos_class(pod: dict[str, Any]) -> str:
    """The pod's QoS class from its containers' cpu/memory requests and limits (extended resources
    such as vpc.amazonaws.com/pod-eni do not count)."""
    containers = pod.get("spec", {}).get("containers", []) + pod.get("spec", {}).get("initContainers", [])
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        limits = {k: v for k, v in (res.get("limits") or {}).items() if k in ("cpu", "memory")}
        requests = {k: v for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
        requests = {**limits, **requests}  # requests default to limits
        if limits or requests:
            any_set = True
        if set(limits) != {"cpu", "memory"} or any(requests.get(k) != v for k, v in limits.items()):
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_new_pod(pod: dict[str, Any], *, namespace: str, now: datetime | None = None) -> dict[str, Any]:
    """Apply the apiserver's defaults to a pod a client POSTs; returns a Pending pod (a copy)."""
    pod = copy.deepcopy(pod)
    now = now or now_utc()
    meta = pod.setdefault("metadata", {})
    meta["namespace"] = namespace
    meta.setdefault("uid", str(uuid.uuid4()))
    meta["creationTimestamp"] = ts(now)
    body = pod.setdefault("spec", {})
    sa = body.get("serviceAccountName") or body.get("serviceAccount") or "default"
    body["serviceAccountName"] = body["serviceAccount"] = sa
    body.setdefault("dnsPolicy", "ClusterFirst")
    body.setdefault("restartPolicy", "Always")
    body.setdefault("schedulerName", "default-scheduler")
    body.setdefault("securityContext", {})
    body.setdefault("terminationGracePeriodSeconds", 30)
    body.setdefault("enableServiceLinks", True)
    body.setdefault("preemptionPolicy", "PreemptLowerPriority")
    body.setdefault("priority", 0)
    tol = body.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tol):
            tol.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    for c in body.get("containers", []) + body.get("initContainers", []):
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest and "@" not in tag else "IfNotPresent")
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for p in c.get("ports", []):
            p.setdefault("protocol", "TCP")
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}
    return pod


def mark_pod_running(pod: dict[str, Any], *, node_name: str, host_ip: str, pod_ip: str,
                     container_ids: dict[str, str] | None = None,
                     started: datetime | None = None) -> dict[str, Any]:
    """Bind `pod` to `node_name` and give it the status kubelet reports for a Running pod.

    `container_ids` maps container names to 64-hex containerd ids (missing ones are derived from
    the pod UID). Init containers are reported as Completed. Modifies and returns `pod`.
    """
    started = started or now_utc()
    uid = pod["metadata"].get("uid", "")
    ids = dict(container_ids or {})
    body = pod.setdefault("spec", {})
    body["nodeName"] = node_name
    scheduled = started - timedelta(seconds=1)

    def cid(name: str) -> str:
        return "containerd://" + (ids.get(name) or _hex(f"{uid}/{name}", 64))

    init_statuses = [{
        "name": c["name"], "image": c.get("image", ""), "imageID": _image_id(c.get("image", "")),
        "containerID": cid(c["name"]), "ready": True, "restartCount": 0, "started": False,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "containerID": cid(c["name"]),
                                 "startedAt": ts(scheduled), "finishedAt": ts(started)}},
        "lastState": {},
    } for c in body.get("initContainers", [])]
    statuses = [{
        "name": c["name"], "image": c.get("image", ""), "imageID": _image_id(c.get("image", "")),
        "containerID": cid(c["name"]), "ready": True, "restartCount": 0, "started": True,
        "state": {"running": {"startedAt": ts(started)}}, "lastState": {},
    } for c in body.get("containers", [])]
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": ts(at)}
                  for t, at in (("PodReadyToStartContainers", started), ("Initialized", started),
                                ("Ready", started), ("ContainersReady", started), ("PodScheduled", scheduled))]
    status: dict[str, Any] = {
        "phase": "Running", "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "qosClass": qos_class(pod), "startTime": ts(scheduled),
        "containerStatuses": statuses,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    pod["status"] = status
    return pod


# -- events -----------------------------------------------------------------------------------

def event_object(*, involved: dict[str, Any], reason: str, message: str, when: datetime,
                 component: str, host: str = "", type_: str = "Normal", field_path: str = "",
                 namespace: str | None = None, seq: int = 0) -> dict[str, Any]:
    """A core/v1 Event about `involved` (a Pod/Node/... object dict)."""
    meta = involved["metadata"]
    ns = namespace or meta.get("namespace") or "default"
    # Like client-go's recorder: "<object>.<unix nanos in hex>"
    nanos = int(when.timestamp() * 1e9) + seq
    ref: dict[str, Any] = {"apiVersion": involved.get("apiVersion", "v1"), "kind": involved["kind"],
                           "name": meta["name"], "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    if field_path:
        ref["fieldPath"] = field_path
    ev: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": _meta(f"{meta['name']}.{nanos:x}",
                          str(uuid.uuid5(uuid.NAMESPACE_OID, f"{ref['uid']}/{nanos}")), when, ns),
        "involvedObject": ref, "reason": reason, "message": message, "type": type_,
        "source": {"component": component, **({"host": host} if host else {})},
        "firstTimestamp": ts(when), "lastTimestamp": ts(when), "count": 1, "eventTime": None,
        "reportingComponent": component, "reportingInstance": host,
    }
    return ev


def pod_lifecycle_events(pod: dict[str, Any], *, when: datetime | None = None,
                         kubelet_after: timedelta = timedelta(seconds=1)) -> list[dict[str, Any]]:
    """Scheduler and kubelet events of a pod that just started: Scheduled at `when`, then Pulled,
    Created, Started `kubelet_after` later."""
    when = when or now_utc()
    node = pod["spec"].get("nodeName", "")
    meta = pod["metadata"]
    out = [event_object(involved=pod, reason="Scheduled", component="default-scheduler", when=when,
                        message=f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")]
    for i, c in enumerate(pod["spec"].get("initContainers", []) + pod["spec"].get("containers", [])):
        fp = f"spec.{'initContainers' if i < len(pod['spec'].get('initContainers', [])) else 'containers'}" \
             f"{{{c['name']}}}"
        for j, (reason, msg) in enumerate((
                ("Pulled", f"Container image \"{c.get('image', '')}\" already present on machine"),
                ("Created", f"Created container: {c['name']}"),
                ("Started", f"Started container {c['name']}"))):
            out.append(event_object(involved=pod, reason=reason, message=msg, component="kubelet", host=node,
                                    when=when + kubelet_after, field_path=fp, seq=1 + i * 3 + j))
    return out


def _sgfp_events(spec: LabSpec, pod: PodSpec, obj: dict[str, Any], when: datetime) -> list[dict[str, Any]]:
    groups = " ".join(sg_ids(spec, pod.security_groups))
    return [
        event_object(involved=obj, reason="SecurityGroupRequested", component="vpc-resource-controller",
                     message=f"Pod will get the following Security Groups [{groups}]", when=when, seq=100),
        event_object(involved=obj, reason="ResourceAllocated", component="vpc-resource-controller",
                     message=f"Allocated {pod_eni_annotation(spec, pod)} to the pod",
                     when=when, seq=101),
    ]


# -- workloads --------------------------------------------------------------------------------

def _selector(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in _DROP_FROM_SELECTOR}


def _template(spec: LabSpec, pod: PodSpec, created: datetime) -> dict[str, Any]:
    """A pod template: the first pod's spec minus what the scheduler and kubelet add."""
    obj = pod_object(spec, pod, created=created)
    body = copy.deepcopy(obj["spec"])
    for k in ("nodeName", "serviceAccount", "volumes", "affinity", "tolerations", "preemptionPolicy",
              "priority", "enableServiceLinks", "hostname", "subdomain"):
        body.pop(k, None)
    for c in body["containers"] + body.get("initContainers", []):
        c.pop("volumeMounts", None)
    if pod.role == "coredns":
        body["volumes"] = [v for v in obj["spec"]["volumes"] if v["name"] == "config-volume"]
        body["containers"][0]["volumeMounts"] = [{"name": "config-volume", "mountPath": "/etc/coredns",
                                                  "readOnly": True}]
    labels = {k: v for k, v in pod.labels.items() if k not in ("statefulset.kubernetes.io/pod-name",
                                                                "apps.kubernetes.io/pod-index",
                                                                "controller-revision-hash")}
    if pod.owner_kind != "ReplicaSet":
        labels.pop("pod-template-hash", None)
    return {"metadata": {"labels": labels, "creationTimestamp": None}, "spec": body}


def _workloads(spec: LabSpec, created: datetime) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[PodSpec]] = defaultdict(list)
    for p in spec.pods:
        if p.workload_kind:
            groups[(p.workload_kind, p.namespace, p.workload_name)].append(p)
    out: list[dict[str, Any]] = []
    for (kind, ns, name), pods in groups.items():
        first = pods[0]
        n = len(pods)
        w_created = _pod_created(spec, first, created) - timedelta(seconds=5)
        uid = workload_uid(spec, kind, ns, name)
        sel = {"matchLabels": _selector(first.labels)}
        template = _template(spec, first, created)
        if kind == "Deployment":
            out.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {**_meta(name, uid, w_created, ns, _selector(first.labels),
                                     {"deployment.kubernetes.io/revision": "1"}), "generation": 1},
                "spec": {"replicas": n, "selector": sel, "template": _strip_hash(template),
                         "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10,
                         "strategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
                "status": {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                           "availableReplicas": n, "conditions": [
                               {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                "message": "Deployment has minimum availability.",
                                "lastUpdateTime": ts(w_created), "lastTransitionTime": ts(w_created)},
                               {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                "message": f'ReplicaSet "{first.owner_name}" has successfully progressed.',
                                "lastUpdateTime": ts(w_created), "lastTransitionTime": ts(w_created)}]},
            })
            rs_uid = workload_uid(spec, "ReplicaSet", ns, first.owner_name)
            rs_sel = {"matchLabels": _selector(first.labels) | {"pod-template-hash": first.labels.get(
                "pod-template-hash", "")}}
            out.append({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {**_meta(first.owner_name, rs_uid, w_created, ns, rs_sel["matchLabels"],
                                     {"deployment.kubernetes.io/desired-replicas": str(n),
                                      "deployment.kubernetes.io/max-replicas": str(n + max(1, n // 4)),
                                      "deployment.kubernetes.io/revision": "1"},
                                     _owner("apps/v1", "Deployment", name, uid)), "generation": 1},
                "spec": {"replicas": n, "selector": rs_sel, "template": template},
                "status": {"observedGeneration": 1, "replicas": n, "fullyLabeledReplicas": n,
                           "readyReplicas": n, "availableReplicas": n},
            })
        elif kind == "StatefulSet":
            rev = f"{name}-{_seeded(uid, 10)}"
            out.append({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {**_meta(name, uid, w_created, ns, _selector(first.labels)), "generation": 1},
                "spec": {"replicas": n, "selector": sel, "serviceName": name, "template": template,
                         "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
                         "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                         "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                                  "whenScaled": "Retain"}},
                "status": {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "currentReplicas": n,
                           "updatedReplicas": n, "availableReplicas": n, "currentRevision": rev,
                           "updateRevision": rev, "collisionCount": 0},
            })
        elif kind == "DaemonSet":
            out.append({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {**_meta(name, uid, w_created, ns, _selector(first.labels),
                                     {"deprecated.daemonset.template.generation": "1"}), "generation": 1},
                "spec": {"selector": sel, "template": template, "revisionHistoryLimit": 10,
                         "updateStrategy": {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}},
                "status": {"observedGeneration": 1, "currentNumberScheduled": n, "desiredNumberScheduled": n,
                           "numberAvailable": n, "numberMisscheduled": 0, "numberReady": n,
                           "updatedNumberScheduled": n},
            })
    return out


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    t["metadata"]["labels"].pop("pod-template-hash", None)
    return t


# -- services ---------------------------------------------------------------------------------

def _target(p: PortSpec) -> int:
    return p.target_port if p.target_port is not None else p.port


def service_object(spec: LabSpec, svc: ServiceSpec, created: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clusterIP": svc.cluster_ip, "clusterIPs": [svc.cluster_ip],
        "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "ports": [{**({"name": p.name} if p.name else {}), "port": p.port, "protocol": p.protocol,
                   "targetPort": _target(p)} for p in svc.ports],
        "sessionAffinity": "None", "type": "ClusterIP",
    }
    if svc.selector:
        body["selector"] = dict(svc.selector)
    annotations = None
    if svc.name == "kube-dns":
        annotations = {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(svc.name, service_uid(spec, svc), created, svc.namespace, svc.labels, annotations),
            "spec": body, "status": {"loadBalancer": {}}}


def service_uid(spec: LabSpec, svc: ServiceSpec) -> str:
    return object_uid(spec, "svc", svc.namespace, svc.name)


def _endpoint_ports(svc: ServiceSpec) -> list[dict[str, Any]]:
    return [{**({"name": p.name} if p.name else {}), "port": _target(p), "protocol": p.protocol}
            for p in svc.ports]


def _target_ref(pod: PodSpec) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid}


def endpoints_objects(spec: LabSpec, svc: ServiceSpec, created: datetime) -> list[dict[str, Any]]:
    """The Endpoints and the EndpointSlice of one service."""
    pods = spec.endpoint_pods(svc)
    ips = [k for k in svc.endpoints if "/" not in k]  # the kubernetes service: apiserver IPs
    labels = dict(svc.labels)
    if svc.headless:
        labels["service.kubernetes.io/headless"] = ""
    addresses: list[dict[str, Any]] = [{"ip": ip} for ip in ips]
    for p in pods:
        a: dict[str, Any] = {"ip": p.ip, "nodeName": p.node, "targetRef": _target_ref(p)}
        if svc.headless and p.owner_kind == "StatefulSet":
            a["hostname"] = p.name
        addresses.append(a)
    subsets = [{"addresses": addresses, "ports": _endpoint_ports(svc)}] if addresses else []
    ep_created = _after(created, 1)
    ep_meta = _meta(svc.name, object_uid(spec, "ep", svc.namespace, svc.name), ep_created, svc.namespace, labels,
                    {"endpoints.kubernetes.io/last-change-trigger-time": ts(ep_created)} if pods else None)
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": ep_meta}
    if subsets:
        endpoints["subsets"] = subsets
    slice_eps: list[dict[str, Any]] = [
        {"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False}} for ip in ips]
    for p in pods:
        e: dict[str, Any] = {"addresses": [p.ip], "conditions": {"ready": True, "serving": True,
                                                                  "terminating": False},
                             "nodeName": p.node, "targetRef": _target_ref(p), "zone": _zone(spec)}
        if svc.headless and p.owner_kind == "StatefulSet":
            e["hostname"] = p.name
        slice_eps.append(e)
    slice_labels = dict(svc.labels) | {"kubernetes.io/service-name": svc.name}
    if ips and not pods:
        slice_name = svc.name  # the apiserver's own reconciler names the `kubernetes` slice plainly
    else:
        slice_labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
        slice_name = f"{svc.name}-{_seeded(service_uid(spec, svc), 5)}"
    if svc.headless:
        slice_labels["service.kubernetes.io/headless"] = ""
    slice_meta = _meta(slice_name, object_uid(spec, "eps", svc.namespace, slice_name), ep_created, svc.namespace,
                       slice_labels, None,
                       _owner("v1", "Service", svc.name, service_uid(spec, svc)) if pods else None)
    if slice_meta.get("ownerReferences"):
        slice_meta["generateName"] = f"{svc.name}-"
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": slice_meta,
           "addressType": "IPv4", "endpoints": slice_eps, "ports": _endpoint_ports(svc)}
    return [endpoints, eps]


# -- CRDs and custom resources ----------------------------------------------------------------

def _crd(spec: LabSpec, plural: str, kind: str, version: str, scope: str, short: list[str],
         schema: dict[str, Any], columns: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    name = f"{plural}.{CRD_GROUP}"
    names = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
             "shortNames": short}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {**_meta(name, object_uid(spec, "crd", name), created,
                             annotations={"controller-gen.kubebuilder.io/version": "v0.16.5"}), "generation": 1},
        "spec": {"group": CRD_GROUP, "names": names, "scope": scope,
                 "conversion": {"strategy": "None"},
                 "versions": [{"name": version, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               **({"additionalPrinterColumns": columns} if columns else {})}]},
        "status": {"acceptedNames": names, "storedVersions": [version], "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": ts(created)},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": ts(created)}]},
    }


_LABEL_SELECTOR_SCHEMA = {
    "type": "object",
    "properties": {
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_objects(spec: LabSpec, created: datetime) -> list[dict[str, Any]]:
    """The VPC resource controller's two CRDs (SecurityGroupPolicy, CNINode)."""
    sgp_schema = {
        "type": "object", "description": "SecurityGroupPolicy is the Schema for the securitygrouppolicies API",
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "podSelector": _LABEL_SELECTOR_SCHEMA,
                "serviceAccountSelector": _LABEL_SELECTOR_SCHEMA,
                "securityGroups": {"type": "object", "properties": {
                    "groupIds": {"type": "array", "minItems": 1, "items": {"type": "string"}}}},
            }},
        },
    }
    cni_schema = {
        "type": "object", "description": "CNINode is the Schema for the cninodes API",
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "features": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "value": {"type": "string"}}}},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
            "status": {"type": "object"},
        },
    }
    return [
        _crd(spec, "securitygrouppolicies", "SecurityGroupPolicy", "v1beta1", "Namespaced", ["sgp"], sgp_schema,
             [{"name": "Security-Group-Ids", "type": "string", "jsonPath": ".spec.securityGroups.groupIds",
               "description": "The security group IDs to apply to the elastic network interface of pods that "
                              "match this policy."}], created),
        _crd(spec, "cninodes", "CNINode", "v1alpha1", "Cluster", ["cnd"], cni_schema,
             [{"name": "Features", "type": "string", "jsonPath": ".spec.features",
               "description": "The features delegated to VPC resource controller"}], created),
    ]


def sgp_objects(spec: LabSpec, created: datetime) -> list[dict[str, Any]]:
    return [{
        "apiVersion": f"{CRD_GROUP}/v1beta1", "kind": "SecurityGroupPolicy",
        "metadata": {**_meta(g.name, object_uid(spec, "sgp", g.namespace, g.name), created, g.namespace),
                     "generation": 1},
        "spec": {"podSelector": {"matchLabels": dict(g.pod_selector)},
                 "securityGroups": {"groupIds": sg_ids(spec, g.group_names)}},
    } for g in spec.security_group_policies]


# -- everything -------------------------------------------------------------------------------

def _namespaces(spec: LabSpec) -> list[str]:
    names = ["default", "kube-system", "kube-public", "kube-node-lease", "shop"]
    if spec.flavor == "flannel":
        names.append("kube-flannel")
    for p in spec.pods:
        if p.namespace not in names:
            names.append(p.namespace)
    return names


def objects_from_spec(spec: LabSpec, *, ca_pem: str, api_server_url: str,
                      created: datetime) -> list[dict[str, Any]]:
    """Every API object of the lab cluster described by `spec`, in creation order.

    `ca_pem` goes into each namespace's kube-root-ca.crt, `api_server_url` into the
    kube-proxy kubeconfig ConfigMap, `created` is the cluster's creation time (objects are
    stamped at plausible offsets after it).
    """
    vpc = spec.flavor == "vpc-cni"
    objs: list[dict[str, Any]] = []
    namespaces = _namespaces(spec)
    for ns in namespaces:
        objs.append(namespace_object(ns, object_uid(spec, "ns", ns), created))
    objs += crd_objects(spec, created)

    # config maps and service accounts
    for ns in namespaces:
        objs.append(_configmap(spec, ns, "kube-root-ca.crt", {"ca.crt": ca_pem}, created,
                               annotations={"kubernetes.io/description": _ROOT_CA_DESCRIPTION}))
    dns_labels = {"k8s-app": "kube-dns"} | ({"eks.amazonaws.com/component": "coredns"} if vpc else {})
    objs.append(_configmap(spec, "kube-system", "coredns", {"Corefile": corefile(spec.cluster_domain)}, created,
                           labels=dns_labels))
    proxy_labels = {"k8s-app": "kube-proxy"} | ({"eks.amazonaws.com/component": "kube-proxy"} if vpc else {})
    objs.append(_configmap(spec, "kube-system", "kube-proxy-config", {"config": kube_proxy_config(spec)}, created,
                           labels=proxy_labels))
    kubeconfig = (
        "kind: Config\napiVersion: v1\nclusters:\n- cluster:\n"
        "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
        f"    server: {api_server_url}\n  name: default\ncontexts:\n- context:\n    cluster: default\n"
        "    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n"
        "- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n")
    objs.append(_configmap(spec, "kube-system", "kube-proxy", {"kubeconfig": kubeconfig}, created,
                           labels=proxy_labels))
    if vpc:
        objs.append(_configmap(spec, "kube-system", "amazon-vpc-cni", {
            "branch-eni-cooldown": "60", "enable-network-policy-controller": "false",
            "enable-windows-ipam": "false", "enable-windows-prefix-delegation": "false",
            "minimum-ip-target": "3", "warm-ip-target": "1", "warm-prefix-target": "0",
        }, created, labels={"app.kubernetes.io/instance": "aws-vpc-cni", "app.kubernetes.io/name": "aws-node",
                            "k8s-app": "aws-node"}))
    else:
        objs.append(_configmap(spec, "kube-flannel", "kube-flannel-cfg", {
            "cni-conf.json": _FLANNEL_CNI_CONF, "net-conf.json": _flannel_net_conf(spec)}, created,
            labels={"app": "flannel", "k8s-app": "flannel", "tier": "node"}))
    accounts = {(ns, "default") for ns in namespaces}
    accounts |= {(p.namespace, p.service_account) for p in spec.pods}
    for ns, name in sorted(accounts):
        objs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": _meta(name, object_uid(spec, "sa", ns, name), created, ns)})

    # nodes and CNINodes
    node_objs = {}
    for node in spec.nodes:
        n_created = _after(created, 30 + 5 * node.index)
        node_objs[node.name] = node_object(spec, node, n_created)
        objs.append(node_objs[node.name])
    for node in spec.nodes:
        objs.append(lease_object(spec, node, node_objs[node.name]["metadata"]["uid"],
                                 _after(created, 30 + 5 * node.index)))
    if vpc:
        for node in spec.nodes:
            objs.append(cninode_object(spec, node, node_objs[node.name]["metadata"]["uid"],
                                       _after(created, 45 + 5 * node.index)))

    # workloads, pods, services, endpoints
    objs += _workloads(spec, created)
    pod_objs = []
    for pod in spec.pods:
        pod_objs.append(pod_object(spec, pod, created=created))
    objs += pod_objs
    for svc in spec.services:
        objs.append(service_object(spec, svc, created))
        objs += endpoints_objects(spec, svc, _after(created, 1))
    objs += sgp_objects(spec, _after(created, 200))

    # events
    for node in spec.nodes:
        nobj = node_objs[node.name]
        n_created = datetime.strptime(nobj["metadata"]["creationTimestamp"],
                                      "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        objs.append(event_object(involved=nobj, reason="RegisteredNode", component="node-controller",
                                 message=f"Node {node.name} event: Registered Node {node.name} in Controller",
                                 when=_after(n_created, 2)))
        if vpc and node.trunk:
            objs.append(event_object(involved=nobj, reason="NodeTrunkInitiated",
                                     component="vpc-resource-controller",
                                     message="The node has trunk interface initialized successfully",
                                     when=_after(n_created, 20), seq=1))
    for pod, pobj in zip(spec.pods, pod_objs):
        p_created = datetime.strptime(pobj["metadata"]["creationTimestamp"],
                                      "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        if pod.sgfp:
            # The RC allocates the branch ENI between scheduling and the kubelet's sandbox.
            objs += pod_lifecycle_events(pobj, when=p_created, kubelet_after=_after(p_created, 2) - p_created)
            objs += _sgfp_events(spec, pod, pobj, _after(p_created, 1))
        else:
            sched = _after(p_created, 1)
            objs += pod_lifecycle_events(pobj, when=sched, kubelet_after=_after(sched, 1) - sched)
    for i, o in enumerate(objs, start=1):
        o["metadata"]["resourceVersion"] = str(i)
    return objs


def pod_ip_in_use(objs: list[dict[str, Any]]) -> set[str]:
    """IPs held by non-hostNetwork pods among `objs` (for allocating an address to a new pod)."""
    return {o.get("status", {}).get("podIP", "") for o in objs
            if o.get("kind") == "Pod" and not o.get("spec", {}).get("hostNetwork")} - {""}


def next_free_ip(network: str, used: set[str], start_offset: int = 2) -> str:
    """The first address of `network` from `start_offset` on that is not in `used`."""
    net = ipaddress.ip_network(network, strict=False)
    for i in range(start_offset, net.num_addresses - 1):
        ip = str(net.network_address + i)
        if ip not in used:
            return ip
    raise ValueError(f"no free address left in {network}")
