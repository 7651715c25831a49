"""Services: connect to the ClusterIP:port and to every ready endpoint (a connect, or a DNS query
for UDP/53 — not a ping), so a failure names the dead endpoint. Default: kube-dns and kubernetes."""
from __future__ import annotations

import pytest

from netconform import cases
from netconform.retry import clusterip_attempts, until_ok
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


def _reach_once(pod_probe, ip: str, sp: cases.ServicePort, port: int) -> dict:
    """One attempt at one address of a service port: {"ok", "what"}."""
    if sp.protocol == "UDP":
        if not sp.is_dns:
            pytest.skip(f"{sp.id}: UDP reachability needs an application answer; only DNS (53) is probed")
        r = pod_probe("dns:query", server=ip, port=port, name="kubernetes.default.svc.", tcp=False,
                      timeout=pod_probe.timeout)
        # Any DNS answer (even NXDOMAIN for this name outside the cluster domain) proves reachability.
        return {"ok": bool(r["rcode"]), "what": f"answered {r['rcode']}" if r["rcode"] else
                f"no DNS answer over UDP ({r['error_kind']})"}
    r = pod_probe("tcp:connect", ip=ip, port=port, timeout=pod_probe.timeout)
    return {"ok": r["ok"], "what": "connected" if r["ok"] else f"{r['error_kind']} ({r['error']})"}


@pytest.mark.check("service.clusterip")
def test_service_clusterip(pod, service_port, pod_probe):
    sp = service_port
    last, tries = until_ok(lambda: _reach_once(pod_probe, sp.cluster_ip, sp, sp.port),
                           max_attempts=clusterip_attempts(len(sp.endpoints)), budget_s=3 * pod_probe.timeout)
    kinds = sorted({t["what"] for t in tries if not t["ok"]})
    assert last["ok"], (f"pod {pod.key}: Service {sp.id} ClusterIP {sp.cluster_ip}:{sp.port} did not answer "
                        f"from node {pod.node} in {len(tries)} attempts: {'; '.join(kinds)}")


@pytest.mark.check("service.endpoint")
def test_service_endpoint(pod, service_endpoint, pod_probe):
    sp, ep = service_endpoint
    r = _reach_once(pod_probe, ep.ip, sp, ep.port)
    ok, what = r["ok"], r["what"]
    assert ok, (f"pod {pod.key}: ready endpoint {ep.name} ({ep.ip}:{ep.port}{', node ' + ep.node if ep.node else ''}) "
                f"of Service {sp.id} did not answer: {what}")
