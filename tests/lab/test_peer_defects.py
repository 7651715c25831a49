"""k8snetlook's defects (shared/reference/peers.md) cannot occur here. Each test reproduces the
situation where that tool gave a wrong answer and shows netconform's answer is right:

- the "gateway" check pinged the *host's* gateway   -> test_gateway_is_the_pods_own
- any HTTP answer counted as apiserver OK (no TLS)  -> test_apiserver_tls_is_verified_against_the_cluster_ca
- cluster domain hard-coded                          -> test_non_default_cluster_domain
- exit code always 0                                 -> asserted in the TLS test (a failing run exits 1)
- endpoints pinged instead of connected, a broken endpoint hidden behind a working ClusterIP ->
  the detection matrix (service-endpoint-down: ICMP to the pod passes, the TCP connect fails;
  apiserver-endpoint-down: the ClusterIP check passes while the per-endpoint check names the dead one).
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import requires_root

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [requires_root, pytest.mark.lab]


def _name(prefix: str) -> str:
    return f"{prefix}{os.environ.get('PYTEST_XDIST_WORKER', 'gw').replace('gw', '')[:2]}{os.getpid() % 1000}"


@pytest.fixture(scope="module")
def lab():
    from netconform.lab.cli import lab_env, start_lab, stop_lab
    from netconform.lab.state import read_json

    name = _name("pd")
    paths = start_lab(name, "vpc-cni")
    try:
        yield name, {**os.environ, **lab_env(paths)}, read_json(paths.status)
    finally:
        stop_lab(name)


def run(env: dict, *args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict[str, tuple[str, str]]]:
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "checks/", "-q", "-p", "no:cacheprovider",
                           "--probe-timeout", "1", f"--junitxml={junit}", "--report-dir", str(tmp_path / "reports"),
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        node = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        kind = {"failure": "failed", "error": "error", "skipped": "skipped"}[node.tag] if node is not None else "passed"
        results[case.get("name")] = (kind, (node.get("message", "") + (node.text or "")) if node is not None else "")
    return proc, results


def _web(status: dict) -> dict:
    return next(p for p in status["pods"] if p["name"].startswith("web-"))


def test_gateway_is_the_pods_own(lab, tmp_path):
    """With the *node's* default gateway broken, the pod's gateway checks still pass: they test
    the pod's own first hop (169.254.1.1 -> its host veth), not the host's gateway."""
    name, env, status = lab
    web = _web(status)
    node = next(n for n in status["nodes"] if n["name"] == web["node"])
    ns = node["netns"]
    subprocess.run(["ip", "-n", ns, "route", "replace", "default", "via", "10.0.0.99"], check=True)
    try:
        proc, results = run(env, "--pod", f"{web['namespace']}/{web['name']}", "-k", "gateway", tmp_path=tmp_path)
    finally:
        subprocess.run(["ip", "-n", ns, "route", "replace", "default", "via", status["nodes"][0]["ip"].rsplit(".", 1)[0] + ".1"],
                       check=True)
    v4 = {k: v for k, v in results.items() if k.endswith("-v4]")}
    assert len(v4) == 2 and all(kind == "passed" for kind, _ in v4.values()), (v4, proc.stdout[-2000:])


def _set_root_ca(env: dict, pem: str) -> dict[str, str]:
    """Replace every kube-root-ca.crt ConfigMap's CA; returns the old values by namespace."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
    old = {}
    for cm in api.list_config_map_for_all_namespaces(field_selector="metadata.name=kube-root-ca.crt").items:
        old[cm.metadata.namespace] = cm.data["ca.crt"]
        api.patch_namespaced_config_map("kube-root-ca.crt", cm.metadata.namespace, {"data": {"ca.crt": pem}})
    return old


def test_apiserver_tls_is_verified_against_the_cluster_ca(lab, tmp_path):
    """If the cluster CA pods trust is not the one that signed the apiserver's certificate, every
    apiserver check fails and says so — an HTTP 200 over unverified TLS is not "OK"."""
    from netconform.lab.pki import CertificateAuthority

    name, env, status = lab
    web = _web(status)
    foreign = CertificateAuthority.create(tmp_path / "foreign", "someone-elses-ca").pem.decode()
    old = _set_root_ca(env, foreign)
    try:
        proc, results = run(env, "--pod", f"{web['namespace']}/{web['name']}", "-k", "apiserver", tmp_path=tmp_path)
    finally:
        for pem in set(old.values()):
            _set_root_ca(env, pem)
    apiserver = {k: v for k, v in results.items() if k.startswith("test_apiserver")}
    assert apiserver and all(kind == "failed" for kind, _ in apiserver.values()), apiserver
    assert all("did not verify against the cluster CA" in msg for _, msg in apiserver.values()), apiserver
    assert proc.returncode == 1, f"a run with failing critical checks must exit 1, got {proc.returncode}"
    # and with the real CA back, the same checks pass
    proc, results = run(env, "--pod", f"{web['namespace']}/{web['name']}", "-k", "apiserver", tmp_path=tmp_path)
    assert proc.returncode == 0 and all(k == "passed" for k, _ in results.values()), results


def test_non_default_cluster_domain(tmp_path):
    """A cluster whose domain is not cluster.local: DNS checks discover it from the pod's search
    list and pass (k8snetlook hard-coded cluster.local and failed here)."""
    from netconform.lab.cli import lab_env, start_lab, stop_lab

    name = _name("cd")
    paths = start_lab(name, "flannel", cluster_domain="k8s.corp.example")
    try:
        env = {**os.environ, **lab_env(paths)}
        proc, results = run(env, "--selector", "app=web", "-k", "dns", "-rA", tmp_path=tmp_path)
    finally:
        stop_lab(name)
    dns = {k: v for k, v in results.items() if k.startswith("test_dns")}
    assert dns and all(kind == "passed" for kind, _ in dns.values()), {k: v for k, v in dns.items() if v[0] != "passed"}
    assert proc.returncode == 0
