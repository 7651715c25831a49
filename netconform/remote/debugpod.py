"""Debug pods: one privileged pod per target node, so a suite run off the node can probe there.

Remote mode (DESIGN.md, reference/remote-mode.md §3-§5) runs the probes inside a pod that sees
the node as a node process would: `hostPID` (the target pods' processes and their
`/proc/<pid>/ns/net`), `hostNetwork` (the node's own namespace), `privileged` (setns(2) needs
CAP_SYS_ADMIN, /proc/<pid>/ns needs ptrace rights). The pod carries no code of ours: any image
with python3 does, and the probe code arrives over the exec stream (netconform/remote/boot.py).

Every pod made here is:

=======================  =================================================================
what                     why
=======================  =================================================================
nodeName + tolerate all  it must run on that node, whatever its taints (kubectl debug node)
restartPolicy Never      a crashed debug pod is not restarted behind our back
activeDeadlineSeconds    the dead-man switch: a SIGKILLed run's pod is stopped by the kubelet
sleep command            ...and its process ends by itself even where deadlines are not enforced
no service account token it needs no API access (automountServiceAccountToken: false)
small requests/limits    it must fit on a full node and cannot hog one
labels + expiry          `managed-by=netconform`, the run id; later runs sweep expired ones
node / read-only /host   like `kubectl debug node`: node files without a write path
emptyDir (Memory)        the shipped code's cache, so a reconnect does not resend it
=======================  =================================================================

Before creating anything, a server-side dry-run of the exact pod asks admission (Pod Security,
RBAC, policy webhooks) whether it would be accepted, so a refusal is one line naming what to
change, and nothing half-made is left. Pods are identified by the name and UID their create
returned (never by a label lookup that could match someone else's).

>>> pods = DebugPods(cluster, DebugPodOptions(namespace="netconform", run_id=run_id))
>>> made = pods.create([snapshot.node("ip-10-0-0-10")])   # {node: DebugPod}
>>> made["ip-10-0-0-10"].ready, made["ip-10-0-0-10"].name
(True, 'netconform-ip-10-0-0-10-3f2a9c1e')
>>> pods.delete_all()
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CACHE_DIR", "DEFAULT_IMAGE", "DEFAULT_NAMESPACE", "DebugPod", "DebugPodOptions", "DebugPods",
           "MANAGED_BY", "Refusal", "cleanup", "explain_api_error", "explain_not_starting", "manifest",
           "node_refusal", "pod_name"]

# The official Python image from ECR Public's Docker Official Images mirror: no Docker Hub pull
# limits on EKS nodes; `--debug-image` names a private mirror in air-gapped clusters.
DEFAULT_IMAGE = "public.ecr.aws/docker/library/python:3.13-slim"
DEFAULT_NAMESPACE = "netconform"
DEFAULT_TTL_S = 1800
CACHE_DIR = "/run/netconform"  # the emptyDir boot.py caches the shipped code in
HOST_ROOT = "/host"
CONTAINER = "netconform"
MANAGED_BY = ("app.kubernetes.io/managed-by", "netconform")
COMPONENT = ("app.kubernetes.io/component", "debug-pod")
RUN_ID = "netconform.io/run-id"
EXPIRES_AT = "netconform.io/expires-at"
TARGET_NODE = "netconform.io/node"
CREATED_BY = "netconform.io/created-by"
# Waiting reasons after which a pod will not start by itself.
_STUCK = {"ErrImagePull": "image", "ImagePullBackOff": "image", "InvalidImageName": "image",
          "ErrImageNeverPull": "image", "CreateContainerConfigError": "config", "CreateContainerError": "config",
          "RunContainerError": "config", "CrashLoopBackOff": "config"}


class Refusal(Exception):
    """A debug pod cannot be had: one line saying why and what to change. `kind` groups it
    ("psa", "rbac", "namespace", "image", "node", "policy", "timeout", "api")."""

    def __init__(self, message: str, kind: str = "api"):
        super().__init__(message)
        self.kind = kind


@dataclass
class DebugPodOptions:
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    run_id: str = ""
    ttl_s: int = DEFAULT_TTL_S
    pull_secrets: list[str] = field(default_factory=list)
    created_by: str = ""  # host/user that ran the suite, for whoever finds the pod
    start_timeout_s: float = 180.0  # an image pull on a cold node takes a while


@dataclass
class DebugPod:
    """One debug pod: where it is, and whether it can be exec'd into (else `refusal` says why)."""

    node: str
    namespace: str
    name: str
    uid: str = ""
    ready: bool = False
    refusal: str = ""
    refusal_kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DebugPod:
        return cls(**d)


