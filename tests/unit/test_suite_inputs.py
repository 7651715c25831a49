"""Bad input to `pytest checks/` gets one clear line, never a traceback; pods that cannot be probed
skip with the reason. Runs the suite against a lab-shaped Kubernetes API served in-process (no
root, no dataplane): the pods exist in the API but not on this machine, as from a laptop.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from netconform.lab.apiserver import ApiServer, ObjectStore, write_kubeconfig
from netconform.lab.k8s_objects import objects_from_spec
from netconform.lab.pki import CertificateAuthority
from netconform.lab.topology import build_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """(kubeconfig path, spec) of a lab-shaped API on loopback."""
    tmp = tmp_path_factory.mktemp("api")
    spec = build_spec("inputs", "vpc-cni", 2, 3)
    ca = CertificateAuthority.create(tmp / "pki")
    objs = objects_from_spec(spec, ca_pem=ca.pem.decode(), api_server_url="https://127.0.0.1:0",
                             created=datetime.now(timezone.utc) - timedelta(hours=1))
    pending = next(o for o in objs if o["kind"] == "Pod" and o["metadata"]["name"] == "db-0")
    pending["status"]["phase"] = "Pending"
    # The "elsewhere" pod gets an IP no lab on this machine holds (TEST-NET-3): the resolver's
    # last resort, the netns holding the pod IP, must find nothing here.
    elsewhere = next(o for o in objs if o["kind"] == "Pod" and o["metadata"]["labels"].get("app") == "web")
    elsewhere["status"]["podIP"] = "203.0.113.77"
    elsewhere["status"]["podIPs"] = [{"ip": "203.0.113.77"}]
    store = ObjectStore(objs)
    server = ApiServer(store, token="t0ken-inputs", ssl_context=ca.server_context(tmp / "pki", "api", ips=["127.0.0.1"]))
    port = server.start("127.0.0.1", 0)
    kubeconfig = tmp / "kubeconfig"
    write_kubeconfig(kubeconfig, f"https://127.0.0.1:{port}", ca.pem.decode(), "t0ken-inputs",
                     cluster_name="inputs", context_name="inputs", user_name="admin")
    yield kubeconfig, spec
    server.stop()


def run_checks(*args: str, env: dict | None = None, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    e["HOME"] = str(ROOT / "build" / "no-home")  # no ~/.kube/config to fall back on
    if kubeconfig:
        e["KUBECONFIG"] = str(kubeconfig)
    e.update(env or {})
    reports = ROOT / "build" / "test-reports"
    return subprocess.run([sys.executable, "-m", "pytest", "checks/", "-q", "-p", "no:cacheprovider",
                           "--report-dir", str(reports), *args],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)


def _one_clear_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-2000:]
    assert proc.returncode == 4, f"exit {proc.returncode}, expected 4 (usage error):\n{out[-2000:]}"
    lines = [l for l in out.splitlines() if all(w in l for w in words)]
    assert lines, f"no line says {words}:\n{out[-2000:]}"


def test_malformed_pod_is_a_usage_error(api):
    proc = run_checks("--pod", "web-0", kubeconfig=api[0])
    _one_clear_line(proc, "--pod", "NAMESPACE/NAME", "'web-0'")


def test_unknown_pod_names_the_namespace(api):
    proc = run_checks("--pod", "default/nope", kubeconfig=api[0])
    _one_clear_line(proc, "default/nope", "no such pod in namespace default")


def test_unknown_namespace(api):
    proc = run_checks("--pod", "nons/web-0", kubeconfig=api[0])
    _one_clear_line(proc, "namespace 'nons' does not exist")


def test_selector_matching_nothing(api):
    proc = run_checks("--selector", "app=nothing-here", kubeconfig=api[0])
    _one_clear_line(proc, "--selector", "matches no pod")


def test_no_kubeconfig_at_all(tmp_path):
    proc = run_checks("--pod", "default/web-0")
    _one_clear_line(proc, "no Kubernetes cluster configured", "--kubeconfig", "--lab")


def test_missing_kubeconfig_file(tmp_path):
    proc = run_checks("--pod", "default/web-0", "--kubeconfig", str(tmp_path / "absent"))
    _one_clear_line(proc, "does not exist")


def test_unreachable_cluster(tmp_path, api):
    text = api[0].read_text().replace(api[0].read_text().split("server: ")[1].split("\n")[0], "https://127.0.0.1:9")
    bad = tmp_path / "kubeconfig"
    bad.write_text(text)
    proc = run_checks("--pod", "default/web-0", "--kubeconfig", str(bad))
    _one_clear_line(proc, "unreachable")


def test_unknown_service(api):
    spec = api[1]
    web = next(p for p in spec.pods if p.labels.get("app") == "web")
    proc = run_checks("--pod", web.key, "--service", "default/nope", "-k", "service", kubeconfig=api[0])
    _one_clear_line(proc, "--service default/nope", "no such service")


def _skips(proc) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert proc.returncode == 0, proc.stdout[-2000:]
    return proc.stdout


def test_pod_checks_skip_without_target_naming_the_options(api):
    out = _skips(run_checks("-rs", "-k", "dns", kubeconfig=api[0]))
    assert "no target pod: give --pod NS/NAME or --selector" in out
    assert " passed" not in out.splitlines()[-1]


def test_pending_pod_skips_with_reason(api):
    out = _skips(run_checks("--pod", "shop/db-0", "-rs", "-k", "gateway", kubeconfig=api[0]))
    assert "pod shop/db-0 is Pending, not Running" in out


def test_host_network_pod_skips_with_reason(api):
    proxy = next(p for p in api[1].pods if p.role == "kube-proxy")
    out = _skips(run_checks("--pod", proxy.key, "-rs", "-k", "dns", kubeconfig=api[0]))
    assert f"pod {proxy.key} uses hostNetwork" in out


def test_pod_elsewhere_skips_naming_how_to_run_it(api):
    web = next(p for p in api[1].pods if p.labels.get("app") == "web")  # the pod moved to 203.0.113.77
    out = _skips(run_checks("--pod", web.key, "-rs", "-k", "gateway_route", kubeconfig=api[0]))
    assert f"cannot enter the network namespace of pod {web.key} from this machine" in out
    assert f"run the suite as root on node {web.node}" in out
