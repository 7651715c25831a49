"""The lab's Kubernetes API: objects, store and HTTPS server, driven by the official client and kubectl.

Loopback only, no root: exec runs plain `sh` on this machine through a test hook.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import websocket
import yaml
from aiohttp import web
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from netconform.lab.apiserver import (
    ApiError,
    ApiServer,
    ObjectStore,
    human_duration,
    json_patch,
    label_selector_from_dict,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    write_kubeconfig,
)
from netconform.lab.k8s_objects import (
    mark_pod_running,
    objects_from_spec,
    pod_object,
    prepare_new_pod,
)
from netconform.lab.pki import CertificateAuthority
from netconform.lab.topology import LabSpec, build_spec

CREATED = datetime.now(timezone.utc) - timedelta(hours=2)
# Limit for one request, exec session or watch to finish: generous for a loaded 2-core machine;
# only a broken server ever waits it out.
WAIT = 120
MODELS = {
    "Pod": "V1Pod", "Node": "V1Node", "Namespace": "V1Namespace", "ConfigMap": "V1ConfigMap",
    "ServiceAccount": "V1ServiceAccount", "Service": "V1Service", "Endpoints": "V1Endpoints",
    "EndpointSlice": "V1EndpointSlice", "Deployment": "V1Deployment", "ReplicaSet": "V1ReplicaSet",
    "StatefulSet": "V1StatefulSet", "DaemonSet": "V1DaemonSet", "Event": "CoreV1Event",
    "CustomResourceDefinition": "V1CustomResourceDefinition", "Lease": "V1Lease",
}


def _objects(spec: LabSpec, ca_pem: str = "CA-PEM") -> list[dict[str, Any]]:
    return objects_from_spec(spec, ca_pem=ca_pem, api_server_url="https://127.0.0.1:6443", created=CREATED)


def _by(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


# -- objects ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flavor", ["vpc-cni", "flannel"])
def test_objects_pass_the_client_models(flavor: str) -> None:
    api = client.ApiClient()
    objs = _objects(build_spec("objs", flavor))
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Node", "Pod", "Service", "Endpoints", "EndpointSlice", "Deployment", "ReplicaSet",
            "StatefulSet", "DaemonSet", "ConfigMap", "ServiceAccount", "Event",
            "CustomResourceDefinition"} <= kinds
    for o in objs:
        if o["kind"] in MODELS:
            model = api.deserialize(json.dumps(o), MODELS[o["kind"]], "application/json")
            assert model.metadata.name == o["metadata"]["name"]
    assert all(isinstance(o["metadata"]["resourceVersion"], str) for o in objs)
    # Strictness is real: the same pod with a string restartCount is refused.
    bad = copy.deepcopy(_by(objs, "Pod")[0])
    bad["status"]["containerStatuses"][0]["restartCount"] = "0"
    with pytest.raises(Exception, match="restart"):
        api.deserialize(json.dumps(bad), "V1Pod", "application/json")


def test_vpc_cni_objects_carry_sgfp_state() -> None:
    spec = build_spec("sgfp", "vpc-cni", nodes=2, pods_per_node=3)
    spec.sg_ids = {"payments-sg": "sg-0aaa"}  # db-clients-sg unseeded: falls back to its name
    objs = _objects(spec)
    sgfp = [p for p in spec.pods if p.sgfp]
    assert sgfp
    for p in sgfp:
        pod = next(o for o in _by(objs, "Pod") if o["metadata"]["name"] == p.name)
        res = pod["spec"]["containers"][0]["resources"]
        assert res["requests"]["vpc.amazonaws.com/pod-eni"] == res["limits"]["vpc.amazonaws.com/pod-eni"] == "1"
        eni = json.loads(pod["metadata"]["annotations"]["vpc.amazonaws.com/pod-eni"])
        assert eni[0]["privateIp"] == p.ip and eni[0]["vlanId"] == p.vlan_id
        assert eni[0]["ifAddress"] == p.branch_mac and eni[0]["subnetCidr"] == spec.node_subnet
        assert eni[0]["associationID"].startswith("trunk-assoc-") and eni[0]["eniId"].startswith("eni-")
        reasons = {e["reason"]: e for e in _by(objs, "Event") if e["involvedObject"]["uid"] == p.uid}
        assert {"Scheduled", "Pulled", "Created", "Started", "SecurityGroupRequested",
                "ResourceAllocated"} <= set(reasons)
        assert "[sg-0aaa db-clients-sg]" in reasons["SecurityGroupRequested"]["message"]
        assert reasons["ResourceAllocated"]["message"] == (
            f"Allocated {pod['metadata']['annotations']['vpc.amazonaws.com/pod-eni']} to the pod")
    sgps = {o["metadata"]["name"]: o for o in _by(objs, "SecurityGroupPolicy")}
    assert sgps["payments-sgp"]["spec"]["securityGroups"]["groupIds"] == ["sg-0aaa"]
    assert sgps["db-clients-sgp"]["spec"]["securityGroups"]["groupIds"] == ["db-clients-sg"]
    for n, node in zip(spec.nodes, _by(objs, "Node")):
        assert node["spec"]["providerID"].startswith(f"aws:///{spec.region}a/i-")
        assert node["status"]["capacity"]["vpc.amazonaws.com/pod-eni"] == "9"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == n.name
        assert "eks.amazonaws.com/nodegroup" in node["metadata"]["labels"]
    assert all(c["spec"]["features"] == [{"name": "SecurityGroupsForPods"}] for c in _by(objs, "CNINode"))
    assert any(e["reason"] == "NodeTrunkInitiated" for e in _by(objs, "Event"))
    assert any(c["metadata"]["name"] == "amazon-vpc-cni" for c in _by(objs, "ConfigMap"))


def test_flannel_nodes_and_config() -> None:
    spec = build_spec("fl", "flannel", nodes=2)
    objs = _objects(spec)
    for n, node in zip(spec.nodes, _by(objs, "Node")):
        ann = node["metadata"]["annotations"]
        assert ann["flannel.alpha.coreos.com/backend-type"] == "vxlan"
        assert json.loads(ann["flannel.alpha.coreos.com/backend-data"]) == {"VNI": 1, "VtepMAC": n.vtep_mac}
        assert ann["flannel.alpha.coreos.com/public-ip"] == n.ip
        assert node["spec"]["podCIDRs"] == [n.pod_cidr]
    cfg = next(c for c in _by(objs, "ConfigMap") if c["metadata"]["name"] == "kube-flannel-cfg")
    assert json.loads(cfg["data"]["net-conf.json"])["Network"] == "10.244.0.0/16"
    assert "kube-flannel" in {o["metadata"]["name"] for o in _by(objs, "Namespace")}
    assert not _by(objs, "CNINode") and not _by(objs, "SecurityGroupPolicy")


def test_cluster_wide_objects_are_consistent() -> None:
    spec = build_spec("cons", "vpc-cni", nodes=3, pods_per_node=4, cluster_domain="corp.example")
    objs = _objects(spec, ca_pem="MY-CA")
    roots = [c for c in _by(objs, "ConfigMap") if c["metadata"]["name"] == "kube-root-ca.crt"]
    assert {c["metadata"]["namespace"] for c in roots} == {o["metadata"]["name"] for o in _by(objs, "Namespace")}
    assert all(c["data"]["ca.crt"] == "MY-CA" for c in roots)
    coredns = next(c for c in _by(objs, "ConfigMap") if c["metadata"]["name"] == "coredns")
    assert "kubernetes corp.example in-addr.arpa ip6.arpa" in coredns["data"]["Corefile"]
    proxy = yaml.safe_load(next(c for c in _by(objs, "ConfigMap")
                                if c["metadata"]["name"] == "kube-proxy-config")["data"]["config"])
    assert proxy["mode"] == "iptables" and proxy["clusterCIDR"] == spec.pod_cidr
    # Owner references point at the real workload UIDs, and the counters add up.
    uids = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["uid"]
            for o in objs if o["kind"] in ("ReplicaSet", "StatefulSet", "DaemonSet")}
    for pod in _by(objs, "Pod"):
        ref = pod["metadata"]["ownerReferences"][0]
        assert uids[(ref["kind"], pod["metadata"]["namespace"], ref["name"])] == ref["uid"]
        assert pod["spec"]["dnsPolicy"] in ("ClusterFirst", "ClusterFirstWithHostNet", "Default")
        assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    for ds in _by(objs, "DaemonSet"):
        assert ds["status"]["desiredNumberScheduled"] == ds["status"]["numberReady"] == len(spec.nodes)
    web = next(d for d in _by(objs, "Deployment") if d["metadata"]["name"] == "web")
    assert web["status"]["readyReplicas"] == len([p for p in spec.pods if p.labels.get("app") == "web"])
    # The kubernetes service's endpoints are the apiserver IPs, without a targetRef.
    kslice = next(s for s in _by(objs, "EndpointSlice")
                  if s["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes")
    assert [e["addresses"][0] for e in kslice["endpoints"]] == spec.apiserver_ips
    assert all("targetRef" not in e for e in kslice["endpoints"])
    wslice = next(s for s in _by(objs, "EndpointSlice")
                  if s["metadata"]["labels"]["kubernetes.io/service-name"] == "web")
    assert sorted(e["addresses"][0] for e in wslice["endpoints"]) == sorted(
        p.ip for p in spec.pods if p.labels.get("app") == "web")
    assert all(e["targetRef"]["kind"] == "Pod" and e["nodeName"] for e in wslice["endpoints"])


def test_a_fresh_lab_has_no_timestamps_in_the_future() -> None:
    now = datetime.now(timezone.utc)
    objs = objects_from_spec(build_spec("fresh", "vpc-cni"), ca_pem="x", api_server_url="https://127.0.0.1:1",
                             created=now)
    later = (now + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamps = [o["metadata"]["creationTimestamp"] for o in objs]
    stamps += [e["lastTimestamp"] for e in _by(objs, "Event")]
    stamps += [c["state"]["running"]["startedAt"] for p in _by(objs, "Pod")
               for c in p["status"]["containerStatuses"]]
    assert max(stamps) <= later


def test_runtime_pod_helpers() -> None:
    spec = build_spec("rt", "vpc-cni")
    pod = prepare_new_pod({"metadata": {"name": "dbg"},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace="default")
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    node = spec.nodes[0]
    running = mark_pod_running(copy.deepcopy(pod), node_name=node.name, host_ip=node.ip, pod_ip="10.0.9.9",
                               container_ids={"c": "ab" * 32})
    assert running["status"]["phase"] == "Running" and running["status"]["podIPs"] == [{"ip": "10.0.9.9"}]
    assert running["status"]["containerStatuses"][0]["containerID"] == "containerd://" + "ab" * 32
    # pod_object(base=...) keeps what the client sent and binds it to the spec pod.
    sp = spec.pods[0]
    bound = pod_object(spec, sp, created=CREATED, base=pod)
    assert bound["spec"]["containers"][0]["image"] == "busybox"
    assert bound["spec"]["nodeName"] == sp.node and bound["status"]["podIP"] == sp.ip


# -- store pieces -----------------------------------------------------------------------------

def test_label_and_field_selectors() -> None:
    labels = {"app": "web", "tier": "front"}
    ok = ["app=web", "app==web", "app!=db", "app in (web, db)", "app notin (db)", "tier", "!missing",
          "app=web,tier in (front)", ""]
    bad = ["app=db", "app!=web", "app in (db)", "app notin (web,x)", "missing", "!tier", "app=web,tier=back"]
    for s in ok:
        assert all(r.matches(labels) for r in parse_label_selector(s)), s
    for s in bad:
        assert not all(r.matches(labels) for r in parse_label_selector(s)), s
    with pytest.raises(ApiError):
        parse_label_selector("app in (web")
    sgp_selector = label_selector_from_dict({"matchLabels": {"app": "web"},
                                             "matchExpressions": [{"key": "tier", "operator": "In",
                                                                   "values": ["front"]}]})
    assert all(r.matches(labels) for r in sgp_selector)
    assert not all(r.matches({"app": "web"}) for r in sgp_selector)
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Failed") == [
        ("spec.nodeName", "=", "n1"), ("status.phase", "!=", "Failed")]


def test_patches() -> None:
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}},
           "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "d", "image": "y"}]}}
    merged = merge_patch(obj, {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert merged["metadata"]["labels"] == {"b": "2", "c": "3"}
    smp = merge_patch(obj, {"spec": {"containers": [{"name": "d", "image": "z"}]}}, strategic=True)
    assert [c["image"] for c in smp["spec"]["containers"]] == ["x", "z"]
    assert merge_patch(obj, {"spec": {"containers": [{"name": "d", "image": "z"}]}})["spec"]["containers"] == [
        {"name": "d", "image": "z"}]
    jp = json_patch(obj, [{"op": "add", "path": "/metadata/labels/x~1y", "value": "v"},
                          {"op": "remove", "path": "/spec/containers/0"},
                          {"op": "test", "path": "/spec/containers/0/name", "value": "d"}])
    assert jp["metadata"]["labels"]["x/y"] == "v" and len(jp["spec"]["containers"]) == 1
    with pytest.raises(ApiError) as e:
        json_patch(obj, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    assert e.value.code == 422


def test_store_watch_resume_and_selector_transitions() -> None:
    store = ObjectStore(_objects(build_spec("st", "flannel", nodes=1, pods_per_node=1)))
    start_rv = store.resource_version
    seen: list[tuple[str, str]] = []
    unsubscribe = store.watch("pods", lambda t, o: seen.append((t, o["metadata"]["name"])), namespace="default",
                              label_selector="tier=x", resource_version=start_rv)
    base = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w1", "labels": {"tier": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}
    store.create(base, namespace="default")
    store.patch("pods", "default", "w1", {"metadata": {"labels": {"tier": "y"}}})  # leaves the selector
    store.patch("pods", "default", "w1", {"metadata": {"labels": {"tier": "x"}}})  # comes back
    store.delete("pods", "default", "w1")
    unsubscribe()
    assert seen == [("ADDED", "w1"), ("DELETED", "w1"), ("ADDED", "w1"), ("DELETED", "w1")]
    # A late watcher replays the same history from the resourceVersion.
    replay: list[str] = []
    store.watch("pods", lambda t, o: replay.append(t), label_selector="tier", resource_version=start_rv)()
    assert replay == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    with pytest.raises(ApiError) as e:
        store.watch("pods", lambda t, o: None, resource_version="1")
    assert e.value.code == 410
    with pytest.raises(ApiError) as e:
        store.create(base, namespace="nope")
    assert e.value.code == 404 and e.value.message == 'namespaces "nope" not found'


def test_human_duration_matches_kubectl() -> None:
    cases = {5: "5s", 119: "119s", 125: "2m5s", 600: "10m", 179 * 60: "179m", 3 * 3600 + 60: "3h1m",
             30 * 3600: "30h", 50 * 3600: "2d2h", 10 * 86400: "10d", 800 * 86400: "2y70d"}
    for secs, text in cases.items():
        assert human_duration(timedelta(seconds=secs)) == text


# -- the server -------------------------------------------------------------------------------

@dataclass
class RecordingHooks:
    """Test hooks: place labelled pods on a fixed node/IP, record calls, exec with plain sh."""

    spec: LabSpec
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    execs: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def on_pod_create(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        self.created.append(pod["metadata"]["name"])
        if pod["metadata"].get("labels", {}).get("placed-by") != "hook":
            return None  # the server's default placement
        node = self.spec.nodes[-1]
        return mark_pod_running(pod, node_name=node.name, host_ip=node.ip, pod_ip="10.0.9.9")

    def on_pod_delete(self, pod: dict[str, Any]) -> None:
        self.deleted.append(pod["metadata"]["name"])

    def pod_log(self, pod: dict[str, Any], container: str, params: dict[str, str]) -> str:
        return f"log of {pod['metadata']['name']}/{container} tail={params.get('tailLines')}\n"

    def exec_argv(self, pod: dict[str, Any], container: str, command: list[str]) -> list[str]:
        self.execs.append((pod["metadata"]["name"], container, command))
        return ["sh", "-c", 'exec "$@"', "sh", *command]


@dataclass
class Lab:
    spec: LabSpec
    store: ObjectStore
    server: ApiServer
    hooks: RecordingHooks
    ca: CertificateAuthority
    kubeconfig: Path
    token: str
    tmp: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("labapi")
    ca = CertificateAuthority.create(tmp / "pki")
    spec = build_spec("apitest", "vpc-cni", nodes=2, pods_per_node=3)
    store = ObjectStore(_objects(spec, ca.pem.decode()))
    hooks = RecordingHooks(spec)
    token = "test-token-" + os.urandom(8).hex()
    server = ApiServer(store, token=token, hooks=hooks,
                       ssl_context=ca.server_context(tmp / "pki", "kube-apiserver", ips=["127.0.0.1"],
                                                     dns=["localhost"]))
    server.add_routes([web.get("/_lab/ping", _lab_ping)])
    server.start()
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", server.url, ca.pem, token)
    yield Lab(spec, store, server, hooks, ca, kubeconfig, token, tmp)
    server.stop()


async def _lab_ping(request: web.Request) -> web.Response:
    return web.json_response({"pong": True})


@pytest.fixture(scope="module")
def api_client(lab: Lab):
    api = config.new_client_from_config(str(lab.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="module")
def v1(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def _raw(lab: Lab, path: str, *, token: str | None = "lab", headers: dict[str, str] | None = None,
         ctx: ssl.SSLContext | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(lab.server.url + path, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {lab.token if token == 'lab' else token}")
    ctx = ctx or ssl.create_default_context(cafile=str(lab.ca.cert_path))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=WAIT) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), dict(e.headers)


def test_version_and_discovery(lab: Lab, api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.32.") and info.platform == "linux/amd64"
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert groups["vpcresources.k8s.aws"].preferred_version.version == "v1beta1"
    assert {v.version for v in groups["vpcresources.k8s.aws"].versions} == {"v1beta1", "v1alpha1"}
    core = client.CoreV1Api(api_client).get_api_resources()
    pods = next(r for r in core.resources if r.name == "pods")
    assert pods.namespaced and "watch" in pods.verbs and "pods/exec" in {r.name for r in core.resources}
    status, body, _ = _raw(lab, "/apis/vpcresources.k8s.aws/v1alpha1")
    cnd = json.loads(body)["resources"][0]
    assert status == 200 and cnd["name"] == "cninodes" and cnd["namespaced"] is False


def test_list_pods_with_label_and_field_selectors(lab: Lab, v1: client.CoreV1Api) -> None:
    spec = lab.spec
    web = sorted(p.name for p in spec.pods if p.labels.get("app") == "web")
    listed = v1.list_namespaced_pod("default", label_selector="app=web").items
    assert sorted(p.metadata.name for p in listed) == web
    everything = v1.list_pod_for_all_namespaces()
    assert len(everything.items) == len(spec.pods) and everything.metadata.resource_version
    some = v1.list_pod_for_all_namespaces(label_selector="app in (web,db)").items
    assert {p.metadata.labels["app"] for p in some} == {"web", "db"}
    assert all(p.metadata.labels.get("app") != "web"
               for p in v1.list_pod_for_all_namespaces(label_selector="app!=web").items)
    node = spec.nodes[0].name
    on_node = v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    assert sorted(p.metadata.name for p in on_node) == sorted(p.name for p in spec.pods_on(node))
    assert len(v1.list_pod_for_all_namespaces(field_selector="status.phase=Running").items) == len(spec.pods)
    assert v1.list_pod_for_all_namespaces(field_selector="status.phase=Pending").items == []
    one = v1.list_namespaced_pod("default", field_selector=f"metadata.name={web[0]}").items
    assert [p.metadata.name for p in one] == [web[0]]
    both = v1.list_pod_for_all_namespaces(label_selector="app=web", field_selector=f"spec.nodeName={node}").items
    assert sorted(p.metadata.name for p in both) == sorted(p.name for p in spec.pods_on(node)
                                                           if p.labels.get("app") == "web")
    # Paging with limit/continue returns every pod exactly once.
    page1 = v1.list_pod_for_all_namespaces(limit=5)
    page2 = v1.list_pod_for_all_namespaces(limit=100, _continue=page1.metadata._continue)
    names = [p.metadata.name for p in page1.items + page2.items]
    assert len(page1.items) == 5 and sorted(names) == sorted(p.name for p in spec.pods)


def test_get_nodes_and_errors(lab: Lab, v1: client.CoreV1Api) -> None:
    nodes = v1.list_node().items
    assert [n.metadata.name for n in nodes] == sorted(n.name for n in lab.spec.nodes)
    n0 = v1.read_node(lab.spec.nodes[0].name)
    assert n0.status.node_info.kubelet_version.startswith("v1.32.")
    assert n0.status.allocatable["vpc.amazonaws.com/pod-eni"] == "9"
    assert {a.type: a.address for a in n0.status.addresses}["InternalIP"] == lab.spec.nodes[0].ip
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_pod("x", "default")
    body = json.loads(e.value.body)
    assert e.value.status == 404 and body["message"] == 'pods "x" not found' and body["reason"] == "NotFound"


def test_endpoint_slices_and_events(lab: Lab, api_client: client.ApiClient, v1: client.CoreV1Api) -> None:
    disc = client.DiscoveryV1Api(api_client)
    web = disc.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=web").items
    assert len(web) == 1 and web[0].address_type == "IPv4"
    assert sorted(e.addresses[0] for e in web[0].endpoints) == sorted(
        p.ip for p in lab.spec.pods if p.labels.get("app") == "web")
    assert all(e.conditions.ready and e.target_ref.kind == "Pod" for e in web[0].endpoints)
    k8s = disc.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=kubernetes")
    assert [e.addresses[0] for e in k8s.items[0].endpoints] == lab.spec.apiserver_ips
    pod = next(p for p in lab.spec.pods if p.sgfp)
    events = v1.list_namespaced_event(pod.namespace, field_selector=f"involvedObject.name={pod.name},"
                                                                    f"involvedObject.uid={pod.uid}").items
    assert {"Scheduled", "SecurityGroupRequested", "ResourceAllocated"} <= {e.reason for e in events}


def test_custom_objects(lab: Lab, api_client: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api_client)
    sgps = co.list_namespaced_custom_object("vpcresources.k8s.aws", "v1beta1", "shop", "securitygrouppolicies")
    assert sorted(i["metadata"]["name"] for i in sgps["items"]) == ["db-clients-sgp", "payments-sgp"]
    assert co.list_namespaced_custom_object("vpcresources.k8s.aws", "v1beta1", "default",
                                            "securitygrouppolicies")["items"] == []
    cnd = co.list_cluster_custom_object("vpcresources.k8s.aws", "v1alpha1", "cninodes")
    assert {i["metadata"]["name"]: i["spec"]["features"] for i in cnd["items"]} == {
        n.name: [{"name": "SecurityGroupsForPods"}] for n in lab.spec.nodes}
    one = co.get_cluster_custom_object("vpcresources.k8s.aws", "v1alpha1", "cninodes", lab.spec.nodes[0].name)
    assert one["kind"] == "CNINode"
    # CRs are not served under the wrong scope or version.
    status, _, _ = _raw(lab, "/apis/vpcresources.k8s.aws/v1alpha1/namespaces/shop/cninodes")
    assert status == 404


def _pod_body(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}


def test_watch_sees_a_created_pod(lab: Lab, v1: client.CoreV1Api) -> None:
    events: list[tuple[str, str, str]] = []
    running = threading.Event()
    w = watch.Watch()
    # Watch from the resourceVersion of a list taken before the create (as informers do): the
    # watch sees every change after it, however late its connection is made on a busy machine.
    since = v1.list_namespaced_pod("default", label_selector="test=watch").metadata.resource_version

    def consume() -> None:
        for ev in w.stream(v1.list_namespaced_pod, "default", label_selector="test=watch", resource_version=since,
                           timeout_seconds=WAIT):
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].status.phase))
            if ev["object"].status.phase == "Running":
                running.set()
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    v1.create_namespaced_pod("default", _pod_body("watched", {"test": "watch"}))
    assert running.wait(WAIT), events
    t.join(WAIT)
    assert events[0][:2] == ("ADDED", "watched") and ("MODIFIED", "watched", "Running") in events
    v1.delete_namespaced_pod("watched", "default")


def test_create_and_delete_pod_call_the_hooks(lab: Lab, v1: client.CoreV1Api) -> None:
    created = v1.create_namespaced_pod("default", _pod_body("hooked", {"placed-by": "hook"}))
    assert "hooked" in lab.hooks.created
    assert created.status.phase == "Running" and created.status.pod_ip == "10.0.9.9"
    assert created.spec.node_name == lab.spec.nodes[-1].name and created.metadata.uid
    reasons = {e.reason for e in v1.list_namespaced_event(
        "default", field_selector="involvedObject.name=hooked").items}
    assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_pod("default", _pod_body("hooked", {}))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"
    # No placement from the hook: the server schedules it itself with a free IP.
    plain = v1.create_namespaced_pod("default", {**_pod_body("", {}), "metadata": {"generateName": "plain-"}})
    assert plain.metadata.name.startswith("plain-") and plain.status.phase == "Running"
    used = {p.ip for p in lab.spec.pods}
    assert plain.status.pod_ip and plain.status.pod_ip not in used
    deleted = v1.delete_namespaced_pod("hooked", "default")
    assert deleted.metadata.deletion_timestamp is not None
    assert "hooked" in lab.hooks.deleted
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_pod("hooked", "default")
    assert e.value.status == 404
    assert v1.read_namespaced_pod_log(plain.metadata.name, "default", tail_lines=5) == (
        f"log of {plain.metadata.name}/main tail=5\n")
    v1.delete_namespaced_pod(plain.metadata.name, "default")
    patched = v1.patch_namespaced_pod(lab.spec.pods[0].name, lab.spec.pods[0].namespace,
                                      {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels["patched"] == "yes"


def _exec(v1: client.CoreV1Api, pod: Any, command: list[str], stdin: str | None = None) -> tuple[str, str, int]:
    resp = stream(v1.connect_get_namespaced_pod_exec, pod.name, pod.namespace, command=command, stdout=True,
                  stderr=True, stdin=stdin is not None, tty=False, _preload_content=False)
    try:
        if stdin is not None:
            resp.write_stdin(stdin)  # a text frame, as the Python client sends it
            resp.close_channel(0)  # v5: end of stdin
        resp.run_forever(timeout=WAIT)
        return resp.read_stdout(), resp.read_stderr(), resp.returncode
    finally:
        resp.close()
        # websocket-client skips closing its socket when the server closed first (send_close()
        # already marked it disconnected): close it here rather than leave it to the GC.
        if resp.sock is not None:
            resp.sock.shutdown()


def test_exec_stdout_stderr_exit_code_and_stdin(lab: Lab, v1: client.CoreV1Api) -> None:
    pod = next(p for p in lab.spec.pods if p.labels.get("app") == "web")
    assert _exec(v1, pod, ["echo", "hello"]) == ("hello\n", "", 0)
    assert lab.hooks.execs[-1] == (pod.name, pod.container_name, ["echo", "hello"])
    assert _exec(v1, pod, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == ("out\n", "err\n", 3)
    assert _exec(v1, pod, ["sh", "-c", "tr a-z A-Z"], stdin="shout\n") == ("SHOUT\n", "", 0)
    missing = copy.copy(pod)
    missing.name = "nope"
    with pytest.raises(ApiException, match="404"):
        _exec(v1, missing, ["true"])


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v5.channel.k8s.io"])
def test_exec_frames_on_the_wire(lab: Lab, protocol: str) -> None:
    """Binary frames with the channel byte, the Status on channel 3 with the ExitCode cause first,
    then the server's close (what kubectl waits for); never a 255 frame from the server."""
    pod = next(p for p in lab.spec.pods if p.labels.get("app") == "web")
    url = (lab.server.url.replace("https://", "wss://") + f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
           "/exec?command=sh&command=-c&command=echo%20a%3B%20exit%205&stdout=true&stderr=true")
    ws = websocket.create_connection(url, subprotocols=[protocol], header=[f"Authorization: Bearer {lab.token}"],
                                     sslopt={"ca_certs": str(lab.ca.cert_path)}, timeout=WAIT)
    frames: list[tuple[int, bytes]] = []
    try:
        assert ws.subprotocol == protocol
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            frames.append((opcode, data))
    finally:
        ws.close()
        ws.shutdown()
    assert all(op == websocket.ABNF.OPCODE_BINARY for op, _ in frames)
    assert frames[0][1] == b"\x01a\n" and frames[-1][1][0] == 3
    status = json.loads(frames[-1][1][1:])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "5"}
    assert all(data[0] != 255 for _, data in frames)


