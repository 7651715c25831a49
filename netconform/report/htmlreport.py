"""report.html through pytest-html, rendered from results.json — in the run and by `netconform report`.

pytest-html builds its report from the test reports of a pytest session, so rendering replays
the results as one: a child `python -m netconform.report.htmlreport results.json report.html`
starts a pytest session with no collection whose runtest loop emits, for each result, the
setup/call/teardown TestReports it stands for (`pytest_runtest_logreport`), carrying the
diagnosis, remediation and evidence as pytest-html extras. Extra columns (check, severity,
target), the title, the Environment table and the summary at the top come through pytest-html's
own hooks. `--self-contained-html`: CSS, script and data are inlined; nothing loads from a network.

A child process, not `pytest.main` inside the running session: a nested session would share the
outer one's capture, warning filters, faulthandler and import hooks. Plugin autoload is off in
the child so only pytest-html and pytest-metadata take part.

This is the one module of the library that imports pytest (only inside the child process and the
hooks): pytest-html renders nothing outside a pytest session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import html as fragments

RENDER_TIMEOUT = 120.0


class HtmlRenderError(Exception):
    """report.html could not be rendered (the message says why, with the child's output)."""


def render_html(results_path: Path, out_path: Path) -> None:
    """Render `out_path` from the results.json at `results_path` (in a child process)."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    out_path = Path(out_path).resolve()
    try:
        proc = subprocess.run([sys.executable, "-m", "netconform.report.htmlreport", str(Path(results_path).resolve()),
                               str(out_path)], env=env, capture_output=True, text=True, timeout=RENDER_TIMEOUT,
                              cwd=out_path.parent, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise HtmlRenderError(f"rendering {out_path.name} took more than {RENDER_TIMEOUT:.0f} s") from None
    if proc.returncode != 0 or not out_path.exists():
        raise HtmlRenderError(f"rendering {out_path.name} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout)[-1500:]}")


def _cells_with(cells: list, extra: list[tuple[int, str]]) -> None:
    for pos, cell in extra:
        cells.insert(pos, cell)


class ColumnsPlugin:
    """pytest-html hooks shared by the replay and a live `--html` run: columns, extras, title.

    `results()` gives the results document once known (the summary needs all of them);
    a report's own result rides on `report.netconform_result` (set by the replay) or is derived
    from `report.netconform` (set on workers by plugins/report.py).
    """

    def __init__(self, doc_source):
        self._doc_source = doc_source

    def pytest_html_results_table_header(self, cells: list) -> None:
        _cells_with(cells, fragments.header_cells())

    def pytest_html_results_table_row(self, report, cells: list) -> None:
        result = getattr(report, "netconform_result", None) or _result_from_live(report)
        _cells_with(cells, fragments.row_cells(result))

    def pytest_html_report_title(self, report) -> None:
        doc = self._doc_source()
        if doc is not None:
            report.title = fragments.title(doc)

    def pytest_html_results_summary(self, prefix: list, summary: list, postfix: list, session) -> None:
        doc = self._doc_source()
        if doc is not None:
            prefix.append(fragments.summary_html(doc))


def _result_from_live(report) -> dict[str, Any]:
    info = getattr(report, "netconform", None) or {}
    check = info.get("check") or {}
    return {"check_id": check.get("id", ""), "severity": check.get("severity", ""),
            "target": info.get("target") or {}}


# -- the replay (runs in the child process) --------------------------------------------------------
def _phases(r: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(when, outcome, longrepr) of the TestReports that stand for result `r`."""
    path = r["nodeid"].split("::")[0]
    if r["outcome"] == "error":
        # pytest-html calls a failure outside "call" an Error, as the suite's own results do.
        return [("setup", "failed", r["diagnosis"] or "error"), ("teardown", "passed", None)]
    if r["outcome"] == "skipped":
        return [("setup", "skipped", (path, 0, f"Skipped: {r['diagnosis']}")), ("teardown", "passed", None)]
    call = ("call", "failed", r["diagnosis"]) if r["outcome"] == "failed" else ("call", "passed", None)
    return [("setup", "passed", None), call, ("teardown", "passed", None)]


class Replay(ColumnsPlugin):
    """A pytest session whose results come from a results document instead of running tests."""

    def __init__(self, doc: dict[str, Any]):
        super().__init__(lambda: doc)
        self.doc = doc

    def pytest_sessionstart(self, session) -> None:
        config = session.config
        try:
            from pytest_metadata.plugin import metadata_key

            meta = config.stash[metadata_key]
            meta.clear()  # the run's environment, not the renderer's
            meta.update(fragments.environment(self.doc))
        except (ImportError, KeyError):
            pass
        # pytest-html times the session it sees; the run's duration is the one that matters.
        for plugin in config.pluginmanager.get_plugins():
            if hasattr(plugin, "_suite_start_time") and hasattr(plugin, "_report"):
                plugin._suite_start_time = time.time() - float(self.doc["run"].get("duration_s") or 0)

    def pytest_collection(self, session) -> bool:
        session.items = []
        return True

    def pytest_runtestloop(self, session) -> bool:
        import pytest

        hook = session.config.hook
        for r in self.doc["results"]:
            path = r["nodeid"].split("::")[0]
            phases = _phases(r)
            main = 1 if len(phases) == 3 else 0
            for i, (when, outcome, longrepr) in enumerate(phases):
                rep = pytest.TestReport(
                    nodeid=r["nodeid"], location=(path, None, r["nodeid"].split("::")[-1]), keywords={},
                    outcome=outcome, longrepr=longrepr, when=when, sections=[],
                    duration=float(r["duration_s"]) if i == main else 0.0,
                    user_properties=[("check_id", r["check_id"]), ("severity", r["severity"])])
                rep.netconform_result = r
                if i == main:
                    from pytest_html import extras

                    rep.extras = [extras.html(fragments.extras_html(r))]
                hook.pytest_runtest_logreport(report=rep)
        return True

    def pytest_sessionfinish(self, session) -> None:
        session.exitstatus = 0  # the replay succeeded whatever the results say


def main(argv: list[str] | None = None) -> int:
    import pytest

    results_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    doc = json.loads(Path(results_path).read_text())
    with tempfile.TemporaryDirectory(prefix="netconform-html-") as empty:
        args = ["-p", "pytest_metadata.plugin", "-p", "pytest_html.plugin", "-p", "no:cacheprovider",
                "--noconftest", "-c", os.devnull, "--rootdir", empty, "-q", "-o", "render_collapsed=passed,skipped",
                "--html", str(out_path), "--self-contained-html", empty]
        code = pytest.main(args, plugins=[Replay(doc)])
    return 0 if code == 0 and Path(out_path).exists() else 2


if __name__ == "__main__":
    sys.exit(main())
