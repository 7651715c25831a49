"""Pod to pod: from each target pod to one pod on its node and one on every other node (or the
--dst-pod pods): ICMP, and a TCP connect to a declared containerPort — a connect, not a ping."""
from __future__ import annotations

import pytest

from netconform import cases
from plugins.targets import targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pod_pair" not in metafunc.fixturenames:
        return
    plugin = targets(metafunc.config)
    if plugin is None or plugin.plan is None:
        return
    pairs = cases.pod_pairs(plugin.snapshot, plugin.plan.pods, metafunc.config.option.dst_pod)
    reason = plugin.plan.no_pod_reason or "no destination pod: the cluster has no other running pod"
    metafunc.parametrize("pod_pair", [pytest.param(p, id=p.id) for p in pairs] or [
        pytest.param(None, id="no-pairs", marks=pytest.mark.skip(reason=reason))])


@pytest.fixture
def pod(pod_pair):
    """The source pod of the pair (so `pod_probe` runs in the source's netns)."""
    return pod_pair.src


def _dst(pair) -> str:
    d = pair.dst
    if d.not_probeable:
        pytest.skip(d.not_probeable)
    return f"{d.key} ({d.ip}, {'same node' if pair.relation == 'same-node' else 'node ' + d.node})"


@pytest.mark.check("pod2pod.icmp")
def test_pod_to_pod_icmp(pod_pair, pod_probe):
    where = _dst(pod_pair)
    r = pod_probe("icmp:ping", dst=pod_pair.dst.ip, count=2, timeout=pod_probe.timeout / 2)
    assert r["ok"], (f"pod {pod_pair.src.key} got no ICMP echo reply from {where}: "
                     f"{r['error_kind']} {r['error']}".strip())


@pytest.mark.check("pod2pod.tcp")
def test_pod_to_pod_tcp(pod_pair, pod_probe):
    where = _dst(pod_pair)
    port = next((p for p in pod_pair.dst.ports if p.get("protocol", "TCP") == "TCP"), None)
    if port is None:
        pytest.skip(f"{pod_pair.dst.key} declares no TCP containerPort to connect to")
    r = pod_probe("tcp:connect", ip=pod_pair.dst.ip, port=port["containerPort"], timeout=pod_probe.timeout)
    how = "refused: the path works but nothing listens" if r["error_kind"] == "refused" else r["error_kind"]
    assert r["ok"], (f"pod {pod_pair.src.key} could not connect to {where} port "
                     f"{port['containerPort']}/TCP ({port.get('name', '')}): {how}")
