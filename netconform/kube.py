"""Cluster access: find the cluster like kubectl does, and snapshot it with one list per kind.

Objects are kept as the API's own JSON (dicts), not the client's models: cheaper to decode,
JSON-able for evidence and for passing from the xdist controller to its workers.

>>> client = connect(kubeconfig=None, context=None)      # KUBECONFIG, ~/.kube/config, in-cluster
>>> snap = take_snapshot(client)
>>> snap.pod("default", "web-0")["status"]["podIP"]
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ClusterUnavailable, PermissionMissing

# kind -> (API path, query, the permission a user needs for it)
SNAPSHOT_KINDS: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "pods": ("/api/v1/pods", [], "list pods"),
    "services": ("/api/v1/services", [], "list services"),
    "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", [], "list endpointslices.discovery.k8s.io"),
    "nodes": ("/api/v1/nodes", [], "list nodes"),
    "root_ca_configmaps": ("/api/v1/configmaps", [("fieldSelector", "metadata.name=kube-root-ca.crt")],
                           "list configmaps"),
}


@dataclass
class Cluster:
    """A connected API client plus where it points (no secrets kept here)."""

    api_client: Any
    context: str
    server: str
    ca_pem: str = ""  # the CA the client trusts for the apiserver, if the kubeconfig names one
    in_cluster: bool = False
    # "GET /api/v1/pods" -> requests made: the run's API cost, O(1) in the number of pods
    requests: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get_json(self, path: str, query: list[tuple[str, str]] | None = None, timeout: float = 15.0) -> dict:
        """GET an API path as plain JSON (no model decoding); ApiException on HTTP errors."""
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            self.requests[f"GET {path}"] += 1
        method, url, headers, _, _ = self.api_client.param_serialize(
            "GET", path, query_params=query or [], header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api_client.call_api(method, url, header_params=headers, _request_timeout=timeout)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp)
        return json.loads(resp.data)


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """Connect as kubectl would: --kubeconfig, $KUBECONFIG, ~/.kube/config, then in-cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    paths = [kubeconfig] if kubeconfig else [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths and Path("~/.kube/config").expanduser().exists():
        paths = [str(Path("~/.kube/config").expanduser())]
    if paths:
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise ClusterUnavailable(f"kubeconfig {missing[0]} does not exist")
        cfg = client.Configuration()
        try:
            # KUBECONFIG lists are merged by the client when given the joined string.
            loader = config.kube_config._get_kube_config_loader(  # noqa: SLF001
                filename=os.pathsep.join(paths), active_context=context, persist_config=False)
            loader.load_and_set(cfg)
            ctx_name = loader.current_context["name"]
        except (ConfigException, KeyError, ValueError) as e:
            raise ClusterUnavailable(f"cannot use kubeconfig {os.pathsep.join(paths)}: {e}") from None
        ca_pem = Path(cfg.ssl_ca_cert).read_text() if cfg.ssl_ca_cert and Path(cfg.ssl_ca_cert).exists() else ""
        return Cluster(client.ApiClient(cfg), ctx_name, cfg.host, ca_pem)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise ClusterUnavailable(f"in-cluster config unusable: {e}") from None
        ca = Path(cfg.ssl_ca_cert).read_text() if cfg.ssl_ca_cert else ""
        return Cluster(client.ApiClient(cfg), "in-cluster", cfg.host, ca, in_cluster=True)
    raise ClusterUnavailable("no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, "
                             "create ~/.kube/config, run inside a pod, or use --lab")


@dataclass
class Snapshot:
    """The cluster as it was at the start of the run: one list per kind."""

    context: str
    server: str
    version: dict
    pods: list[dict] = field(default_factory=list)
    services: list[dict] = field(default_factory=list)
    endpointslices: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    root_ca_configmaps: list[dict] = field(default_factory=list)
    missing_permissions: dict[str, str] = field(default_factory=dict)  # kind -> permission
    ca_pem: str = ""
    api_requests: dict[str, int] = field(default_factory=dict)  # what taking it cost ("GET /api/v1/pods": 1)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> Snapshot:
        return cls(**d)

    def pod(self, namespace: str, name: str) -> dict | None:
        for p in self.pods:
            m = p["metadata"]
            if m["name"] == name and m.get("namespace") == namespace:
                return p
        return None

    def namespaces(self) -> set[str]:
        return {p["metadata"].get("namespace", "") for p in self.pods} | {
            s["metadata"].get("namespace", "") for s in self.services}

    def service(self, namespace: str, name: str) -> dict | None:
        for s in self.services:
            if s["metadata"]["name"] == name and s["metadata"].get("namespace") == namespace:
                return s
        return None

    def node(self, name: str) -> dict | None:
        return next((n for n in self.nodes if n["metadata"]["name"] == name), None)

    def slices_for(self, namespace: str, service: str) -> list[dict]:
        return [s for s in self.endpointslices if s["metadata"].get("namespace") == namespace
                and s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service]

    def pods_on(self, node: str) -> list[dict]:
        return [p for p in self.pods if p.get("spec", {}).get("nodeName") == node]

    def cluster_ca(self) -> str:
        """The cluster CA as pods see it (kube-root-ca.crt), else the kubeconfig's."""
        for cm in self.root_ca_configmaps:
            ca = cm.get("data", {}).get("ca.crt")
            if ca:
                return ca
        return self.ca_pem


def take_snapshot(cluster: Cluster, timeout: float = 20.0) -> Snapshot:
    """List every kind once, in parallel. A kind the user may not list is recorded, not fatal."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        version = cluster.get_json("/version", timeout=timeout)
    except (ApiException, HTTPError, OSError) as e:
        raise ClusterUnavailable(f"cluster {cluster.context} ({cluster.server}) is unreachable: {_brief(e)}") from None
    snap = Snapshot(context=cluster.context, server=cluster.server, version=version, ca_pem=cluster.ca_pem)

    def fetch(kind: str) -> tuple[str, list[dict] | None, str | None]:
        path, query, perm = SNAPSHOT_KINDS[kind]
        try:
            return kind, cluster.get_json(path, query, timeout=timeout).get("items", []), None
        except ApiException as e:
            if e.status in (401, 403):
                return kind, None, perm
            raise ClusterUnavailable(f"listing {kind} failed: {_brief(e)}") from None
        except (HTTPError, OSError) as e:
            raise ClusterUnavailable(f"listing {kind} failed: {_brief(e)}") from None

    with ThreadPoolExecutor(max_workers=len(SNAPSHOT_KINDS)) as pool:
        for kind, items, perm in pool.map(fetch, SNAPSHOT_KINDS):
            if perm:
                snap.missing_permissions[kind] = perm
            else:
                setattr(snap, kind, items)
    snap.api_requests = dict(cluster.requests)
    return snap


def _brief(e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None) or str(e)
    return f"HTTP {status} {reason}" if status else str(reason).splitlines()[0][:200]


def require(snap: Snapshot, kind: str) -> None:
    """Raise PermissionMissing if the snapshot could not list `kind`."""
    if kind in snap.missing_permissions:
        raise PermissionMissing(snap.missing_permissions[kind], f"read the cluster's {kind}")
