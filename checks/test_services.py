"""Services: connect to the ClusterIP:port and to every ready endpoint (a connect, or a DNS query
for UDP/53 — not a ping), so a failure names the dead endpoint. Default: kube-dns and kubernetes."""
from __future__ import annotations

import pytest

from fixtures.clusterip import ask_directly, reach_clusterip
from netconform import cases
from netconform.analysis.resolvconf import cluster_domain_from_search, parse_resolv_conf
from netconform.analysis.vip import Backend, failure_phrase
from plugins.targets import targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plugin = targets(metafunc.config)
    if plugin is None or plugin.snapshot is None:
        return
    ports = cases.service_cases(plugin.snapshot, metafunc.config.option.service)  # validated at start
    if "service_port" in metafunc.fixturenames:
        metafunc.parametrize("service_port", [pytest.param(p, id=p.id) for p in ports if p.cluster_ip != "None"])
    if "service_endpoint" in metafunc.fixturenames:
        params = [pytest.param((p, e), id=f"{p.id}-{e.id}") for p in ports for e in p.endpoints]
        metafunc.parametrize("service_endpoint", params or [pytest.param(None, id="no-endpoints", marks=pytest.mark.skip(
            reason="the services checked have no ready endpoints"))])


def _attempt(request, sp: cases.ServicePort) -> tuple[str, dict]:
    """How to ask one address of this service port whether it answers: (vip attempt kind, args)."""
    if sp.protocol != "UDP":
        return "tcp", {}
    if not sp.is_dns:
        pytest.skip(f"{sp.id}: UDP reachability needs an application answer; only DNS (53) is probed")
    # Ask for a name in the cluster's own zone, so the answer never waits on an upstream resolver
    # (air-gapped clusters have none) — the same question the DNS checks ask, so it is asked once.
    # Without the zone, any DNS answer to an outside name proves reachability.
    pod = request.getfixturevalue("pod")
    try:
        domain = cluster_domain_from_search(parse_resolv_conf(request.getfixturevalue("resolv_conf")), pod.namespace)
    except pytest.skip.Exception:  # resolv.conf unreadable: the reachability check still stands
        domain = None
    if domain:
        return "dns", {"name": f"kubernetes.default.svc.{domain}.", "tcp": False}
    return "dns", {"name": "kubernetes.default.svc.", "tcp": False, "any_rcode": True}


@pytest.mark.check("service.clusterip")
def test_service_clusterip(request, pod, service_port, pod_probe):
    sp = service_port
    kind, args = _attempt(request, sp)
    out = reach_clusterip(pod_probe, sp.cluster_ip, sp.port, sp.endpoints, kind, node=pod.node, service=sp.key,
                          self_ips=pod.ips, **args)
    assert out.ok, f"pod {pod.key}: Service {sp.id} ClusterIP did not answer from node {pod.node}: {out.sentence}"


@pytest.mark.check("service.endpoint")
def test_service_endpoint(request, pod, service_endpoint, pod_probe):
    sp, ep = service_endpoint
    kind, args = _attempt(request, sp)
    r = ask_directly(pod_probe, kind, ep.ip, ep.port, **args)
    label = Backend(ep.name, ep.ip, ep.port).label
    os_text = f" ({r['error']})" if r["error"] and r["error_kind"] != "timeout" else ""
    assert r["ok"], (f"pod {pod.key}: ready endpoint {label}{', node ' + ep.node if ep.node else ''} "
                     f"of Service {sp.id} did not answer: it {failure_phrase(r)}{os_text}")
