"""apiserver: TCP, TLS verified against the cluster CA, then /livez and /readyz = 200 — through the
`kubernetes` ClusterIP and to every endpoint directly, from the pod and from its node.

Any HTTP answer is not "OK" (a k8snetlook defect): the certificate must chain to the cluster CA
and name `kubernetes.default.svc`, and both health endpoints must say 200.
"""
from __future__ import annotations

import pytest

from fixtures.clusterip import reach_clusterip
from netconform import cases
from plugins.targets import targets

# Every apiserver serving certificate carries this name (kube-apiserver adds it itself).
SERVER_NAME = "kubernetes.default.svc"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "endpoint" not in metafunc.fixturenames:
        return
    plugin = targets(metafunc.config)
    eps = cases.apiserver_endpoints(plugin.snapshot) if plugin and plugin.snapshot else []
    params = [pytest.param(e, id=f"{e.ip}:{e.port}") for e in eps] or [
        pytest.param(None, id="no-endpoints", marks=pytest.mark.skip(
            reason="the kubernetes Service has no ready endpoints in its EndpointSlices (or they cannot be listed)"))]
    metafunc.parametrize("endpoint", params)


@pytest.fixture
def cluster_ca(request) -> str:
    ca = targets(request.config).snapshot.cluster_ca()
    if not ca:
        pytest.skip("no cluster CA: neither the kube-root-ca.crt ConfigMap nor the kubeconfig has one "
                    "(needs: list configmaps), so TLS cannot be verified")
    return ca


@pytest.fixture
def kubernetes_svc(request) -> cases.ServicePort:
    svc = cases.kubernetes_service(targets(request.config).snapshot)
    if svc is None:
        pytest.skip("the default/kubernetes Service is missing (or services cannot be listed)")
    return svc


def _failed_step(path: str, last: dict) -> str:
    return {"tls-verify-failed": f"its TLS certificate did not verify against the cluster CA ({last.get('error')})",
            "http-status": f"{path} answered HTTP {last.get('status')}"}.get(
        last.get("error_kind"), f"{path} failed: {last.get('error_kind')} ({last.get('error')})")


def _verdict(h: dict, where: str, what: str) -> str:
    """One sentence saying which step failed (apiserver_health result)."""
    path = "/livez" if not h["livez_ok"] else "/readyz"
    last = (h["livez"] if not h["livez_ok"] else h["readyz"])[-1]
    return f"{where}: {what}: {_failed_step(path, last)}"


def _health(probe, ip: str, port: int, ca: str) -> dict:
    return probe("https:apiserver_health", ip=ip, port=port, ca_pem=ca, server_name=SERVER_NAME,
                 timeout=probe.timeout, attempts=1)


def _clusterip_failure(probe, svc: cases.ServicePort, ca: str, node: str, self_ips: list[str]) -> str:
    """'' when /livez and /readyz both answered 200 through the ClusterIP, else the verdict.

    Each path is attempted on its own new connections: kube-proxy picks an endpoint per
    connection, so requiring one attempt to land both requests on live endpoints would turn a
    single dead endpoint into a coin toss.
    """
    for path in ("/livez", "/readyz"):
        out = reach_clusterip(probe, svc.cluster_ip, svc.port, svc.endpoints, "https", node=node, service=svc.key,
                              self_ips=self_ips, path=path, ca_pem=ca, server_name=SERVER_NAME)
        if not out.ok:
            # A TLS or HTTP failure says more than the attempt count: which stage, with OpenSSL's reason.
            stage = out.last_failure.get("error_kind") or ""
            lead = f"{_failed_step(path, out.last_failure)}; " if stage.startswith(("tls", "http", "ca")) else f"{path}: "
            return f"the kubernetes ClusterIP {svc.cluster_ip}:{svc.port}: {lead}{out.sentence}"
    return ""


@pytest.mark.check("apiserver.clusterip")
def test_apiserver_clusterip(pod, pod_probe, cluster_ca, kubernetes_svc):
    failure = _clusterip_failure(pod_probe, kubernetes_svc, cluster_ca, pod.node, pod.ips)
    assert not failure, f"pod {pod.key} on node {pod.node}: {failure}"


@pytest.mark.check("apiserver.endpoint")
def test_apiserver_endpoint(pod, endpoint, pod_probe, cluster_ca):
    h = _health(pod_probe, endpoint.ip, endpoint.port, cluster_ca)
    assert h["ok"], _verdict(h, f"pod {pod.key}", f"apiserver endpoint {endpoint.ip}:{endpoint.port}")


@pytest.mark.check("apiserver.node_clusterip")
def test_apiserver_node_clusterip(node, node_probe, cluster_ca, kubernetes_svc):
    failure = _clusterip_failure(node_probe, kubernetes_svc, cluster_ca, node.name, [node.ip])
    assert not failure, f"node {node.name}: {failure}"


@pytest.mark.check("apiserver.node_endpoint")
def test_apiserver_node_endpoint(node, endpoint, node_probe, cluster_ca):
    h = _health(node_probe, endpoint.ip, endpoint.port, cluster_ca)
    assert h["ok"], _verdict(h, f"node {node.name}", f"apiserver endpoint {endpoint.ip}:{endpoint.port}")