def pod_name(node: str, run_id: str) -> str:
    """`netconform-<node>-<8 hex>`: readable in `kubectl get pods`, a valid DNS-1123 label, and
    unique per node and run (the hash covers the full node name that the truncation may cut)."""
    digest = hashlib.sha256(f"{node}/{run_id}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")[: 63 - len("netconform--") - 8].rstrip("-")
    return f"netconform-{stem}-{digest}" if stem else f"netconform-{digest}"


def _ts(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(node: str, opts: DebugPodOptions, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The debug pod for `node` (pure)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    expires = now + dt.timedelta(seconds=opts.ttl_s)
    spec: dict[str, Any] = {
        "nodeName": node,
        "tolerations": [{"operator": "Exists"}],
        "hostPID": True,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(opts.ttl_s),
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # Highest priority a user may give without a PriorityClass object: none. A node at its
        # pod limit rejects the pod (OutOfpods), and that is reported, not worked around.
        "containers": [{
            "name": CONTAINER,
            "image": opts.image,
            "imagePullPolicy": "IfNotPresent",
            # Ends by itself: the process stops even if activeDeadlineSeconds is not enforced.
            "command": ["python3", "-c", f"import time; time.sleep({int(opts.ttl_s)})"],
            "securityContext": {"privileged": True},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"cpu": "1", "memory": "256Mi"}},
            "volumeMounts": [{"name": "host-root", "mountPath": HOST_ROOT, "readOnly": True},
                             {"name": "netconform-cache", "mountPath": CACHE_DIR}],
        }],
        "volumes": [{"name": "host-root", "hostPath": {"path": "/"}},
                    {"name": "netconform-cache", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}}],
    }
    if opts.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in opts.pull_secrets]
    annotations = {EXPIRES_AT: _ts(expires), TARGET_NODE: node}
    if opts.created_by:
        annotations[CREATED_BY] = opts.created_by
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(node, opts.run_id), "namespace": opts.namespace,
                     "labels": {MANAGED_BY[0]: MANAGED_BY[1], COMPONENT[0]: COMPONENT[1], RUN_ID: opts.run_id},
                     "annotations": annotations},
        "spec": spec,
    }


# -- why a pod cannot be had (pure) ---------------------------------------------------------------
_PSA = re.compile(r'violates PodSecurity "([^"]+)"(?::\s*(.*))?')
_RBAC = re.compile(r'(User|ServiceAccount|Group) "([^"]+)" cannot (\w+) resource "([^"]+)"'
                   r'(?: in API group "([^"]*)")?(?: in the namespace "([^"]+)")?')
_RBAC_ANY = re.compile(r'[Uu]ser "([^"]+)" cannot (\w+) resource "([^"]+)"'
                       r'(?: in API group "([^"]*)")?(?: in the namespace "([^"]+)")?')


def _message(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body.strip()
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or "")
    return ""


def label_command(namespace: str) -> str:
    return f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=privileged --overwrite"


