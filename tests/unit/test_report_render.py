"""The renderers: report.md, junit.xml and report.html (through pytest-html) from one results document."""
from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import pytest

from netconform.report import markdown, model
from netconform.report.html import extras_html, summary_html
from netconform.report.htmlreport import render_html
from netconform.report.junit import render_junit
from tests.unit.report_doc import make_doc


def html_blob(path) -> dict:
    """The test data pytest-html embeds in a self-contained report."""
    m = re.search(r'data-jsonblob="([^"]*)"', path.read_text())
    return json.loads(html.unescape(m.group(1)))


# -- markdown ---------------------------------------------------------------------------------------
def test_markdown_starts_with_a_one_line_verdict_and_lists_failures_first():
    md = markdown.render_markdown(make_doc())
    lines = md.splitlines()
    assert lines[0] == ("## netconform: ❌ FAIL — 2 of 6 checks failed (1 critical, 1 warning); 1 could not run "
                        "(errors in the suite) on arn:aws:eks:us-west-2:1:cluster/prod")
    failing = md.index("### Failing checks (3)")
    assert failing < md.index("✅ Passed (2)") < md.index("Skipped (not applicable) (1)")
    order = [md.index(f"`{cid}`") for cid in ("apiserver.node_clusterip", "dns.resolves", "dns.nxdomain")]
    assert order == sorted(order)
    assert md.index("| dns | 2 | 2 | 0 | 0 | 0 | 🔴 critical |") < failing


def test_markdown_escapes_diagnoses_and_keeps_evidence_collapsed():
    md = markdown.render_markdown(make_doc())
    assert ("diagnosis: pod default/web-0: kubernetes.default did not resolve over UDP through 172.20.0.10: "
            "&lt;timeout&gt; | no \\*replica\\* answered") in md
    details = md[md.index("<details><summary>Evidence: 1 items"):]
    assert "<code>pod_default_web-0/</code>" in details.splitlines()[0]
    assert '"name": "dns:resolve_like_pod"' in details[:details.index("</details>")]
    assert "*below `--fail-on=error`: not counted*" in md  # the warning
    assert "**Remediation:** run `ip route get 10.0.0.1` | grep dev" in md  # catalog commands stay code


def test_markdown_table_cells_escape_pipes():
    doc = make_doc()
    doc["results"][3]["diagnosis"] = "a | b"
    md = markdown.render_markdown(doc)
    assert "| a \\| b |" in md


def test_evidence_excerpt_is_bounded():
    doc = make_doc()
    doc["results"][0]["evidence"] = [{"name": "big", "where": "", "value": "x" * 50_000}]
    md = markdown.render_markdown(doc)
    assert len(md) < 10_000 and "more characters in results.json" in md


def test_step_summary_compacts_a_huge_report():
    doc = make_doc()
    doc["results"] = doc["results"] * 1 + [dict(doc["results"][0], nodeid=f"checks/x.py::t[{i}]",
                                                evidence=[{"name": "e", "where": "", "value": "y" * 1400}])
                                           for i in range(800)]
    full = markdown.render_markdown(doc)
    assert len(full.encode()) > markdown.STEP_SUMMARY_LIMIT
    summary = markdown.step_summary(doc)
    assert len(summary.encode()) <= markdown.STEP_SUMMARY_LIMIT
    assert summary.splitlines()[0] == full.splitlines()[0]


# -- junit ------------------------------------------------------------------------------------------
def test_junit_has_every_case_with_check_properties():
    doc = make_doc()
    root = ET.fromstring(render_junit(doc).encode())
    suite = root.find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "2" and suite.get("errors") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    case = cases["test_dns_resolves[default/web-0-udp]"]
    assert case.get("classname") == "checks.test_dns"
    props = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert props == {"check_id": "dns.resolves", "severity": "critical", "area": "dns",
                     "target": "pod default/web-0", "counted": "true"}
    failure = case.find("failure")
    assert failure.get("message") == model.one_line(doc["results"][0]["diagnosis"])
    assert "pod_default_web-0/resolv.conf" in failure.text
    assert cases["test_apiserver_node_clusterip[n1]"].find("error") is not None
    assert cases["test_gateway_route[default/web-0-6]"].find("skipped").get("message") == \
        "pod default/web-0 has no IPv6 address"


def test_junit_survives_control_characters():
    doc = make_doc()
    doc["results"][0]["diagnosis"] = "bell\x07 and nul\x00"
    ET.fromstring(render_junit(doc).encode())


# -- html -------------------------------------------------------------------------------------------
def test_summary_counts_and_grid():
    s = summary_html(make_doc())
    assert 'data-outcome="failed" data-count="1"' in s and 'data-outcome="warned" data-count="1"' in s
    assert 'data-outcome="error" data-count="1"' in s and 'data-outcome="passed" data-count="2"' in s
    assert re.search(r'data-target="node n1" data-area="apiserver" data-worst="error"', s)
    assert re.search(r'data-target="pod default/web-0" data-area="dns" data-worst="failed"', s)
    assert "<script" not in s and "http" not in s


def test_extras_escape_what_the_network_said():
    r = make_doc()["results"][0]
    out = extras_html(r)
    assert "&lt;timeout&gt;" in out and "<timeout>" not in out
    assert "Remediation" in out and "pod_default_web-0/resolv.conf" in out


def test_pytest_html_report_from_results(tmp_path):
    doc = make_doc()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    render_html(tmp_path / "results.json", tmp_path / "report.html")
    text = (tmp_path / "report.html").read_text()
    assert not re.search(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(?:https?:)?//', text)
    assert "@import" not in text
    blob = html_blob(tmp_path / "report.html")
    rows = [row for rows in blob["tests"].values() for row in rows]
    assert len(rows) == len(doc["results"])
    by_result = {}
    for row in rows:
        by_result.setdefault(row["result"], []).append(row)
    assert {k: len(v) for k, v in by_result.items()} == {"Failed": 2, "Passed": 2, "Skipped": 1, "Error": 1}
    failed = next(r for r in by_result["Failed"] if "test_dns_resolves" in r["testId"])
    assert '<td class="col-severity">critical</td>' in failed["resultsTableRow"]
    extra = "".join(e["content"] for e in failed["extras"] if e["format_type"] == "html")
    assert html.escape(doc["results"][0]["diagnosis"]) in extra
    assert blob["environment"]["Cluster context"] == "arn:aws:eks:us-west-2:1:cluster/prod"
    assert 'id="netconform-summary"' in text
    assert "6 checks" in text and "<title id=\"head-title\">netconform — arn" in text
    # the run's duration, not the replay's
    assert re.search(r"tests? took 00:00:1[23]\.", text)


def test_render_failure_is_reported(tmp_path):
    from netconform.report.htmlreport import HtmlRenderError

    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(HtmlRenderError):
        render_html(tmp_path / "results.json", tmp_path / "report.html")
