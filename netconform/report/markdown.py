"""report.md: GitHub-flavoured markdown from a results document (pure).

Layout: a one-line verdict, the run line, a summary table by area, the failing checks first
(grouped by check: what it means and the remediation once, then each failing target with its
diagnosis and an evidence excerpt in a collapsible <details>), then the rest in collapsed tables.

>>> md = render_markdown(doc)                  # doc = json.load(open("results.json"))
>>> md.splitlines()[0]
'## netconform: ❌ FAIL — 3 of 40 checks failed (3 critical) on netconform-lab'
"""
from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from . import model

ICONS = {"failed": "❌", "error": "💥", "warned": "⚠️", "passed": "✅", "skipped": "⏭️"}
VERDICT_ICONS = {"FAIL": "❌", "WARN": "⚠️", "PASS": "✅"}
SEVERITY_ICONS = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵"}
# GitHub refuses a step summary over 1 MiB; leave room for what other steps append.
STEP_SUMMARY_LIMIT = 900 * 1024
EVIDENCE_EXCERPT_CHARS = 1500

_MD_SPECIAL = re.compile(r"([\\`*_\[\]])")


def md_text(s: str) -> str:
    """Prose-safe: HTML-significant characters as entities, markdown emphasis/link chars escaped."""
    s = (s or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_prose(s: str) -> str:
    """Catalog text (ours): like md_text, but `commands` in backticks stay inline code."""
    s = s or ""
    if s.count("`") % 2:
        return md_text(s)
    parts = s.split("`")
    return "".join(md_text(p) if i % 2 == 0 else code(p) for i, p in enumerate(parts))


def md_cell(s: str) -> str:
    """Safe inside a table cell: one line, pipes escaped."""
    return md_text(model.one_line(s)).replace("|", "\\|")


def code(s: str) -> str:
    """Inline code that survives any backticks in `s`."""
    s = model.one_line(s)
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def fence(text: str, lang: str = "") -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def verdict_line(doc: dict[str, Any]) -> str:
    word, sentence = model.verdict(doc["results"])
    ctx = doc["run"].get("cluster", {}).get("context", "")
    where = f" on {md_text(ctx)}" if ctx else ""
    return f"## netconform: {VERDICT_ICONS[word]} {word} — {md_text(sentence)}{where}"


def run_line(run: dict[str, Any]) -> str:
    cluster = run.get("cluster", {})
    parts = [f"run {code(run.get('id', '?'))}"]
    if cluster.get("context"):
        server = f" ({code(cluster['server'])}" if cluster.get("server") else " ("
        version = cluster.get("version", "")
        parts.append(f"context **{md_text(cluster['context'])}**{server}"
                     f"{', Kubernetes ' + md_text(version) if version else ''})")
    parts.append(f"netconform {md_text(run.get('netconform_version', '?'))}")
    if run.get("start"):
        parts.append(f"started {md_text(run['start'])}")
    if run.get("duration_s") is not None:
        parts.append(f"{run['duration_s']:.1f} s")
    parts.append(f"gate {code('--fail-on=' + run.get('fail_on', 'error'))}")
    return " · ".join(parts)


def area_table(results: list[dict[str, Any]]) -> list[str]:
    rows = ["| Area | Checks | ❌ Failed | 💥 Errors | ✅ Passed | ⏭️ Skipped | Worst failure |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for area, a in model.by_area(results).items():
        c = a["counts"]
        worst = f"{SEVERITY_ICONS.get(a['worst_severity'], '')} {a['worst_severity']}" if a["worst_severity"] else "—"
        rows.append(f"| {md_cell(area)} | {a['total']} | {c['failed']} | {c['error']} | {c['passed']} | "
                    f"{c['skipped']} | {worst} |")
    c = model.counts(results)
    rows.append(f"| **Total** | **{len(results)}** | **{c['failed']}** | **{c['error']}** | **{c['passed']}** | "
                f"**{c['skipped']}** | |")
    return rows


def evidence_excerpt(r: dict[str, Any], limit: int) -> str:
    items = r.get("evidence") or []
    text = json.dumps(items, indent=1, sort_keys=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters in results.json)"
    return text


def failing_section(doc: dict[str, Any], evidence_chars: int) -> list[str]:
    results = doc["results"]
    groups = model.group_failing(results)
    if not groups:
        return []
    gate = doc["run"].get("fail_on", "error")
    out = [f"### Failing checks ({sum(len(rs) for _, rs in groups)})", ""]
    for check_id, rs in groups:
        first = rs[0]
        icon = "💥" if first["outcome"] == "error" else SEVERITY_ICONS.get(first["severity"], "")
        out.append(f"#### {icon} {code(check_id)} — {md_text(first['title'])}")
        counted = "" if any(r["counted"] for r in rs) else f" · *below {code('--fail-on=' + gate)}: not counted*"
        out.append(f"**{md_text(first['severity'])}** · area {md_text(first['area'])} · "
                   f"{len(rs)} failing{counted}")
        out.append("")
        if first.get("meaning"):
            out += [f"**What it means:** {md_prose(model.one_line(first['meaning']))}", ""]
        if first.get("remediation"):
            out += [f"**Remediation:** {md_prose(model.one_line(first['remediation']))}", ""]
        if first.get("links"):
            out += ["**Links:** " + " · ".join(f"<{link}>" for link in first["links"]), ""]
        for r in rs:
            label = "internal error" if r["outcome"] == "error" else "diagnosis"
            out.append(f"- **{md_text(model.target_label(r['target']))}** · {code(r['nodeid'])} · "
                       f"{r['duration_s']:.2f} s  ")
            out.append(f"  {label}: {md_text(model.one_line(r['diagnosis']))}")
            if evidence_chars and (r.get("evidence") or r.get("files")):
                folders = sorted({f.split("/")[0] for f in r.get("files") or []})
                # A <summary> line is raw HTML on GitHub: no markdown inside it.
                where = f" · raw files in {', '.join(f'<code>{escape(f)}/</code>' for f in folders)}" if folders else ""
                out += ["", f"  <details><summary>Evidence: {len(r.get('evidence') or [])} items{where}</summary>", ""]
                out += ["  " + line for line in fence(evidence_excerpt(r, evidence_chars), "json").splitlines()]
                out += ["", "  </details>"]
            out.append("")
    return out


def rest_section(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for outcome, title in (("passed", "Passed"), ("skipped", "Skipped (not applicable)")):
        rs = [r for r in results if r["outcome"] == outcome]
        if not rs:
            continue
        out += [f"<details><summary>{ICONS[outcome]} {title} ({len(rs)})</summary>", ""]
        if outcome == "passed":
            out += ["| Check | Target | Test | Duration |", "|---|---|---|---:|"]
            out += [f"| {code(r['check_id'])} | {md_cell(model.target_label(r['target']))} | {code(r['nodeid'])} | "
                    f"{r['duration_s']:.2f} s |" for r in rs]
        else:
            out += ["| Check | Target | Test | Reason |", "|---|---|---|---|"]
            out += [f"| {code(r['check_id'])} | {md_cell(model.target_label(r['target']))} | {code(r['nodeid'])} | "
                    f"{md_cell(r['diagnosis'])} |" for r in rs]
        out += ["", "</details>", ""]
    return out


def render_markdown(doc: dict[str, Any], evidence_chars: int = EVIDENCE_EXCERPT_CHARS) -> str:
    """The whole report.md. `evidence_chars=0` leaves evidence out (the compact step summary)."""
    results = doc["results"]
    lines = [verdict_line(doc), "", run_line(doc["run"]), ""]
    lines += ["### Summary by area", ""] + area_table(results) + [""]
    lines += failing_section(doc, evidence_chars)
    lines += rest_section(results)
    bundle = doc.get("bundle") or {}
    if bundle.get("folders"):
        lines += ["### Evidence bundle", ""]
        for folder, info in sorted(bundle["folders"].items()):
            errors = f" — {len(info.get('errors') or [])} not collected" if info.get("errors") else ""
            lines.append(f"- {code(folder + '/')}: {len(info.get('files') or [])} files{md_text(errors)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def step_summary(doc: dict[str, Any]) -> str:
    """What goes into $GITHUB_STEP_SUMMARY: the report, compacted if it would exceed the limit."""
    md = render_markdown(doc)
    if len(md.encode()) <= STEP_SUMMARY_LIMIT:
        return md
    md = render_markdown(doc, evidence_chars=0)
    if len(md.encode()) <= STEP_SUMMARY_LIMIT:
        return md
    return "\n".join([verdict_line(doc), "", run_line(doc["run"]), ""] + area_table(doc["results"])) + \
        "\n\nThe full report is too large for a step summary: see report.md in the run's artifacts.\n"