def explain_api_error(status: int, body: Any, *, namespace: str, action: str = "create pods") -> Refusal:
    """Turn an API refusal of our pod (or of exec into it) into one line with what to change.

    `body` is the API's Status (dict or JSON text). Formats: Pod Security's
    `pods "x" is forbidden: violates PodSecurity "baseline:latest": host namespaces (...)`
    (pod-security-admission admission.go), RBAC's `... is forbidden: User "u" cannot create
    resource "pods/exec" in API group "" in the namespace "ns"` (apiserver responsewriters).
    """
    msg = _message(body)
    psa = _PSA.search(msg)
    if status == 403 and psa:
        level = psa.group(1)
        why = f" ({psa.group(2).strip()})" if psa.group(2) else ""
        return Refusal(f"namespace {namespace} enforces Pod Security \"{level}\", and remote mode's debug pod "
                       f"needs \"privileged\"{why}: {label_command(namespace)} (or pick another namespace with "
                       f"--debug-namespace)", "psa")
    rbac = _RBAC.search(msg)
    if status == 403 and rbac:
        who = f'{rbac.group(1)} "{rbac.group(2)}"'
        verb, resource, ns = rbac.group(3), rbac.group(4), rbac.group(6) or namespace
        return Refusal(f"{who} may not {verb} {resource} in namespace {ns} (RBAC): remote mode needs create, get "
                       f"and delete on pods and create on pods/exec there (see the README's RBAC rules)", "rbac")
    if status == 403 and ("autogke" in msg.lower() or "gke warden" in msg.lower()):
        return Refusal(f"the cluster's policy forbids privileged host-namespace pods (GKE Autopilot): remote mode "
                       f"is not available here; run the suite on the node or as the in-cluster Job ({msg[:200]})",
                       "policy")
    if status == 403:
        return Refusal(f"the API server refused to {action} in namespace {namespace}: {msg[:300]}", "policy")
    if status == 404 and "namespaces" in msg and namespace in msg:
        return Refusal(f"the debug namespace {namespace} does not exist: kubectl create namespace {namespace} && "
                       f"{label_command(namespace)} (or pick one with --debug-namespace)", "namespace")
    if status == 401:
        return Refusal(f"the API server does not accept our credentials (401) to {action}: {msg[:200]}", "rbac")
    if status in (400, 422) and "admission webhook" in msg:
        return Refusal(f"an admission webhook refused the debug pod: {msg[:300]}", "policy")
    return Refusal(f"cannot {action} in namespace {namespace}: HTTP {status} {msg[:300]}", "api")


def dry_run_unsupported(status: int, body: Any) -> bool:
    """A webhook that cannot take dry-run requests: skip the preflight, the real create decides."""
    return "does not support dry run" in _message(body).lower()


def node_refusal(node: dict | None, name: str) -> Refusal | None:
    """Why a debug pod cannot run on this node at all, or None."""
    if node is None:
        return Refusal(f"node {name} is not in the cluster (any more)", "node")
    labels = node.get("metadata", {}).get("labels", {}) or {}
    if labels.get("eks.amazonaws.com/compute-type") == "fargate":
        return Refusal(f"node {name} is an EKS Fargate node, which forbids privileged and hostNetwork pods: "
                       f"remote mode cannot probe pods on it", "node")
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            why = cond.get("message") or cond.get("reason") or "not Ready"
            return Refusal(f"node {name} is NotReady ({why}): no debug pod can start there", "node")
    if node.get("spec", {}).get("unschedulable"):
        # nodeName bypasses the scheduler, so a cordoned node still runs the pod: not a refusal.
        return None
    return None


def explain_not_starting(pod: dict, image: str) -> Refusal | None:
    """None while the pod may still start (or runs); else why it will not."""
    status = pod.get("status", {}) or {}
    phase = status.get("phase")
    name = pod.get("metadata", {}).get("name", "?")
    node = pod.get("spec", {}).get("nodeName", "?")
    if phase == "Failed":
        reason, msg = status.get("reason") or "", status.get("message") or ""
        if reason.startswith("OutOf"):
            return Refusal(f"node {node} is full and rejected debug pod {name} ({reason}: {msg})", "node")
        return Refusal(f"debug pod {name} on node {node} failed: {reason} {msg}".rstrip(), "node")
    if phase == "Succeeded":
        return Refusal(f"debug pod {name} on node {node} already ended", "node")
    for cs in status.get("containerStatuses", []) or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        kind = _STUCK.get(waiting.get("reason", ""))
        if kind == "image":
            return Refusal(f"node {node} cannot pull the debug image {image} ({waiting['reason']}: "
                           f"{(waiting.get('message') or '')[:200]}): give a reachable image with python3 as "
                           f"--debug-image (and --image-pull-secret for a private registry)", "image")
        if kind:
            return Refusal(f"debug pod {name} on node {node} cannot start its container ({waiting['reason']}: "
                           f"{(waiting.get('message') or '')[:200]})", "config")
    return None


