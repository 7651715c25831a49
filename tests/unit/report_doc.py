"""A small results document, shaped as plugins/report.py writes it, for the renderer tests."""
from __future__ import annotations

from netconform.report import model

CHECKS = {
    "dns.resolves": ("The pod resolves cluster names", "dns", "critical"),
    "dns.nxdomain": ("A name that cannot exist gets NXDOMAIN", "dns", "warning"),
    "gateway.route": ("The pod's default gateway resolves", "gateway", "critical"),
    "apiserver.node_clusterip": ("The node reaches the apiserver", "apiserver", "critical"),
    "service.endpoint": ("The pod reaches each ready endpoint", "service", "error"),
}


def result(nodeid: str, check_id: str, target: tuple[str, str], outcome: str, diagnosis: str = "",
           evidence: list | None = None) -> dict:
    title, area, severity = CHECKS[check_id]
    check = {"id": check_id, "title": title, "area": area, "severity": severity,
             "meaning": f"what a failure of {check_id} means", "remediation": "run `ip route get 10.0.0.1` | grep dev",
             "links": ["https://example.com/" + check_id]}
    when, phase_outcome = ("setup", "skipped") if outcome == "skipped" else ("call", outcome)
    recs = [model.phase(nodeid, when, phase_outcome, 0.25, check=check, target={"kind": target[0], "name": target[1]},
                        message=diagnosis, internal_error=outcome == "error", evidence=evidence)]
    if outcome == "error":
        recs[0]["outcome"] = "failed"
    return model.merge_phases(nodeid, recs)


def make_doc(fail_on: str = "error") -> dict:
    results = [
        result("checks/test_dns.py::test_dns_resolves[default/web-0-udp]", "dns.resolves", ("pod", "default/web-0"),
               "failed", "pod default/web-0: kubernetes.default did not resolve over UDP through 172.20.0.10: <timeout> "
               "| no *replica* answered",
               [{"name": "dns:resolve_like_pod", "where": "pod default/web-0",
                 "value": {"args": {"name": "kubernetes.default"}, "status": "ok", "value": {"ok": False}}}]),
        result("checks/test_dns.py::test_dns_nxdomain[default/web-0-udp]", "dns.nxdomain", ("pod", "default/web-0"),
               "failed", "pod default/web-0: a name that cannot exist got SERVFAIL"),
        result("checks/test_gateway.py::test_gateway_route[default/web-0-4]", "gateway.route", ("pod", "default/web-0"),
               "passed"),
        result("checks/test_gateway.py::test_gateway_route[default/web-0-6]", "gateway.route", ("pod", "default/web-0"),
               "skipped", "pod default/web-0 has no IPv6 address"),
        result("checks/test_apiserver.py::test_apiserver_node_clusterip[n1]", "apiserver.node_clusterip",
               ("node", "n1"), "error", "KeyError: 'gitVersion'"),
        result("checks/test_services.py::test_service_endpoint[shop/db-0-web]", "service.endpoint",
               ("pod", "shop/db-0"), "passed"),
    ]
    results[0]["files"] = ["pod_default_web-0/resolv.conf", "pod_default_web-0/routes.json"]
    model.apply_gate(results, fail_on)
    return {"schema": model.SCHEMA,
            "run": {"id": "20250102T030405Z-prod", "netconform_version": "0.1.0", "fail_on": fail_on,
                    "cluster": {"context": "arn:aws:eks:us-west-2:1:cluster/prod", "server": "https://10.0.0.1",
                                "version": "v1.31.0"},
                    "start": "2025-01-02T03:04:05Z", "duration_s": 12.5, "exit_status": 1,
                    "targets": {"pods": ["default/web-0", "shop/db-0"], "nodes": ["n1"]},
                    "invocation": ["checks/", "--pod", "default/web-0"]},
            "results": results,
            "bundle": {"folders": {"pod_default_web-0": {"target": "pod default/web-0",
                                                         "files": results[0]["files"], "errors": []}}}}
