"""HTML fragments for the pytest-html report (pure): the summary at the top (counts by outcome and
a target x area grid coloured by worst outcome, CSS only), the extra table columns, and each
check's diagnosis / remediation / evidence as an HTML extra.

Everything is escaped here: pytest-html inserts these strings as HTML, and diagnoses quote what
the network answered.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

from . import model

COLOURS = {"error": "#6a1b9a", "failed": "#c62828", "warned": "#f9a825", "skipped": "#9e9e9e", "passed": "#2e7d32"}
LABELS = {"error": "errors", "failed": "failed", "warned": "failed below the gate", "skipped": "skipped",
          "passed": "passed"}
EVIDENCE_HTML_CHARS = 20000

_STYLE = """<style>
.nc-summary{margin:.5em 0 1em 0;color:#222}
.nc-verdict{font-size:1.15em;font-weight:bold;margin:.3em 0}
.nc-counts{margin:.4em 0}
.nc-badge{display:inline-block;padding:.15em .6em;margin:0 .3em .3em 0;border-radius:.8em;color:#fff;font-weight:bold}
.nc-grid{border-collapse:collapse;margin:.5em 0;font-size:.9em}
.nc-grid th,.nc-grid td{border:1px solid #ccc;padding:.25em .6em;text-align:center}
.nc-grid th.nc-target{text-align:left;font-weight:normal;font-family:monospace}
.nc-grid td.nc-empty{background:#fafafa;color:#bbb}
.nc-cell{color:#fff;font-weight:bold}
.nc-legend span{display:inline-block;margin-right:1em}
.nc-legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.nc-extra h4{margin:.4em 0 .2em 0}
.nc-extra .nc-diagnosis{font-weight:bold}
.nc-extra pre{white-space:pre-wrap;max-height:40em;overflow:auto;background:#f6f8fa;padding:.5em}
</style>"""


def title(doc: dict[str, Any]) -> str:
    run = doc["run"]
    ctx = run.get("cluster", {}).get("context", "")
    return f"netconform — {ctx} — {run.get('id', '')}" if ctx else f"netconform — {run.get('id', '')}"


def summary_html(doc: dict[str, Any]) -> str:
    """Verdict, counts by outcome and the target x area grid."""
    results = doc["results"]
    word, sentence = model.verdict(results)
    shown: dict[str, int] = {o: 0 for o in model.DISPLAY_ORDER}
    for r in results:
        shown[model.display_outcome(r)] += 1
    badges = "".join(
        f'<span class="nc-badge nc-{o}" data-outcome="{o}" data-count="{n}" style="background:{COLOURS[o]}">'
        f'{n} {escape(LABELS[o])}</span>' for o, n in shown.items() if n or o in ("failed", "passed"))
    gate = escape(doc["run"].get("fail_on", "error"))
    return (f'{_STYLE}<div class="nc-summary" id="netconform-summary" data-total="{len(results)}">'
            f'<div class="nc-verdict" data-verdict="{word}">{escape(word)}: {escape(sentence)}</div>'
            f'<div class="nc-counts">{len(results)} checks: {badges}</div>'
            f'<div>Gate: <code>--fail-on={gate}</code> — failures below it are reported, not counted.</div>'
            f'{grid_html(results)}</div>')


def grid_html(results: list[dict[str, Any]]) -> str:
    targets, areas, cells = model.grid(results)
    if not targets:
        return ""
    head = "".join(f"<th>{escape(a)}</th>" for a in areas)
    rows = []
    for t in targets:
        tds = []
        for a in areas:
            cell = cells.get((t, a))
            if cell is None:
                tds.append('<td class="nc-empty">·</td>')
                continue
            n = sum(cell["counts"].values())
            bad = sum(cell["counts"].get(o, 0) for o in ("error", "failed", "warned"))
            tip = "; ".join(f"{k}: {v}" for k, v in cell["counts"].items())
            if cell["failing"]:
                tip += " — failing: " + ", ".join(cell["failing"])
            text = f"{bad}/{n} ✗" if bad else f"{cell['counts'].get('passed', 0)}/{n} ✓" if cell["worst"] == "passed" \
                else f"{n} skipped"
            tds.append(f'<td class="nc-cell nc-{cell["worst"]}" data-target="{escape(t)}" data-area="{escape(a)}" '
                       f'data-worst="{cell["worst"]}" style="background:{COLOURS[cell["worst"]]}" '
                       f'title="{escape(tip)}">{escape(text)}</td>')
        rows.append(f'<tr><th class="nc-target">{escape(t)}</th>{"".join(tds)}</tr>')
    legend = "".join(f'<span><i style="background:{COLOURS[o]}"></i>{escape(LABELS[o])}</span>'
                     for o in model.DISPLAY_ORDER)
    return (f'<table class="nc-grid" id="netconform-grid"><thead><tr><th>target \\ area</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><div class="nc-legend">Worst outcome: {legend}</div>')


def header_cells() -> list[tuple[int, str]]:
    """(position, <th>) to insert into pytest-html's header, after the Result column."""
    return [(1, '<th class="sortable" data-column-type="check">Check</th>'),
            (2, '<th class="sortable" data-column-type="severity">Severity</th>'),
            (3, '<th class="sortable" data-column-type="target">Target</th>')]


def row_cells(r: dict[str, Any]) -> list[tuple[int, str]]:
    """(position, <td>) matching `header_cells` for one result."""
    return [(1, f'<td class="col-check">{escape(r.get("check_id", ""))}</td>'),
            (2, f'<td class="col-severity">{escape(r.get("severity", ""))}</td>'),
            (3, f'<td class="col-target">{escape(model.target_label(r.get("target") or {}))}</td>')]


def extras_html(r: dict[str, Any]) -> str:
    """One check invocation's diagnosis, meaning, remediation, links and evidence."""
    parts = ['<div class="nc-extra">']
    if r.get("diagnosis"):
        label = {"failed": "Diagnosis", "error": "Internal error", "skipped": "Not applicable"}.get(r["outcome"], "Note")
        parts.append(f'<h4>{label}</h4><p class="nc-diagnosis">{escape(r["diagnosis"])}</p>')
    if r["outcome"] in ("failed", "error") and r.get("meaning"):
        parts.append(f'<h4>What it means</h4><p class="nc-meaning">{escape(r["meaning"])}</p>')
    if r["outcome"] in ("failed", "error") and r.get("remediation"):
        parts.append(f'<h4>Remediation</h4><p class="nc-remediation">{escape(r["remediation"])}</p>')
    if r.get("links"):
        links = " · ".join(f'<a href="{escape(u)}" target="_blank" rel="noopener">{escape(u)}</a>' for u in r["links"])
        parts.append(f"<p>Links: {links}</p>")
    if r.get("files"):
        by_folder: dict[str, list[str]] = {}
        for f in r["files"]:
            folder = f.rpartition("/")[0]
            by_folder.setdefault(folder, []).append(f)
        listing = "; ".join(
            f'<a href="{escape(folder)}/"><code>{escape(folder)}/</code></a> '
            + ", ".join(f'<a href="{escape(f)}">{escape(f.rpartition("/")[2])}</a>' for f in files)
            for folder, files in by_folder.items())
        parts.append(f'<p class="nc-files">Raw evidence beside this report: {listing}</p>')
    if r.get("evidence"):
        text = json.dumps(r["evidence"], indent=1, default=str)
        if len(text) > EVIDENCE_HTML_CHARS:
            text = text[:EVIDENCE_HTML_CHARS] + f"\n… ({len(text) - EVIDENCE_HTML_CHARS} more characters in results.json)"
        parts.append(f'<details class="nc-evidence"><summary>Evidence ({len(r["evidence"])} items)</summary>'
                     f"<pre>{escape(text)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def environment(doc: dict[str, Any]) -> dict[str, str]:
    """The report's Environment table. pytest-html inserts values as HTML, so they are escaped."""
    run = doc["run"]
    cluster = run.get("cluster", {})
    rows = {
        "Run": run.get("id", ""),
        "Cluster context": cluster.get("context", ""),
        "API server": cluster.get("server", ""),
        "Kubernetes": cluster.get("version", ""),
        "netconform": run.get("netconform_version", ""),
        "Started (UTC)": run.get("start", ""),
        "Duration": f"{float(run.get('duration_s') or 0):.1f} s",
        "Gate": f"--fail-on={run.get('fail_on', 'error')}",
        "Exit status": str(run.get("exit_status", "")),
        "Target pods": ", ".join(run.get("targets", {}).get("pods", [])),
        "Target nodes": ", ".join(run.get("targets", {}).get("nodes", [])),
        "Command": " ".join(run.get("invocation") or []),
    }
    return {k: escape(str(v)) for k, v in rows.items() if v not in ("", None)}