def _running(pod: dict) -> bool:
    status = pod.get("status", {}) or {}
    return status.get("phase") == "Running" and all(
        "running" in (cs.get("state") or {}) for cs in status.get("containerStatuses", []) or [{"state": {"running": {}}}])


def _expired(pod: dict, now: dt.datetime) -> bool:
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(EXPIRES_AT)
    if not raw:
        return False
    try:
        when = dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return False
    return when <= now


# -- the API side ---------------------------------------------------------------------------------
class _Api:
    """The few writes remote mode makes, through the run's Cluster (counted with its reads)."""

    def __init__(self, cluster: Any):
        self.cluster = cluster

    def request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
                timeout: float = 30.0) -> tuple[int, Any]:
        c = self.cluster
        with c._lock:  # noqa: SLF001 -- the Cluster's own counter
            c.requests[f"{method} {path}"] += 1
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        m, url, hdrs, payload, _ = c.api_client.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = c.api_client.call_api(m, url, header_params=hdrs, body=payload, _request_timeout=timeout)
        resp.read()
        data: Any = resp.data
        try:
            data = json.loads(data) if data else {}
        except ValueError:
            data = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return resp.status, data


class DebugPods:
    """The debug pods of one run: made once (by the xdist controller), deleted at its end."""

    def __init__(self, cluster: Any, opts: DebugPodOptions, *, api: _Api | None = None):
        self.opts = opts
        self.api = api or _Api(cluster)
        self._lock = threading.Lock()
        self.pods: dict[str, DebugPod] = {}  # node -> pod (made by us, or refused)
        self.swept: list[str] = []

    @property
    def _base(self) -> str:
        return f"/api/v1/namespaces/{self.opts.namespace}/pods"

    def sweep_expired(self) -> list[str]:
        """Delete netconform pods of earlier runs whose expiry has passed (our namespace only)."""
        try:
            status, body = self.api.request("GET", self._base, query=[("labelSelector", f"{MANAGED_BY[0]}={MANAGED_BY[1]}")])
        except Exception:  # noqa: BLE001 -- a failed sweep must not stop the run
            return []
        if status != 200:
            return []
        now = dt.datetime.now(dt.timezone.utc)
        gone = []
        for p in body.get("items", []):
            m = p["metadata"]
            if m.get("labels", {}).get(RUN_ID) != self.opts.run_id and _expired(p, now):
                if self._delete(m["name"], m.get("uid", "")):
                    gone.append(f"{m.get('namespace')}/{m['name']}")
        self.swept = gone
        return gone

    def create(self, nodes: Iterable[tuple[str, dict | None]]) -> dict[str, DebugPod]:
        """A running debug pod on each (node name, node object), in parallel; refusals recorded
        on the DebugPod (`ready` False, `refusal` the line), never raised."""
        nodes = list(nodes)
        if not nodes:
            return {}
        with ThreadPoolExecutor(max_workers=min(16, len(nodes)), thread_name_prefix="debug-pod") as pool:
            made = list(pool.map(lambda n: self._create_one(*n), nodes))
        waiting = [p for p in made if p.uid and not p.refusal]
        self._wait_running(waiting)
        with self._lock:
            for p in made:
                self.pods[p.node] = p
        return {p.node: p for p in made}

    def _create_one(self, node: str, node_obj: dict | None) -> DebugPod:
        pod = DebugPod(node=node, namespace=self.opts.namespace, name=pod_name(node, self.opts.run_id))
        refused = node_refusal(node_obj, node)
        if refused is None:
            body = manifest(node, self.opts)
            try:
                refused = self._preflight(body) or self._post(body, pod)
            except Exception as e:  # noqa: BLE001 -- a transport failure refuses this node only
                refused = Refusal(f"cannot create a debug pod on node {node}: {type(e).__name__}: {e}", "api")
        if refused is not None:
            pod.refusal, pod.refusal_kind = str(refused), refused.kind
        return pod

    def _preflight(self, body: dict) -> Refusal | None:
        status, resp = self.api.request("POST", self._base, body=body, query=[("dryRun", "All")])
        if 200 <= status < 300 or dry_run_unsupported(status, resp):
            return None
        return explain_api_error(status, resp, namespace=self.opts.namespace)

    def _post(self, body: dict, pod: DebugPod) -> Refusal | None:
        status, resp = self.api.request("POST", self._base, body=body)
        if status == 409:  # our own name from a run with the same id: never adopt it
            return Refusal(f"a pod named {pod.name} already exists in namespace {pod.namespace}", "api")
        if not 200 <= status < 300:
            return explain_api_error(status, resp, namespace=self.opts.namespace)
        pod.uid = resp.get("metadata", {}).get("uid", "")
        with self._lock:  # recorded at once: a Ctrl-C from here on must delete it
            self.pods[pod.node] = pod
        return None

    def _wait_running(self, pods: list[DebugPod]) -> None:
        """One list per poll for all of the run's pods (not a GET per pod)."""
        pending = {p.name: p for p in pods}
        deadline = time.monotonic() + self.opts.start_timeout_s
        delay = 0.2
        while pending:
            try:
                status, body = self.api.request("GET", self._base, query=[("labelSelector", f"{RUN_ID}={self.opts.run_id}")])
                items = body.get("items", []) if status == 200 else []
            except Exception:  # noqa: BLE001 -- try again until the deadline
                items = []
            for item in items:
                p = pending.get(item["metadata"]["name"])
                if p is None or item["metadata"].get("uid") != p.uid:
                    continue
                if _running(item):
                    p.ready = True
                    del pending[p.name]
                    continue
                stuck = explain_not_starting(item, self.opts.image)
                if stuck is not None:
                    p.refusal, p.refusal_kind = str(stuck), stuck.kind
                    del pending[p.name]
            if not pending:
                return
            if time.monotonic() >= deadline:
                for p in pending.values():
                    p.refusal, p.refusal_kind = (f"debug pod {p.namespace}/{p.name} on node {p.node} did not start "
                                                 f"within {self.opts.start_timeout_s:g} s"), "timeout"
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def _delete(self, name: str, uid: str) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        if uid:
            body["preconditions"] = {"uid": uid}  # never someone else's pod of the same name
        try:
            status, _ = self.api.request("DELETE", f"{self._base}/{name}", body=body, timeout=15.0)
        except Exception:  # noqa: BLE001 -- the deadline stops it anyway
            return False
        return 200 <= status < 300 or status == 404

    def delete_all(self) -> list[str]:
        """Delete every pod this run made (idempotent); the names deleted."""
        with self._lock:
            mine = [p for p in self.pods.values() if p.uid]
            self.pods = {n: p for n, p in self.pods.items() if not p.uid}
        if not mine:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(mine)), thread_name_prefix="debug-pod-rm") as pool:
            ok = list(pool.map(lambda p: self._delete(p.name, p.uid), mine))
        return [f"{p.namespace}/{p.name}" for p, done in zip(mine, ok) if done]