def test_auth_and_tls(lab: Lab) -> None:
    status, body, _ = _raw(lab, "/api/v1/pods", token=None)
    assert status == 401 and json.loads(body)["reason"] == "Unauthorized"
    assert _raw(lab, "/api/v1/pods", token="wrong")[0] == 401
    assert _raw(lab, "/_lab/ping", token=None)[0] == 401
    assert _raw(lab, "/_lab/ping")[:2] == (200, b'{"pong": true}')
    for path in ("/livez", "/readyz", "/healthz", "/version"):
        assert _raw(lab, path, token=None)[0] == 200, path
    assert _raw(lab, "/livez", token="wrong")[0] == 401  # a bad token is refused even there
    assert _raw(lab, "/api/v1/pods")[0] == 200
    # The server certificate only verifies against the lab CA.
    other = CertificateAuthority.create(lab.tmp / "other-ca")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _raw(lab, "/livez", ctx=ssl.create_default_context(cafile=str(other.cert_path)))


def test_table_output(lab: Lab) -> None:
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    status, body, _ = _raw(lab, "/api/v1/pods", headers=accept)
    table = json.loads(body)
    assert status == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    cols = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert cols[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert ("IP", 1) in cols and ("Node", 1) in cols
    row = next(r for r in table["rows"] if r["object"]["metadata"]["name"] == lab.spec.pods[0].name)
    assert row["cells"][1:4] == ["1/1", "Running", "0"] and row["cells"][5] == lab.spec.pods[0].ip
    cm = json.loads(_raw(lab, "/api/v1/namespaces/default/configmaps", headers=accept)[1])
    assert [c["name"] for c in cm["columnDefinitions"]][0] == "Name" and "Age" in [
        c["name"] for c in cm["columnDefinitions"]]


# -- kubectl ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubectl(lab: Lab):
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed (needed for the kubectl compatibility tests)")
    home = lab.tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HOME": str(home)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([exe, "--cache-dir", str(lab.tmp / "kcache"), *args], env=env, capture_output=True,
                           text=True, timeout=5 * WAIT)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p
    return run


