"""Target planning and check cases, on a cluster snapshot (pure: no network)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netconform import cases
from netconform.analysis.selectors import label_selector_from_dict, parse_label_selector, selector_matches
from netconform.errors import UsageError
from netconform.kube import Snapshot
from netconform.lab.k8s_objects import objects_from_spec
from netconform.lab.topology import build_spec
from netconform.targets import plan_targets, pod_target


@pytest.fixture(scope="module", params=["vpc-cni", "flannel"])
def snap(request) -> Snapshot:
    spec = build_spec("tg", request.param, 2, 3)
    objs = objects_from_spec(spec, ca_pem="PEM", api_server_url="https://127.0.0.1:1", created=datetime.now(timezone.utc))
    by = lambda kind: [o for o in objs if o["kind"] == kind]  # noqa: E731
    return Snapshot(context="tg", server="https://127.0.0.1:1", version={"gitVersion": "v1.32.0"},
                    pods=by("Pod"), services=by("Service"), endpointslices=by("EndpointSlice"), nodes=by("Node"),
                    root_ca_configmaps=[o for o in by("ConfigMap") if o["metadata"]["name"] == "kube-root-ca.crt"])


@pytest.mark.parametrize("selector,labels,expected", [
    ("app=web", {"app": "web"}, True),
    ("app==web,tier!=db", {"app": "web"}, True),
    ("app in (web, db)", {"app": "db"}, True),
    ("app notin (web)", {}, True),
    ("app,!legacy", {"app": "x", "legacy": "1"}, False),
    ("", {"anything": "x"}, True),
])
def test_selectors(selector, labels, expected):
    assert selector_matches(parse_label_selector(selector), labels) is expected


def test_label_selector_objects():
    reqs = label_selector_from_dict({"matchLabels": {"app": "payments"},
                                     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})
    assert selector_matches(reqs, {"app": "payments", "tier": "web"})
    assert not selector_matches(reqs, {"app": "payments", "tier": "db"})


def test_bad_selector_is_a_usage_error(snap):
    with pytest.raises(UsageError, match="--selector"):
        plan_targets(snap, selector="app in (web")


def test_pod_refs_resolve_with_their_nodes(snap):
    web = next(p for p in snap.pods if p["metadata"]["labels"].get("app") == "web")
    plan = plan_targets(snap, pod_refs=[("default", web["metadata"]["name"])])
    assert [p.key for p in plan.pods] == [f"default/{web['metadata']['name']}"]
    assert [n.name for n in plan.nodes] == [web["spec"]["nodeName"]]
    assert plan.nodes[0].host_network_pods and all(p.host_network for p in plan.nodes[0].host_network_pods)


def test_unknown_pod_and_namespace_are_usage_errors(snap):
    with pytest.raises(UsageError, match="no such pod in namespace default"):
        plan_targets(snap, pod_refs=[("default", "nope")])
    with pytest.raises(UsageError, match="namespace 'ghost' does not exist"):
        plan_targets(snap, pod_refs=[("ghost", "x")])


def test_no_target_on_a_real_cluster_names_the_options_and_keeps_node_checks(snap):
    plan = plan_targets(snap)
    assert plan.pods == [] and "--pod" in plan.no_pod_reason and "--selector" in plan.no_pod_reason
    assert sorted(n.name for n in plan.nodes) == sorted(n["metadata"]["name"] for n in snap.nodes)


def test_lab_default_targets_are_the_workload_pods(snap):
    plan = plan_targets(snap, lab_default=True)
    assert plan.pods and all(not p.host_network and p.namespace not in ("kube-system", "kube-flannel")
                             for p in plan.pods)


def test_selector_with_namespace(snap):
    plan = plan_targets(snap, selector="app=web", namespace="default")
    assert plan.pods and {p.labels["app"] for p in plan.pods} == {"web"}
    with pytest.raises(UsageError, match="matches no pod in namespace shop"):
        plan_targets(snap, selector="app=web", namespace="shop")


def test_not_probeable_reasons(snap):
    raw = next(p for p in snap.pods if p["spec"].get("hostNetwork"))
    assert "uses hostNetwork" in pod_target(raw).not_probeable
    pending = {**raw, "spec": {**raw["spec"], "hostNetwork": False}, "status": {"phase": "Pending"}}
    assert "is Pending, not Running" in pod_target(pending).not_probeable


def test_cases_come_from_the_api_objects(snap):
    k8s = cases.kubernetes_service(snap)
    assert k8s.port == 443 and sorted(e.ip for e in k8s.endpoints) == sorted(
        a for s in snap.slices_for("default", "kubernetes") for e in s["endpoints"] for a in e["addresses"])
    reps = cases.dns_replicas(snap)
    coredns = sorted(p["status"]["podIP"] for p in snap.pods if p["metadata"]["labels"].get("k8s-app") == "kube-dns")
    assert sorted(r.ip for r in reps) == coredns and all(r.name.startswith("kube-system/coredns-") for r in reps)
    assert cases.dns_service_ip(snap) == cases.kube_dns_service(snap)["spec"]["clusterIP"]
    ns, name, ips = cases.headless_service(snap, "shop")
    assert (ns, name) == ("shop", "db") and len(ips) == 1
    ports = {p.id for p in cases.service_cases(snap, [])}
    assert {"kube-system/kube-dns:53/udp", "kube-system/kube-dns:53/tcp", "default/kubernetes:443/tcp"} <= ports
    with pytest.raises(UsageError, match="--service default/nope"):
        cases.service_cases(snap, [("default", "nope")])


def test_pod_pairs_cover_same_and_other_nodes(snap):
    plan = plan_targets(snap, lab_default=True)
    src = plan.pods[0]
    pairs = [p for p in cases.pod_pairs(snap, [src]) if p.src.key == src.key]
    assert {p.relation for p in pairs} == {"same-node", "other-node"}
    assert all(p.dst.key != src.key for p in pairs)
    assert {p.dst.node for p in pairs} == {n["metadata"]["name"] for n in snap.nodes}