def cleanup(cluster: Any, namespace: str | None, *, older_than_s: float | None = None,
            api: _Api | None = None) -> tuple[list[str], list[str]]:
    """Delete netconform debug pods (all namespaces when `namespace` is None), optionally only
    those created more than `older_than_s` ago: (deleted, not deleted with why)."""
    api = api or _Api(cluster)
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    status, body = api.request("GET", path, query=[("labelSelector", f"{MANAGED_BY[0]}={MANAGED_BY[1]}")])
    if status != 200:
        raise explain_api_error(status, body, namespace=namespace or "(all)", action="list pods")
    now = dt.datetime.now(dt.timezone.utc)
    deleted, kept = [], []
    for p in body.get("items", []):
        m = p["metadata"]
        key = f"{m.get('namespace')}/{m['name']}"
        if older_than_s is not None:
            try:
                born = dt.datetime.strptime(m.get("creationTimestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.timezone.utc)
            except ValueError:
                born = now
            if (now - born).total_seconds() < older_than_s:
                continue
        st, resp = api.request("DELETE", f"/api/v1/namespaces/{m.get('namespace')}/pods/{m['name']}",
                               body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                     "preconditions": {"uid": m.get("uid", "")}})
        if 200 <= st < 300 or st == 404:
            deleted.append(key)
        else:
            kept.append(f"{key}: {explain_api_error(st, resp, namespace=m.get('namespace', ''), action='delete pods')}")
    return deleted, kept
