"""Reports and the evidence bundle of a real run: the suite (`pytest checks/ -n 3`) against a lab
with the dns-down fault and secrets planted where the bundle collects from (a target pod's
annotations, its container env and its resolv.conf), run once per module in a subprocess as a
user would run it.

- every output exists once (xdist: one folder for the whole run) and they agree: each failing
  check has the same diagnosis and severity in results.json, report.md, report.html and junit.xml;
- the failing pod's folder holds what its DNS diagnosis relies on;
- no planted secret reaches any file of the run (nor the archive, nor the step summary);
- `netconform report` on a copy of results.json reproduces report.md;
- report.html opened by a real headless Chromium with no network shows the right counts
  (screenshot kept in test-artifacts/).
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from netconform.report import model
from netconform.report.markdown import code, md_text
from tests.conftest import requires_root

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium")
pytestmark = [requires_root, pytest.mark.lab, pytest.mark.xdist_group("reports")]
SLOW = 600  # limit for one subprocess (a suite run, Chromium): generous for a loaded 2-core machine


@dataclass
class SuiteRun:
    proc: subprocess.CompletedProcess
    run_dir: Path
    doc: dict
    planted: dict[str, str]  # what -> secret value
    planted_pod: str
    work: Path

    def failed(self) -> list[dict]:
        return [r for r in self.doc["results"] if r["outcome"] == "failed"]


def _lab_name() -> str:
    """`rp` + xdist worker + pid in base 36: unique among live pytest processes (12 chars max)."""
    worker = "".join(c for c in os.environ.get("PYTEST_XDIST_WORKER", "") if c.isdigit()) or "m"
    pid, b36 = os.getpid(), ""
    while True:
        pid, r = divmod(pid, 36)
        b36 = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + b36
        if not pid:
            return f"rp{worker}{b36}"[:12]


def _plant(paths, status: dict, pod: dict, planted: dict[str, str]) -> None:
    """Put secrets where the bundle collects from: API object (annotations, env) and resolv.conf."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(paths.kubeconfig)))
    ns, name = pod["namespace"], pod["name"]
    api.patch_namespaced_pod(name, ns, {"metadata": {"annotations": {
        "example.com/deploy-note": f"curl -H 'Authorization: Bearer {planted['bearer']}' https://ci.example/hook",
        "example.com/kubeconfig": f"users:\n- name: ci\n  user:\n    token: {planted['lab_token']}\n",
        "example.com/aws-profile": f"[default]\naws_access_key_id = {planted['aws_key_id']}\n"
                                   f"aws_secret_access_key = {planted['aws_secret']}\n"}}})
    api.patch_namespaced_pod(name, ns, [{"op": "add", "path": "/spec/containers/0/env", "value": [
        {"name": "AWS_ACCESS_KEY_ID", "value": planted["aws_key_id"]},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": planted["aws_secret"]}]}])
    # The pod's own resolv.conf (a comment: resolvers ignore it, the bundle and DNS evidence copy it).
    with open(f"/proc/{pod['pid']}/root/etc/resolv.conf", "a") as f:
        f.write(f"# Authorization: Bearer {planted['bearer']}\n")


# Session scope: with `--dist loadgroup` all of this module runs on one worker (the "reports"
# group); with any other distribution a worker that gets other modules' tests in between would
# otherwise build the lab and run the whole suite again (twice the load on a busy machine).
@pytest.fixture(scope="session")
def suite_run(tmp_path_factory) -> SuiteRun:
    from netconform.lab.cli import lab_env, lab_fault, start_lab, stop_lab
    from netconform.lab.state import read_json

    name = _lab_name()
    work = tmp_path_factory.mktemp("reports")
    paths = start_lab(name, "vpc-cni")
    try:
        status = read_json(paths.status)
        apps = [p for p in status["pods"] if not p["host_network"] and p["namespace"] != "kube-system"]
        nodes = [n["name"] for n in status["nodes"]]
        web = next(p for p in apps if p["name"].startswith("web-") and p["node"] == nodes[0])
        other = next(p for p in apps if p["node"] == nodes[-1])
        alphabet = string.ascii_uppercase + string.digits
        planted = {
            "lab_token": paths.token.read_text().strip(),
            "aws_key_id": "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
            "aws_secret": base64.b64encode(secrets.token_bytes(30)).decode(),
            "bearer": secrets.token_urlsafe(24),
        }
        _plant(paths, status, web, planted)
        lab_fault(name, "dns-down", "")
        env = {**os.environ, **lab_env(paths), "GITHUB_STEP_SUMMARY": str(work / "step-summary.md")}
        env.pop("PYTEST_XDIST_WORKER", None)
        # The product's default probe timeout (3 s), not a shorter one: on a loaded machine a
        # healthy probe with a 1 s budget can time out, and a healthy check must not fail here.
        argv = [sys.executable, "-m", "pytest", "checks/", "-p", "no:cacheprovider", "-n", "3", "--probe-timeout", "3",
                "--report-dir", str(work / "reports"), "--bundle-archive", f"--junitxml={work / 'user-junit.xml'}",
                "--pod", f"{web['namespace']}/{web['name']}", "--pod", f"{other['namespace']}/{other['name']}"]
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SLOW, check=False)
        dirs = [p for p in (work / "reports").iterdir() if p.is_dir()] if (work / "reports").exists() else []
        assert len(dirs) == 1, f"expected one run folder, got {dirs}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        doc = json.loads((dirs[0] / "results.json").read_text())
        yield SuiteRun(proc, dirs[0], doc, planted, f"{web['namespace']}/{web['name']}", work)
    finally:
        stop_lab(name)


def test_every_output_exists_once_and_the_path_is_printed_last(suite_run):
    d = suite_run.run_dir
    assert suite_run.proc.returncode == 1  # critical DNS failures count under the default gate
    for name in ("results.json", "report.md", "report.html", "junit.xml"):
        assert (d / name).is_file(), name
    pods = [k for k in suite_run.doc["run"]["targets"]["pods"]]
    nodes = suite_run.doc["run"]["targets"]["nodes"]
    folders = {p.name for p in d.iterdir() if p.is_dir()}
    expected = {"cluster", "aws"} | {"pod_" + k.replace("/", "_") for k in pods} | {"node_" + n for n in nodes}
    assert folders == expected
    assert (d.parent / f"{d.name}.tar.gz").is_file()
    assert suite_run.proc.stdout.splitlines()[-1].startswith("netconform report: ")
    assert str(d.name) in suite_run.proc.stdout.splitlines()[-1]
    # one results.json for the whole xdist run: every check pytest ran is in it
    user = ET.parse(suite_run.work / "user-junit.xml").getroot()
    assert len(list(user.iter("testcase"))) == len(suite_run.doc["results"])
    assert suite_run.doc["run"]["options"]["numprocesses"] == 3
    step = (suite_run.work / "step-summary.md").read_text()
    assert step == (d / "report.md").read_text() + "\n"


def test_failing_checks_agree_across_formats(suite_run):
    d, doc = suite_run.run_dir, suite_run.doc
    failed = suite_run.failed()
    assert any(r["check_id"] == "dns.resolves" and r["severity"] == "critical" for r in failed)
    assert all(r["area"] in ("dns", "service") for r in failed), [r["nodeid"] for r in failed if r["area"] not in ("dns", "service")]
    md = (d / "report.md").read_text()
    junit = {c.get("name"): c for c in ET.parse(d / "junit.xml").getroot().iter("testcase")}
    m = re.search(r'data-jsonblob="([^"]*)"', (d / "report.html").read_text())
    rows = {row["testId"]: row for rows in json.loads(html.unescape(m.group(1)))["tests"].values() for row in rows}
    assert len(rows) == len(junit) == len(doc["results"])
    for r in failed:
        one = model.one_line(r["diagnosis"])
        assert one, r["nodeid"]
        # report.md: under its check's heading (with the severity), the target line and the diagnosis
        heading = md.index(f"{code(r['check_id'])} — ")
        assert md[heading:].split("\n", 2)[1].startswith(f"**{r['severity']}**")
        entry = md.index(f"{code(r['nodeid'])} · ")
        assert md[entry:].split("\n", 2)[1] == f"  diagnosis: {md_text(one)}"
        # junit.xml
        case = junit[r["nodeid"].split("::")[-1]]
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert (props["check_id"], props["severity"]) == (r["check_id"], r["severity"])
        assert props["target"] == model.target_label(r["target"])
        assert case.find("failure").get("message") == one
        # report.html
        row = rows[r["nodeid"]]
        assert row["result"] == "Failed"
        assert f'<td class="col-severity">{r["severity"]}</td>' in row["resultsTableRow"]
        extra = "".join(e["content"] for e in row["extras"] if e["format_type"] == "html")
        assert f'<p class="nc-diagnosis">{html.escape(r["diagnosis"])}</p>' in extra


def test_failing_pod_folder_holds_what_the_diagnosis_relies_on(suite_run):
    d = suite_run.run_dir
    r = next(r for r in suite_run.failed() if r["check_id"] == "dns.resolves"
             and r["target"]["name"] == suite_run.planted_pod)
    folder = "pod_" + suite_run.planted_pod.replace("/", "_")
    for name in ("resolv.conf", "routes.json", "ip-route.txt", "ip-addr.txt", "neighbours.json", "pod.yaml",
                 "probe-transcript.json"):
        assert f"{folder}/{name}" in r["files"], name
    for f in r["files"]:
        assert (d / f).is_file(), f
    # the nameserver the diagnosis names is the one in the pod's resolv.conf
    ns = re.search(r"through ([0-9.]+)", r["diagnosis"]).group(1)
    assert f"nameserver {ns}" in (d / folder / "resolv.conf").read_text()
    transcript = json.loads((d / folder / "probe-transcript.json").read_text())
    mine = [t for t in transcript if t["check"] == r["nodeid"]]
    assert any(t["name"] == "dns:resolve_like_pod" and t["value"]["status"] == "ok" and not t["value"]["value"]["ok"]
               for t in mine)
    routes = json.loads((d / folder / "routes.json").read_text())
    assert any(rt["dst"] == "default" for rt in routes)
    collection = json.loads((d / folder / "collection.json").read_text())
    assert collection["errors"] == [] and collection["netns"]


def test_no_planted_secret_reaches_any_file(suite_run):
    d, planted = suite_run.run_dir, suite_run.planted
    outputs = [p for p in d.rglob("*") if p.is_file()]
    outputs += [suite_run.work / "step-summary.md", suite_run.work / "user-junit.xml"]
    assert len(outputs) > 40
    for path in outputs:
        text = path.read_text(errors="replace")
        for what, value in planted.items():
            assert value not in text, f"{what} leaked into {path.relative_to(suite_run.work)}"
    with tarfile.open(d.parent / f"{d.name}.tar.gz") as tar:
        for member in (m for m in tar.getmembers() if m.isfile()):
            text = tar.extractfile(member).read().decode(errors="replace")
            for what, value in planted.items():
                assert value not in text, f"{what} leaked into the archive's {member.name}"
    for what, value in planted.items():
        assert value not in suite_run.proc.stdout + suite_run.proc.stderr, f"{what} printed on the console"
    # ... and it is not because nothing was collected: the planted places are there, redacted
    folder = d / ("pod_" + suite_run.planted_pod.replace("/", "_"))
    pod_yaml = (folder / "pod.yaml").read_text()
    assert "example.com/aws-profile" in pod_yaml and "AWS_SECRET_ACCESS_KEY" in pod_yaml
    assert pod_yaml.count("[REDACTED]") >= 5
    assert "# Authorization: Bearer [REDACTED]" in (folder / "resolv.conf").read_text()
    evidence = [e for r in suite_run.doc["results"] for e in r["evidence"] if e["name"] == "resolv.conf"]
    assert evidence and all("Bearer [REDACTED]" in e["value"] for e in evidence
                            if e["where"] == f"pod {suite_run.planted_pod}")
    assert suite_run.doc["run"]["redactions"]


def test_report_command_reproduces_the_markdown(suite_run, tmp_path):
    shutil.copy(suite_run.run_dir / "results.json", tmp_path / "results.json")
    netconform = Path(sys.executable).with_name("netconform")
    out = subprocess.run([str(netconform), "report", str(tmp_path)], capture_output=True, text=True, timeout=SLOW,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "report.md").read_text() == (suite_run.run_dir / "report.md").read_text()
    assert (tmp_path / "report.html").stat().st_size > 10_000


def _chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium in a new, empty network namespace: no network exists for it to use."""
    with tempfile.TemporaryDirectory(prefix="nc-chromium-") as profile:
        return subprocess.run(
            ["unshare", "--net", CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=SLOW, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make test` installs it: TEST_APT_PACKAGES)")
def test_html_report_in_a_headless_browser_offline(suite_run):
    report = suite_run.run_dir / "report.html"
    text = report.read_text()
    # nothing to fetch: no external script, stylesheet, image, frame or CSS import
    assert not re.search(r'<(?:script|link|img|iframe|source|video)\b[^>]*\b(?:src|href)="(?:https?:)?//', text)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//|@import", text)
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    results = suite_run.doc["results"]
    counts = model.counts(results)
    shown = {o: 0 for o in model.DISPLAY_ORDER}
    for r in results:
        shown[model.display_outcome(r)] += 1
    # our summary at the top
    summary = re.search(r'<div class="nc-summary" id="netconform-summary" data-total="(\d+)"', page)
    assert summary and int(summary.group(1)) == len(results)
    for outcome, n in shown.items():
        if n:
            assert f'data-outcome="{outcome}" data-count="{n}"' in page, outcome
    # pytest-html's own counts, and its rows — rendered by the report's inline script, offline
    assert re.search(rf"{counts['failed']} Failed,", page) and re.search(rf"{counts['passed']} Passed,", page)
    rows = re.findall(r'<tbody class="results-table-row (\w+)', page)
    assert len(rows) == len(results)
    assert rows.count("failed") == counts["failed"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-html.png"
    shot.unlink(missing_ok=True)
    out = _chromium("--window-size=1400,1800", f"--screenshot={shot}", "--hide-scrollbars", report.as_uri())
    assert out.returncode == 0 and shot.stat().st_size > 10_000, out.stderr[-2000:]
