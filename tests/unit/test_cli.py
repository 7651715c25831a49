"""`netconform report` and `netconform list-checks`."""
from __future__ import annotations

import json
import subprocess
import sys

from netconform.catalog import load_catalog
from netconform.cli import main
from netconform.report.markdown import render_markdown
from tests.unit.report_doc import make_doc


def test_report_rerenders_markdown_and_html(tmp_path, capsys):
    doc = make_doc()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == render_markdown(doc)
    assert 'id="netconform-summary"' in (tmp_path / "report.html").read_text()
    assert capsys.readouterr().out.split() == [str(tmp_path / "report.md"), str(tmp_path / "report.html")]


def test_report_to_another_folder(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(make_doc()))
    assert main(["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists() and not (tmp_path / "report.md").exists()


def test_report_refuses_what_is_not_a_results_file(tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"some": "json"}')
    assert main(["report", str(tmp_path)]) == 2
    assert "not a netconform results file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_list_checks(capsys):
    assert main(["list-checks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CHECK", "SEVERITY", "TITLE"]
    assert len(lines) == len(load_catalog()) + 1
    assert main(["list-checks", "--area", "dns", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries and all(e["area"] == "dns" and e["remediation"] for e in entries)


def test_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "netconform.cli", "list-checks"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "dns.resolves" in out.stdout
