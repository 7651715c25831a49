"""Reports and the evidence bundle: every run against a cluster writes `reports/<run-id>/`.

Where things happen (like pytest-xdist and pytest-html):

- **every process** (xdist workers, or the single process): a `pytest_runtest_makereport`
  hookwrapper puts `report.netconform` on each phase report — the catalog entry, the target,
  the one-sentence diagnosis (redacted) — as plain JSON data, because xdist ships
  `report.__dict__` to the controller. fixtures/probing.py adds `report.netconform_evidence`.
- **the controller** (or the single process): `Reporter` gathers the phase reports in
  `pytest_runtest_logreport` (one ResultsBuilder for the whole run, whatever the worker count),
  and at session finish collects the raw bundle material per target, writes results.json, renders
  every other format from it, applies the `--fail-on` gate to the exit status and prints one line
  per failing check plus the report path.

A run that targets no cluster (the project's own tests/) writes nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netconform.redact import Redactor, redactor_for_environment
from netconform.report import bundle, model
from netconform.report.collect import RawTarget, collect_raw, probe_limit
from netconform.targets import NodeTarget, PodTarget
from plugins.catalog import check_info
from plugins.targets import targets

_REDACTOR: Redactor | None = None
_GROUP = None  # the "netconform" option group: its dests go into results.json


def parse_gate(value: str) -> str:
    if value not in model.GATES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(model.GATES)}, got {value!r}")
    return value


def pytest_addoption(parser) -> None:
    global _GROUP
    group = _GROUP = parser.getgroup("netconform")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write each run's reports and evidence bundle to DIR/<run-id>/ (default: reports/ "
                         "in the project)")
    group.addoption("--fail-on", default="error", type=parse_gate, metavar="SEVERITY",
                    help="lowest severity of a failed check that fails the run: warning, error or critical "
                         "(default error); failures below it are reported but do not set the exit code")
    group.addoption("--bundle-archive", action="store_true", default=False,
                    help="also pack the run folder as DIR/<run-id>.tar.gz")


def redactor(config: pytest.Config) -> Redactor:
    """This process's redactor (knows the kubeconfig's and the environment's secrets)."""
    global _REDACTOR
    if _REDACTOR is None:
        _REDACTOR = redactor_for_environment(config.getoption("kubeconfig", None))
    return _REDACTOR


# -- every process: what each phase report carries ----------------------------------------------------
def target_of(item: pytest.Item) -> dict[str, str]:
    """The pod or node a check invocation looks at (from its parameters), else the cluster."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for value in params.values():
        pod = value if isinstance(value, PodTarget) else getattr(value, "src", None)
        if isinstance(pod, PodTarget):
            return {"kind": "pod", "name": pod.key}
    for value in params.values():
        if isinstance(value, NodeTarget):
            return {"kind": "node", "name": value.name}
    return {"kind": "cluster", "name": ""}


def message_of(report: pytest.TestReport, call: pytest.CallInfo) -> tuple[str, bool]:
    """(diagnosis / skip reason / error text, whether the suite itself broke)."""
    if report.passed:
        return "", False
    exc = call.excinfo
    if report.skipped:
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            return str(report.longrepr[2]).removeprefix("Skipped: "), False
        return model.first_line(str(exc.value) if exc else report.longreprtext), False
    if exc is None:
        return model.first_line(report.longreprtext), True
    if isinstance(exc.value, pytest.fail.Exception):
        return str(exc.value.msg), False
    if isinstance(exc.value, AssertionError):
        # Rewritten asserts read "<message>\nassert <explanation>": the message is the diagnosis.
        text = str(exc.value)
        return (text.split("\nassert ")[0] if not text.startswith("assert ") else model.first_line(text)), False
    return f"{exc.typename}: {model.first_line(str(exc.value))}", True


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest's own --junitxml gets the target too (the catalog plugin adds id, severity, area).
    for item in items:
        if check_info(item) is not None:
            item.user_properties.append(("target", model.target_label(target_of(item))))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    red = redactor(item.config)
    info = check_info(item)
    message, internal = message_of(report, call)
    report.netconform = {"check": dataclasses.asdict(info) if info else None, "target": target_of(item),
                         "message": red.text(message), "internal_error": internal}
    _redact_report(report, red)
    if item.config.getoption("htmlpath", None) and _is_main_phase(report):
        _add_live_extras(report, red)


def _is_main_phase(report: pytest.TestReport) -> bool:
    return report.when == "call" or (report.when == "setup" and not report.passed)


def _redact_report(report: pytest.TestReport, red: Redactor) -> None:
    """Keep secrets out of pytest's own outputs too (--junitxml, --html, the terminal)."""
    if report.longrepr is not None and not report.passed:
        text = report.longreprtext
        if red.contains_secret(text):
            report.longrepr = red.text(text)
    if report.sections:
        report.sections = [(title, red.text(body)) if red.contains_secret(body) else (title, body)
                           for title, body in report.sections]


