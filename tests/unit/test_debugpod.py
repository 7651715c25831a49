"""Debug pods: the manifest, why one cannot be had (on real API and kubelet texts), the lifecycle."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from netconform.remote.debugpod import (
    EXPIRES_AT,
    MANAGED_BY,
    RUN_ID,
    DebugPodOptions,
    DebugPods,
    cleanup,
    explain_api_error,
    explain_not_starting,
    manifest,
    node_refusal,
    pod_name,
)

NOW = dt.datetime(2026, 12, 5, 7, 0, 0, tzinfo=dt.timezone.utc)


def test_manifest_is_a_node_debug_pod_that_ends_by_itself():
    m = manifest("ip-10-0-0-10.us-west-2.compute.internal", DebugPodOptions(run_id="r1", ttl_s=600,
                                                                            pull_secrets=["mirror"]), now=NOW)
    spec, c = m["spec"], m["spec"]["containers"][0]
    assert spec["nodeName"] == "ip-10-0-0-10.us-west-2.compute.internal"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["hostPID"] and spec["hostNetwork"] and c["securityContext"]["privileged"]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 600
    assert "time.sleep(600)" in c["command"][-1] and c["command"][0] == "python3"
    assert spec["automountServiceAccountToken"] is False
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    host = next(v for v in spec["volumes"] if v["name"] == "host-root")
    assert host["hostPath"]["path"] == "/"
    assert {"name": "host-root", "mountPath": "/host", "readOnly": True} in c["volumeMounts"]
    assert next(v for v in spec["volumes"] if "emptyDir" in v)["emptyDir"]["medium"] == "Memory"
    assert spec["imagePullSecrets"] == [{"name": "mirror"}]
    labels, ann = m["metadata"]["labels"], m["metadata"]["annotations"]
    assert labels[MANAGED_BY[0]] == "netconform" and labels[RUN_ID] == "r1"
    assert ann[EXPIRES_AT] == "2026-12-05T07:10:00Z"


@pytest.mark.parametrize("node", ["ip-10-0-0-10.us-west-2.compute.internal", "a" * 253, "Node_1", "x"])
def test_pod_names_are_dns_labels_unique_per_node_and_run(node):
    name = pod_name(node, "run-1")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name != pod_name(node, "run-2") and name != pod_name(node + "b", "run-1")


# Recorded: kubernetes/kubernetes#109096 (Pod Security enforce, baseline).
PSA_109096 = ('pods "nginx-hostpid-7f9d8b5c6d-abcde" is forbidden: violates PodSecurity "baseline:latest": '
              'host namespaces (hostPID=true)')
# Recorded: cilium/pwru#583.
PSA_PWRU = ('pods "pwru" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true, '
            'hostPID=true), hostPath volumes (volume "sys-kernel-debug"), privileged (container "pwru" must not set '
            'securityContext.privileged=true)')


@pytest.mark.parametrize("message", [PSA_109096, PSA_PWRU])
def test_pod_security_refusal_names_the_level_and_the_label_command(message):
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": "Forbidden",
            "code": 403}
    r = explain_api_error(403, body, namespace="netconform")
    assert r.kind == "psa"
    text = str(r)
    assert '"baseline:latest"' in text and "privileged" in text
    assert "kubectl label namespace netconform pod-security.kubernetes.io/enforce=privileged" in text
    assert "\n" not in text


# The apiserver's forbidden message (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters
# errors.go): `%s "%s" is forbidden: User "%s" cannot %s resource "%s" in API group "%s" in the namespace "%s"`.
RBAC_EXEC = ('pods "netconform-ip-10-0-0-10-3f2a9c1e" is forbidden: User "ci-bot" cannot create resource '
             '"pods/exec" in API group "" in the namespace "netconform"')
RBAC_CREATE = ('pods is forbidden: User "system:serviceaccount:ci:runner" cannot create resource "pods" in API group '
               '"" in the namespace "netconform"')


def test_rbac_refusal_names_verb_resource_and_namespace():
    r = explain_api_error(403, {"message": RBAC_EXEC, "reason": "Forbidden", "code": 403}, namespace="netconform")
    assert r.kind == "rbac" and 'User "ci-bot" may not create pods/exec in namespace netconform' in str(r)
    r = explain_api_error(403, {"message": RBAC_CREATE}, namespace="netconform")
    assert 'User "system:serviceaccount:ci:runner" may not create pods in namespace netconform' in str(r)


def test_missing_namespace_and_other_refusals_are_one_line():
    r = explain_api_error(404, {"message": 'namespaces "netconform" not found', "reason": "NotFound"},
                          namespace="netconform")
    assert r.kind == "namespace" and "kubectl create namespace netconform" in str(r)
    r = explain_api_error(500, '{"message": "etcdserver: request timed out"}', namespace="netconform")
    assert r.kind == "api" and "etcdserver: request timed out" in str(r)


# Recorded kubelet statuses: ImagePullBackOff (kubelet images/image_manager.go "Back-off pulling image"),
# and a nodeName pod on a full node (ContainerSolutions/runbooks#19: Failed, OutOfpods).
PULL_BACKOFF = {"metadata": {"name": "netconform-n1-1"}, "spec": {"nodeName": "n1"},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "netconform", "ready": False,
                           "state": {"waiting": {"reason": "ImagePullBackOff",
                                                 "message": 'Back-off pulling image "mirror.local/python:3.13-slim"'}}}]}}
OUT_OF_PODS = {"metadata": {"name": "netconform-n1-1"}, "spec": {"nodeName": "n1"},
               "status": {"phase": "Failed", "reason": "OutOfpods",
                          "message": "Pod Node didn't have enough resource: pods, requested: 1, used: 110, capacity: 110"}}
CREATING = {"metadata": {"name": "x"}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}


def test_pods_that_will_not_start_say_why():
    r = explain_not_starting(PULL_BACKOFF, "mirror.local/python:3.13-slim")
    assert r.kind == "image" and "--debug-image" in str(r) and "mirror.local/python:3.13-slim" in str(r)
    r = explain_not_starting(OUT_OF_PODS, "img")
    assert r.kind == "node" and "full" in str(r) and "OutOfpods" in str(r)
    assert explain_not_starting(CREATING, "img") is None


def test_nodes_that_cannot_host_a_debug_pod():
    fargate = {"metadata": {"name": "fargate-ip-1", "labels": {"eks.amazonaws.com/compute-type": "fargate"}}}
    assert node_refusal(fargate, "fargate-ip-1").kind == "node"
    not_ready = {"metadata": {"name": "n"}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}}
    assert "Kubelet stopped posting node status." in str(node_refusal(not_ready, "n"))
    assert node_refusal(None, "gone").kind == "node"
    ready = {"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node_refusal(ready, "n") is None


class FakeApi:
    """Answers like an API server that accepts everything; records every request."""

    def __init__(self, *, refuse: dict | None = None, starts: bool = True):
        self.calls: list[tuple[str, str, tuple]] = []
        self.pods: dict[str, dict] = {}
        self.refuse = refuse
        self.starts = starts

    def request(self, method, path, *, body=None, query=None, timeout=30.0):
        q = tuple(query or ())
        self.calls.append((method, path, q))
        if method == "POST":
            if self.refuse:
                return 403, self.refuse
            if ("dryRun", "All") in q:
                return 201, body
            obj = {**body, "metadata": {**body["metadata"], "uid": f"uid-{len(self.pods)}",
                                        "creationTimestamp": "2026-12-05T06:00:00Z"},
                   "status": {"phase": "Running" if self.starts else "Pending",
                              "containerStatuses": [{"state": {"running": {}} if self.starts else
                                                     {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}}
            self.pods[obj["metadata"]["name"]] = obj
            return 201, obj
        if method == "GET":
            return 200, {"items": list(self.pods.values())}
        if method == "DELETE":
            name = path.rsplit("/", 1)[1]
            pod = self.pods.get(name)
            if pod and body.get("preconditions", {}).get("uid") not in ("", pod["metadata"]["uid"]):
                return 409, {"message": "precondition failed: UID"}
            self.pods.pop(name, None)
            return 200, {}
        raise AssertionError(method)


def _nodes(*names):
    return [(n, {"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}) for n in names]


def test_lifecycle_dry_run_first_one_list_per_poll_and_delete_by_uid():
    api = FakeApi()
    pods = DebugPods(None, DebugPodOptions(run_id="r1"), api=api)
    made = pods.create(_nodes("n1", "n2", "n3"))
    assert all(p.ready and p.uid for p in made.values()), made
    posts = [c for c in api.calls if c[0] == "POST"]
    assert len(posts) == 6 and sum(("dryRun", "All") in c[2] for c in posts) == 3
    gets = [c for c in api.calls if c[0] == "GET"]
    assert len(gets) == 1 and ("labelSelector", f"{RUN_ID}=r1") in gets[0][2]
    assert sorted(pods.delete_all()) == sorted(f"netconform/{p.name}" for p in made.values())
    assert api.pods == {} and pods.delete_all() == []


def test_refusals_are_recorded_per_node_and_nothing_is_created():
    api = FakeApi(refuse={"message": PSA_PWRU, "reason": "Forbidden", "code": 403})
    made = DebugPods(None, DebugPodOptions(run_id="r1"), api=api).create(_nodes("n1"))
    assert not made["n1"].ready and made["n1"].refusal_kind == "psa" and api.pods == {}


def test_a_pod_whose_image_cannot_be_pulled_is_refused_and_still_deleted():
    api = FakeApi(starts=False)
    pods = DebugPods(None, DebugPodOptions(run_id="r1", image="nope:1"), api=api)
    made = pods.create(_nodes("n1"))
    assert made["n1"].refusal_kind == "image" and "nope:1" in made["n1"].refusal
    assert pods.delete_all() and api.pods == {}


def test_sweep_deletes_only_expired_pods_of_other_runs_and_cleanup_honours_age():
    api = FakeApi()
    old = DebugPods(None, DebugPodOptions(run_id="old", ttl_s=1), api=api)
    old.create(_nodes("n1"))
    for p in api.pods.values():
        p["metadata"]["annotations"][EXPIRES_AT] = "2020-01-01T00:00:00Z"
    mine = DebugPods(None, DebugPodOptions(run_id="new"), api=api)
    mine.create(_nodes("n1"))
    assert len(mine.sweep_expired()) == 1 and len(api.pods) == 1
    deleted, kept = cleanup(None, "netconform", older_than_s=10 ** 9, api=api)
    assert deleted == [] and kept == [] and len(api.pods) == 1
    deleted, _ = cleanup(None, None, api=api)
    assert len(deleted) == 1 and api.pods == {}
