"""External reachability, opt-in only (--external-ip / --external-host): nothing leaves the
cluster by default, so air-gapped clusters never see a false alarm or an unexpected packet."""
from __future__ import annotations

import pytest

OPT_IN = ("no external target: nothing leaves the cluster by default; "
          "opt in with --external-ip IP or --external-host NAME")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "external" not in metafunc.fixturenames:
        return
    opt = metafunc.config.option
    targets = [("ip", ip) for ip in opt.external_ip] + [("host", h) for h in opt.external_host]
    metafunc.parametrize("external", [pytest.param(t, id=t[1]) for t in targets] or [
        pytest.param(None, id="not-requested", marks=pytest.mark.skip(reason=OPT_IN))])


def _address(pod, external, pod_probe, resolv_conf: str) -> str:
    kind, value = external
    if kind == "ip":
        return value
    r = pod_probe("dns:resolve_like_pod", resolv_conf=resolv_conf, name=value, timeout=pod_probe.timeout, attempts=1)
    assert r["ok"] and r["answers"], f"pod {pod.key} could not resolve external host {value}: {r['outcome']}"
    return r["answers"][0]


@pytest.mark.check("external.icmp")
def test_external_icmp(pod, external, pod_probe, resolv_conf):
    ip = _address(pod, external, pod_probe, resolv_conf)
    r = pod_probe("icmp:ping", dst=ip, count=2, timeout=pod_probe.timeout / 2)
    assert r["ok"], f"pod {pod.key} got no ICMP reply from external {external[1]} ({ip}): {r['error_kind']}"


@pytest.mark.check("external.tcp")
def test_external_tcp(pod, external, pod_probe, resolv_conf):
    ip = _address(pod, external, pod_probe, resolv_conf)
    r = pod_probe("tcp:connect", ip=ip, port=443, timeout=pod_probe.timeout)
    assert r["ok"], f"pod {pod.key} could not connect to external {external[1]} ({ip}):443: {r['error_kind']} ({r['error']})"