def _add_live_extras(report: pytest.TestReport, red: Redactor) -> None:
    from pytest_html import extras

    from netconform.report.html import extras_html

    info = report.netconform
    rec = model.phase(report.nodeid, report.when, report.outcome, check=info["check"], target=info["target"],
                      message=info["message"], internal_error=info["internal_error"],
                      evidence=red.data(getattr(report, "netconform_evidence", [])))
    report.extras = list(getattr(report, "extras", [])) + [extras.html(extras_html(model.merge_phases(report.nodeid, [rec])))]


# -- the controller ----------------------------------------------------------------------------------
class Reporter:
    """Gathers the run's results and writes reports/<run-id>/. Registered as `netconform-report`."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.builder = model.ResultsBuilder()
        self.start = datetime.now(UTC)
        self._t0 = time.monotonic()
        self.doc: dict[str, Any] | None = None
        self.run_dir: Path | None = None
        self.archive: Path | None = None
        self.problems: list[str] = []
        self.probe_stats: dict[str, Any] = {"targets": {}, "workers": {}}  # merged from xdist workers

    # gathering
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.start = datetime.now(UTC)
        self._t0 = time.monotonic()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.builder.add_collect_error(report.nodeid, report.longreprtext)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = getattr(report, "netconform", None) or {}
        message = info.get("message")
        if message is None:  # a report made on the controller (xdist: a worker crashed)
            message = redactor(self.config).text(model.first_line(report.longreprtext))
        self.builder.add(model.phase(
            report.nodeid, report.when, report.outcome, report.duration, check=info.get("check"),
            target=info.get("target"), message=message, internal_error=info.get("internal_error", not info),
            evidence=getattr(report, "netconform_evidence", None), wasxfail=hasattr(report, "wasxfail")))

    def pytest_testnodedown(self, node, error) -> None:
        from fixtures.probing import PROBE_STATS_KEY

        _merge_probe_stats(self.probe_stats, (getattr(node, "workeroutput", {}) or {}).get(PROBE_STATS_KEY, {}))

    # writing
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        plugin = targets(self.config)
        if plugin is None or plugin.snapshot is None or self.config.option.collectonly or not len(self.builder):
            return
        results = self.builder.results()
        model.apply_gate(results, self.config.option.fail_on)
        status = model.gated_exit_status(int(exitstatus), results)
        try:
            self.write(results, int(exitstatus), status)
        except Exception as e:  # noqa: BLE001 -- a broken report must not hide the run's outcome
            self.problems.append(f"writing the report failed: {type(e).__name__}: {e}")
        if status != int(exitstatus):
            session.exitstatus = status

    def write(self, results: list[dict[str, Any]], pytest_status: int, status: int) -> None:
        from netconform.report.htmlreport import HtmlRenderError, render_html
        from netconform.report.junit import render_junit
        from netconform.report.markdown import render_markdown, step_summary

        plugin = targets(self.config)
        snap = plugin.snapshot
        red = redactor(self.config)
        base = Path(self.config.option.report_dir) if self.config.option.report_dir else self.config.rootpath / "reports"
        self.run_dir = bundle.make_run_dir(base, self.start, snap.context)
        writer = bundle.BundleWriter(self.run_dir, red)

        collected = collect_raw(self._raw_targets(plugin), self._locate(plugin),
                                timeout=probe_limit(self.config.option.probe_timeout))
        manifest = bundle.write_bundle(writer, collected, snap.to_dict(), results)
        bundle.attach_files(results, manifest)
        self.doc = red.data({"schema": model.SCHEMA, "run": self._run_meta(plugin, results, pytest_status, status),
                             "results": results, "bundle": manifest})
        self.doc["run"]["redactions"] = dict(red.counts)
        writer.write("results.json", self.doc)
        # Render from the file, not from memory: exactly what `netconform report` will read.
        self.doc = json.loads((self.run_dir / "results.json").read_text())
        writer.write("report.md", render_markdown(self.doc))
        writer.write("junit.xml", render_junit(self.doc))
        try:
            render_html(self.run_dir / "results.json", self.run_dir / "report.html")
        except HtmlRenderError as e:
            self.problems.append(str(e))
        # report.html comes from a child process, and other plugins may add files: check them too.
        bundle.sweep(self.run_dir, red, skip=writer.written)
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            try:
                with open(summary_path, "a", encoding="utf-8") as f:
                    f.write(red.text(step_summary(self.doc)) + "\n")
            except OSError as e:
                self.problems.append(f"cannot append to $GITHUB_STEP_SUMMARY ({summary_path}): {e.strerror}")
        if self.config.option.bundle_archive:
            self.archive = bundle.archive(self.run_dir)

    def _raw_targets(self, plugin) -> list[RawTarget]:
        snap, plan = plugin.snapshot, plugin.plan
        if plan is None:
            return []
        out = [RawTarget("pod", p.key, snap.pod(p.namespace, p.name)) for p in plan.pods]
        out += [RawTarget("node", n.name, snap.node(n.name)) for n in plan.nodes]
        return out

    def _locate(self, plugin):
        try:
            from fixtures.probing import locate_namespace
        except ImportError as e:  # best effort: every folder then says why it has no netns files
            from netconform.runners.places import Located

            def cannot(t: RawTarget, why: str = str(e)) -> Located:
                return Located("", 0, [f"no namespace resolver: {why}"])

            return cannot
        snap, plan = plugin.snapshot, plugin.plan
        found = {("pod", p.key): p for p in plan.pods} | {("node", n.name): n for n in plan.nodes}
        # The same places the checks use (this machine, or the node's debug pod).
        return lambda t: locate_namespace(snap, found[(t.kind, t.name)])

    def _probe_meta(self) -> dict[str, Any]:
        """How many probe questions ran where, how many asks were shared, any question that ran
        more than once (across xdist workers too: only `fresh` asks should), and how many probe
        workers each namespace needed (this process's, e.g. for the bundle, included)."""
        from fixtures.probing import probe_stats

        stats: dict[str, Any] = {"targets": {}, "workers": {}}
        _merge_probe_stats(stats, self.probe_stats)
        _merge_probe_stats(stats, probe_stats())
        by_where = {where: {"runs": sum(st["runs"].values()), "shared": st["shared"], "namespace": st["namespace"],
                            "repeated": {q: n for q, n in st["runs"].items() if n > 1}}
                    for where, st in sorted(stats["targets"].items())}
        return {"runs": sum(w["runs"] for w in by_where.values()),
                "shared": sum(w["shared"] for w in by_where.values()), "by_target": by_where,
                "workers_started": dict(sorted(stats["workers"].items()))}

    def _run_meta(self, plugin, results, pytest_status: int, status: int) -> dict[str, Any]:
        snap, plan = plugin.snapshot, plugin.plan
        end = datetime.now(UTC)
        opt = self.config.option
        options = {dest: _jsonable(getattr(opt, dest, None)) for dest in _netconform_dests(self.config)}
        options.update(keyword=opt.keyword, markexpr=opt.markexpr, numprocesses=getattr(opt, "numprocesses", None))
        word, sentence = model.verdict(results)
        return {
            "id": self.run_dir.name,
            "netconform_version": _version(),
            "pytest_version": pytest.__version__,
            "python": platform.python_version(),
            "host": socket.gethostname(),
            "cluster": {"context": snap.context, "server": snap.server,
                        "version": (snap.version or {}).get("gitVersion", ""), "version_info": snap.version,
                        "missing_permissions": snap.missing_permissions},
            # Every API request of the run is the snapshot's: one list per kind, whatever the pod count.
            "api_requests": sum(snap.api_requests.values()),
            "api_requests_by_path": snap.api_requests,
            "targets": {"pods": [p.key for p in plan.pods] if plan else [],
                        "nodes": [n.name for n in plan.nodes] if plan else []},
            "options": options,
            "invocation": list(self.config.invocation_params.args),
            "start": self.start.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "end": end.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "duration_s": round(time.monotonic() - self._t0, 3),
            "fail_on": opt.fail_on,
            "pytest_exit_status": pytest_status,
            "exit_status": status,
            "verdict": word,
            "verdict_text": sentence,
            "counts": model.counts(results),
            "probes": self._probe_meta(),
            "failed_by_severity": model.failed_by_severity(results),
        }

    # telling the user
    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        for problem in self.problems:
            tr.write_line(f"netconform: {problem}", red=True)
        if self.doc is None:
            return
        results = self.doc["results"]
        bad = model.failing(results)
        if not bad:
            return
        gate = self.doc["run"]["fail_on"]
        counted = [r for r in bad if r["counted"]]
        tr.write_sep("=", f"netconform: {len(bad)} failing checks (--fail-on={gate}: {len(counted)} counted)",
                     red=bool(counted), yellow=not counted)
        for r in bad:
            sev = "ERROR" if r["outcome"] == "error" else r["severity"]
            mark = "" if r["counted"] else " (not counted)"
            label = model.target_label(r["target"])
            # Diagnoses name their target first ("pod default/web-0: ..."): say it once.
            diagnosis = model.one_line(r["diagnosis"]).removeprefix(f"{label}: ")
            tr.write_line(f"[{sev}]{mark} {r['check_id'] or r['nodeid']} {label}: {diagnosis}")
        below = len(bad) - len(counted)
        if below:
            tr.write_line(f"{below} failing checks are below --fail-on={gate}: reported, not counted in the exit code.",
                          yellow=True)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # Last line of the run, after pytest's own summary: where to look.
        if self.run_dir is None:
            return
        tr = config.pluginmanager.get_plugin("terminalreporter")
        path = _display_path(self.run_dir)
        line = f"netconform report: {path}/report.html (also report.md, results.json, junit.xml, evidence)"
        if self.archive is not None:
            line += f"; archive {_display_path(self.archive)}"
        if tr is not None:
            tr.write_line(line)


def _display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p.resolve())


def _netconform_dests(config: pytest.Config) -> list[str]:
    return [o.dest for o in getattr(_GROUP, "options", [])]


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def _merge_probe_stats(into: dict[str, Any], more: dict[str, Any]) -> None:
    for where, st in (more.get("targets") or {}).items():
        mine = into["targets"].setdefault(where, {"runs": {}, "shared": 0, "namespace": st.get("namespace", "")})
        mine["shared"] += st["shared"]
        for q, n in st["runs"].items():
            mine["runs"][q] = mine["runs"].get(q, 0) + n
    for ns, n in (more.get("workers") or {}).items():
        into["workers"][ns] = into["workers"].get(ns, 0) + n


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netconform")
    except PackageNotFoundError:
        return "unknown"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or config.option.help:
        return
    reporter = Reporter(config)
    config.pluginmanager.register(reporter, "netconform-report")
    if config.getoption("htmlpath", None) and config.pluginmanager.hasplugin("html"):
        from netconform.report.htmlreport import ColumnsPlugin

        config.pluginmanager.register(ColumnsPlugin(lambda: reporter.doc), "netconform-html-columns")
