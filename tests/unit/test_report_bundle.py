"""The run folder and the evidence bundle: names, redacted writes, best-effort collection, archive."""
from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime

import pytest
import yaml

from netconform.redact import MARK, Redactor
from netconform.report import bundle, collect
from netconform.runners.base import ProbeCall
from netconform.runners.places import Located
from tests.unit.report_doc import make_doc

START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TOKEN = "q7V3rS9xYk2LmN0pB4cD6eF8gH1jK5tW"


@pytest.mark.parametrize("context, short", [
    ("arn:aws:eks:us-west-2:123456789012:cluster/prod-1", "prod-1"),
    ("gke_my-project_europe-west1_web", "web"),
    ("admin@blue.us-east-1.eksctl.io", "blue"),
    ("netconform-lab", "netconform-lab"),
    ("Weird Name!!", "weird-name"),
    ("", "cluster"),
])
def test_short_context(context, short):
    assert bundle.short_context(context) == short


def test_run_dirs_never_collide(tmp_path):
    a = bundle.make_run_dir(tmp_path / "reports", START, "prod")
    b = bundle.make_run_dir(tmp_path / "reports", START, "prod")
    assert (a.name, b.name) == ("20250102T030405Z-prod", "20250102T030405Z-prod-2")


def test_folder_names():
    assert bundle.folder_name("pod", "kube-system/coredns-abc") == "pod_kube-system_coredns-abc"
    assert bundle.folder_name("node", "ip-10-0-1-5.ec2.internal") == "node_ip-10-0-1-5.ec2.internal"
    assert bundle.folder_of_where("pod default/web-0") == "pod_default_web-0"
    assert bundle.folder_of_where("node n1") == "node_n1"
    assert bundle.folder_of_where("") is None


def test_writer_redacts_structured_and_text(tmp_path):
    w = bundle.BundleWriter(tmp_path, Redactor(known=[TOKEN]))
    w.write("pod_a/pod.yaml", {"metadata": {"annotations": {"note": f"Authorization: Bearer {TOKEN}",
                                                            "api-token": "abc123def456"}}})
    w.write("pod_a/resolv.conf", f"nameserver 172.20.0.10\n# {TOKEN}\n")
    w.write("x.json", {"token": "zzzzzzzzzzzz", "ok": True})
    pod = yaml.safe_load((tmp_path / "pod_a/pod.yaml").read_text())
    assert pod["metadata"]["annotations"] == {"note": f"Authorization: Bearer {MARK}", "api-token": MARK}
    assert (tmp_path / "pod_a/resolv.conf").read_text() == f"nameserver 172.20.0.10\n# {MARK}\n"
    assert json.loads((tmp_path / "x.json").read_text()) == {"token": MARK, "ok": True}
    assert w.written == ["pod_a/pod.yaml", "pod_a/resolv.conf", "x.json"]
    with pytest.raises(TypeError):
        w.write("capture.pcap", b"\xd4\xc3\xb2\xa1")


def test_write_bundle_layout_and_files_per_result(tmp_path):
    doc = make_doc()
    results = doc["results"]
    pod_obj = {"metadata": {"name": "web-0", "namespace": "default"}}
    collected = [
        collect.Collected(collect.RawTarget("pod", "default/web-0", pod_obj),
                          files={"pod.yaml": pod_obj, "routes.json": [{"dst": "default"}], "resolv.conf": "nameserver 1.2.3.4\n"},
                          how={"netns": "/run/netns/x", "pid": 42}),
        collect.Collected(collect.RawTarget("node", "n1"), errors=["network namespace of node n1 not found"]),
    ]
    snapshot = {"context": "prod", "server": "https://x", "version": {"gitVersion": "v1.31.0"},
                "pods": [pod_obj], "services": [], "endpointslices": [], "nodes": [], "root_ca_configmaps": []}
    w = bundle.BundleWriter(tmp_path, Redactor())
    manifest = bundle.write_bundle(w, collected, snapshot, results)
    bundle.attach_files(results, manifest)
    folders = manifest["folders"]
    assert set(folders) == {"pod_default_web-0", "node_n1", "cluster", "aws"}
    assert (tmp_path / "aws").is_dir() and not any((tmp_path / "aws").iterdir())
    assert folders["pod_default_web-0"]["files"] == sorted([
        "pod_default_web-0/pod.yaml", "pod_default_web-0/routes.json", "pod_default_web-0/resolv.conf",
        "pod_default_web-0/probe-transcript.json", "pod_default_web-0/collection.json"])
    assert folders["node_n1"]["errors"] == ["network namespace of node n1 not found"]
    transcript = json.loads((tmp_path / "pod_default_web-0/probe-transcript.json").read_text())
    assert transcript[0]["check_id"] == "dns.resolves" and transcript[0]["name"] == "dns:resolve_like_pod"
    assert results[0]["files"] == folders["pod_default_web-0"]["files"]
    assert next(r for r in results if r["target"]["name"] == "n1")["files"] == folders["node_n1"]["files"]
    pods = yaml.safe_load((tmp_path / "cluster/pods.yaml").read_text())
    assert pods["kind"] == "List" and pods["items"] == [pod_obj]
    assert json.loads((tmp_path / "cluster/context.json").read_text())["version"]["gitVersion"] == "v1.31.0"
    for f in [f for info in folders.values() for f in info["files"]]:
        assert (tmp_path / f).is_file(), f


