"""plugins/report.py end to end in a child pytest, with a stand-in for the targets plugin (a fixed
cluster snapshot), so the controller/worker plumbing, the diagnosis extraction, the --fail-on gate
and the console output are exercised without a lab — single process and under xdist.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]

CONFTEST = '''
import os

import pytest
from netconform.catalog import CheckInfo
from netconform.kube import Snapshot
from netconform.targets import TargetPlan, pod_target
from plugins.catalog import CHECK_KEY

POD = {"metadata": {"name": "web-0", "namespace": "default", "uid": "7d1c0c56-0000-4000-8000-00000000beef",
                    "annotations": {"note": "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "app", "env": [
           {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}]}]},
       "status": {"phase": "Running", "podIP": "10.254.254.9", "podIPs": [{"ip": "10.254.254.9"}]}}

CATALOG = {cid: CheckInfo(cid, "title of " + cid, cid.split(".")[0], sev, "what it means", "do this", ("https://example.com/doc",))
           for cid, sev in [("dns.resolves", "critical"), ("dns.nxdomain", "warning"), ("gateway.route", "critical"),
                            ("pod2pod.icmp", "error")]}


class FakeTargets:
    def __init__(self, with_cluster):
        self.snapshot = Snapshot(context="arn:aws:eks:us-west-2:111122223333:cluster/unit-test",
                                 server="https://10.0.0.1", version={"gitVersion": "v1.31.0"},
                                 pods=[POD]) if with_cluster else None
        pod = pod_target(POD)
        self.plan = TargetPlan(pods=[pod], nodes=[]) if with_cluster else None


def pytest_configure(config):
    config.addinivalue_line("markers", "check(id): catalog id")
    config.pluginmanager.register(FakeTargets("NO_CLUSTER" not in os.environ), "netconform-targets")


def pytest_collection_modifyitems(items):
    for item in items:
        m = item.get_closest_marker("check")
        if m:
            item.stash[CHECK_KEY] = CATALOG[m.args[0]]


def pytest_generate_tests(metafunc):
    if "pod" in metafunc.fixturenames:
        metafunc.parametrize("pod", [pytest.param(pod_target(POD), id="default/web-0")])
'''

CHECKS = '''
import pytest

@pytest.mark.check("dns.resolves")
def test_dns_resolves(pod, evidence):
    evidence.add("dns:query", {"args": {"server": "172.20.0.10"}, "status": "ok", "value": {"ok": False}}, f"pod {pod.key}")
    pytest.fail(f"pod {pod.key}: kubernetes.default did not resolve over UDP through 172.20.0.10: timeout", pytrace=False)

@pytest.mark.check("dns.nxdomain")
def test_dns_nxdomain(pod):
    assert 1 == 2, f"pod {pod.key}: a name that cannot exist got SERVFAIL instead of NXDOMAIN"

@pytest.mark.check("gateway.route")
def test_gateway_route(pod):
    pass

@pytest.mark.check("gateway.route")
def test_gateway_route_v6(pod):
    pytest.skip(f"pod {pod.key} has no IPv6 address")

@pytest.mark.check("pod2pod.icmp")
def test_pod_to_pod_icmp(pod):
    {}["missing"]
'''

WARNING_ONLY = '''
import pytest

@pytest.mark.check("dns.nxdomain")
def test_dns_nxdomain(pod):
    assert False, f"pod {pod.key}: a name that cannot exist got SERVFAIL instead of NXDOMAIN"

@pytest.mark.check("gateway.route")
def test_gateway_route(pod):
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def run(pytester: pytest.Pytester, *args: str, env: dict | None = None) -> pytest.RunResult:
    old = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ.pop("GITHUB_STEP_SUMMARY", None)
    os.environ.update(env or {})
    try:
        return pytester.runpytest_subprocess(
            "-p", "plugins.options", "-p", "fixtures.probing", "-p", "plugins.report", "-p", "no:cacheprovider",
            "-p", "no:randomly", "--report-dir", str(pytester.path / "out"), *args, timeout=120)
    finally:
        os.environ.clear()
        os.environ.update(old)


def only_run_dir(pytester: pytest.Pytester) -> Path:
    dirs = [p for p in (pytester.path / "out").iterdir() if p.is_dir()]
    assert len(dirs) == 1, f"expected one run folder, found {dirs}"
    return dirs[0]


@pytest.mark.parametrize("workers", [None, "2"], ids=["single", "xdist"])
def test_one_run_folder_with_every_output_and_diagnoses(suite, workers):
    res = run(suite, *(["-n", workers] if workers else []))
    assert res.ret == 1
    run_dir = only_run_dir(suite)
    assert run_dir.name.endswith("-unit-test")
    names = {p.name for p in run_dir.iterdir()}
    assert {"results.json", "report.md", "report.html", "junit.xml", "cluster", "aws", "pod_default_web-0"} <= names
    doc = json.loads((run_dir / "results.json").read_text())
    by_test = {r["nodeid"].split("::")[-1]: r for r in doc["results"]}
    assert len(by_test) == 5
    assert by_test["test_dns_resolves[default/web-0]"]["outcome"] == "failed"
    assert by_test["test_dns_resolves[default/web-0]"]["diagnosis"] == (
        "pod default/web-0: kubernetes.default did not resolve over UDP through 172.20.0.10: timeout")
    # the assert message without pytest's "assert 1 == 2" explanation
    assert by_test["test_dns_nxdomain[default/web-0]"]["diagnosis"] == (
        "pod default/web-0: a name that cannot exist got SERVFAIL instead of NXDOMAIN")
    assert by_test["test_gateway_route_v6[default/web-0]"]["outcome"] == "skipped"
    assert by_test["test_gateway_route_v6[default/web-0]"]["diagnosis"] == "pod default/web-0 has no IPv6 address"
    assert by_test["test_gateway_route[default/web-0]"]["outcome"] == "passed"
    broken = by_test["test_pod_to_pod_icmp[default/web-0]"]
    assert broken["outcome"] == "error" and broken["diagnosis"].startswith("KeyError")
    assert by_test["test_dns_resolves[default/web-0]"]["target"] == {"kind": "pod", "name": "default/web-0"}
    # evidence crossed the xdist boundary and landed in results.json and the pod's transcript
    assert by_test["test_dns_resolves[default/web-0]"]["evidence"][0]["name"] == "dns:query"
    transcript = json.loads((run_dir / "pod_default_web-0" / "probe-transcript.json").read_text())
    assert [t["check_id"] for t in transcript] == ["dns.resolves"]
    # the pod could not be entered from here: recorded, not fatal
    collection = json.loads((run_dir / "pod_default_web-0" / "collection.json").read_text())
    assert collection["errors"] and "not found" in collection["errors"][0]
    assert "pod_default_web-0/pod.yaml" in by_test["test_dns_resolves[default/web-0]"]["files"]
    assert doc["run"]["cluster"]["context"].endswith("cluster/unit-test")
    assert doc["run"]["counts"] == {"failed": 2, "error": 1, "passed": 1, "skipped": 1}
    if workers:
        assert doc["run"]["options"]["numprocesses"] == 2


def test_console_lists_failing_checks_and_ends_with_the_path(suite):
    res = run(suite)
    out = res.stdout.lines
    assert out[-1].startswith("netconform report: ") and "report.html" in out[-1]
    assert any(line.startswith("[critical] dns.resolves pod default/web-0: kubernetes.default")
               for line in out)
    assert any(line.startswith("[warning] (not counted) dns.nxdomain") for line in out)
    assert any(line.startswith("[ERROR] pod2pod.icmp") for line in out)


def test_failures_below_the_gate_do_not_fail_the_run(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks=WARNING_ONLY)
    res = run(pytester)
    assert res.ret == 0, res.stdout.str()[-2000:]
    res.stdout.fnmatch_lines(["*1 failing checks are below --fail-on=error: reported, not counted*"])
    doc = json.loads((only_run_dir(pytester) / "results.json").read_text())
    assert doc["run"]["pytest_exit_status"] == 1 and doc["run"]["exit_status"] == 0
    assert doc["run"]["verdict"] == "WARN"


def test_fail_on_warning_counts_warnings(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks=WARNING_ONLY)
    assert run(pytester, "--fail-on", "warning").ret == 1


def test_fail_on_critical_lets_errors_of_the_suite_still_fail(suite):
    res = run(suite, "--fail-on", "critical")
    assert res.ret == 1  # dns.resolves is critical, and pod2pod.icmp broke (error) anyway


def test_bad_gate_is_a_usage_error(suite):
    res = run(suite, "--fail-on", "fatal")
    assert res.ret == 4
    res.stderr.fnmatch_lines(["*--fail-on*expected one of warning, error, critical*"])


def test_no_cluster_no_report(suite):
    res = run(suite, env={"NO_CLUSTER": "1"})
    assert res.ret == 1
    assert not (suite.path / "out").exists() or not any((suite.path / "out").iterdir())
    assert not any(line.startswith("netconform report:") for line in res.stdout.lines)


def test_secrets_of_the_snapshot_and_environment_never_reach_a_file(suite):
    lab_like_token = "Zm9vYmFyLXRva2VuLXNob3VsZC1uZXZlci1sZWFr"
    kubeconfig = suite.path / "kubeconfig"
    kubeconfig.write_text(f"apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {lab_like_token}\n")
    suite.makepyfile(test_more=f'''
import pytest
@pytest.mark.check("dns.resolves")
def test_leaky(pod, evidence):
    evidence.add("header", "Authorization: Bearer {lab_like_token}", f"pod {{pod.key}}")
    pytest.fail("probe sent token {lab_like_token}", pytrace=False)
''')
    res = run(suite, "--junitxml", str(suite.path / "user-junit.xml"), "--bundle-archive",
              env={"KUBECONFIG": str(kubeconfig), "GITHUB_STEP_SUMMARY": str(suite.path / "summary.md")})
    assert res.ret == 1
    run_dir = only_run_dir(suite)
    secrets = [lab_like_token, "abcdefghijklmnopqrstuvwxyz012345", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
    files = [p for p in run_dir.rglob("*") if p.is_file()] + [suite.path / "summary.md", suite.path / "user-junit.xml"]
    assert len(files) > 10
    for path in files:
        text = path.read_text(errors="replace")
        for s in secrets:
            assert s not in text, f"{s[:6]}… leaked into {path}"
    import tarfile

    with tarfile.open(run_dir.with_name(run_dir.name + ".tar.gz")) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert len(members) == len([p for p in run_dir.rglob("*") if p.is_file()])
        for m in members:
            text = tar.extractfile(m).read().decode(errors="replace")
            assert not any(s in text for s in secrets), m.name
    assert secrets[0] not in res.stdout.str()
    pod_yaml = (run_dir / "pod_default_web-0" / "pod.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" in pod_yaml and "[REDACTED]" in pod_yaml  # redacted, not dropped


def test_junit_carries_check_properties(suite):
    run(suite, "--junitxml", str(suite.path / "user-junit.xml"))
    ours = ET.parse(only_run_dir(suite) / "junit.xml").getroot()
    case = next(c for c in ours.iter("testcase") if c.get("name") == "test_dns_resolves[default/web-0]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["check_id"] == "dns.resolves" and props["severity"] == "critical"
    assert props["target"] == "pod default/web-0"
    # pytest's own --junitxml gets them too
    theirs = ET.parse(suite.path / "user-junit.xml").getroot()
    case = next(c for c in theirs.iter("testcase") if c.get("name") == "test_dns_resolves[default/web-0]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props.get("target") == "pod default/web-0"


def test_step_summary_is_appended(suite):
    summary = suite.path / "summary.md"
    summary.write_text("# earlier step\n")
    run(suite, env={"GITHUB_STEP_SUMMARY": str(summary)})
    text = summary.read_text()
    assert text.startswith("# earlier step\n## netconform: ❌ FAIL")



def test_a_users_own_html_report_gets_the_columns_extras_and_summary(suite):
    import html as htmlmod
    import re

    user_html = suite.path / "mine.html"
    run(suite, "-n", "2", "--html", str(user_html), "--self-contained-html")
    text = user_html.read_text()
    blob = json.loads(htmlmod.unescape(re.search(r'data-jsonblob="([^"]*)"', text).group(1)))
    row = next(r for rows in blob["tests"].values() for r in rows if "test_dns_resolves" in r["testId"])
    assert '<td class="col-check">dns.resolves</td>' in row["resultsTableRow"]
    assert '<td class="col-target">pod default/web-0</td>' in row["resultsTableRow"]
    extra = "".join(e["content"] for e in row["extras"] if e["format_type"] == "html")
    assert "kubernetes.default did not resolve over UDP" in extra and "Remediation" in extra
    assert 'id="netconform-summary"' in text