def test_kubectl_get(lab: Lab, kubectl) -> None:
    out = kubectl("get", "pods", "-A").stdout
    assert out.split("\n")[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    for p in lab.spec.pods:
        assert any(line.split()[:2] == [p.namespace, p.name] and "Running" in line for line in out.splitlines())
    node = lab.spec.nodes[1].name
    wide = kubectl("get", "pods", "-l", "app=web", "--field-selector", f"spec.nodeName={node}",
                   "-o", "wide").stdout
    lines = wide.strip().splitlines()
    assert lines[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    expected = {p.name: p.ip for p in lab.spec.pods_on(node) if p.labels.get("app") == "web"}
    assert {line.split()[0]: line.split()[5] for line in lines[1:]} == expected
    assert all(line.split()[6] == node for line in lines[1:])
    sgp = kubectl("get", "sgp", "-n", "shop").stdout
    assert "payments-sgp" in sgp and "SECURITY-GROUP-IDS" in sgp


def test_kubectl_describe_pod(lab: Lab, kubectl) -> None:
    pod = next(p for p in lab.spec.pods if p.sgfp)
    out = kubectl("describe", "pod", "-n", pod.namespace, pod.name).stdout
    assert f"Name:             {pod.name}" in out and f"IP:               {pod.ip}" in out
    assert "vpc.amazonaws.com/pod-eni" in out and "Controlled By:  ReplicaSet/" in out
    assert "ResourceAllocated" in out and "Started container" in out


def test_kubectl_exec(lab: Lab, kubectl) -> None:
    pod = next(p for p in lab.spec.pods if p.labels.get("app") == "web")
    assert kubectl("exec", pod.name, "--", "echo", "hi").stdout == "hi\n"
    failed = kubectl("exec", pod.name, "--", "sh", "-c", "echo bye; exit 3", check=False)
    assert failed.returncode == 3 and failed.stdout == "bye\n"
    assert "command terminated with exit code 3" in failed.stderr
    p = subprocess.run(["sh", "-c", 'printf "piped" | "$0" "$@"', shutil.which("kubectl") or "kubectl",
                        "--cache-dir", str(lab.tmp / "kcache"), "exec", "-i", pod.name, "--", "cat"],
                       env={**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HOME": str(lab.tmp / "home")},
                       capture_output=True, text=True, timeout=5 * WAIT)
    assert (p.returncode, p.stdout) == (0, "piped")