def test_sweep_and_archive(tmp_path):
    run_dir = tmp_path / "20250102T030405Z-prod"
    (run_dir / "pod_a").mkdir(parents=True)
    (run_dir / "pod_a" / "leak.txt").write_text(f"x-token: {TOKEN}\n")
    (run_dir / "pod_a" / "clean.txt").write_text("nothing here\n")
    (run_dir / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    assert bundle.sweep(run_dir, Redactor(known=[TOKEN]), skip=["pod_a/clean.txt"]) == ["pod_a/leak.txt"]
    (run_dir / "pod_a" / "clean.txt").write_text(f"written by a BundleWriter, so skipped: {TOKEN}\n")
    assert bundle.sweep(run_dir, Redactor(known=[TOKEN]), skip=["pod_a/clean.txt"]) == []
    assert TOKEN not in (run_dir / "pod_a" / "leak.txt").read_text()
    out = bundle.archive(run_dir)
    assert out == tmp_path / "20250102T030405Z-prod.tar.gz"
    with tarfile.open(out) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
            "20250102T030405Z-prod/blob.bin", "20250102T030405Z-prod/pod_a/clean.txt",
            "20250102T030405Z-prod/pod_a/leak.txt"]


# -- collection is best effort ----------------------------------------------------------------------
class FakeRunner:
    def __init__(self, fail: set[str] = frozenset()):
        self.fail = fail
        self.calls: list[str] = []

    def call(self, probe, kwargs=None, timeout=10.0):
        self.calls.append(probe)
        if probe in self.fail:
            return ProbeCall(probe=probe, status="timeout", error="no answer in 5 s")
        if probe == collect.COMMANDS_PROBE:
            return ProbeCall(probe=probe, status="ok", value=[
                {"argv": argv, "returncode": 0, "stdout": f"out of {argv[0]}\n", "stderr": "", "duration_s": 0.01,
                 "error": ""} for argv in kwargs["commands"]])
        return ProbeCall(probe=probe, status="ok", value=[{"probe": probe}])


def test_collect_target_files_for_a_node(tmp_path):
    runner = FakeRunner(fail={"netinfo:neighbours"})
    t = collect.RawTarget("node", "n1", {"metadata": {"name": "n1"}})
    (c,) = collect.collect_raw([t], lambda t: Located("/run/netns/n1", 0, ["found"], runner), runner_for=lambda f: f.runner,
                               timeout=5)
    assert set(c.files) == {"node.yaml", "addresses.json", "routes.json", "links.json", "ip-addr.txt", "ip-route.txt",
                            "ip-rule.txt", "ip-neigh.txt", "ip-link.txt", "iptables-save.txt", "ip6tables-save.txt",
                            "conntrack-stats.txt", "sysctl-net.txt"}
    assert c.errors == ["neighbours.json: netinfo:neighbours timeout: no answer in 5 s"]
    assert c.files["ip-route.txt"].startswith("$ ip -4 route show table all\nout of ip\n# exit 0\n\n$ ip -6 route")


def test_collect_never_raises():
    def locate(t):
        if t.name == "boom":
            raise RuntimeError("resolver bug")
        return Located("", 0, ["crictl: not found", "cgroup: no process"])

    def runner_for(path):
        raise AssertionError("never reached")

    found = collect.collect_raw([collect.RawTarget("pod", "a/x"), collect.RawTarget("pod", "boom")], locate,
                                runner_for=runner_for)
    assert "not found: crictl: not found; cgroup: no process" in found[0].errors[0]
    assert "RuntimeError: resolver bug" in found[1].errors[0]


def test_format_commands():
    text = collect.format_commands([
        {"argv": ["conntrack", "-S"], "error": "conntrack: command not found"},
        {"argv": ["ip", "rule"], "returncode": 2, "stdout": "", "stderr": "RTNETLINK answers: denied\n"}])
    assert text == ("$ conntrack -S\n# not run: conntrack: command not found\n\n"
                    "$ ip rule\n# stderr:\nRTNETLINK answers: denied\n# exit 2\n")


def test_commands_probe_runs_lists_only():
    from netconform.report import commands

    (ok, missing) = commands.run_all([["true"], ["netconform-no-such-binary"]], timeout=5)
    assert ok.returncode == 0 and missing.error.endswith("command not found")
    with pytest.raises(ValueError):
        commands.run("ip route", timeout=5)  # type: ignore[arg-type]


def test_sample_doc_round_trips_as_json():
    doc = make_doc()
    assert json.loads(json.dumps(doc)) == doc
