"""`netconform`: work with runs and the check catalog outside pytest.

    netconform report reports/20250102T030405Z-prod     # re-render report.md and report.html
    netconform report bundle/results.json --out /tmp/r  # ... from a results.json, elsewhere
    netconform list-checks [--area dns] [--json]        # the catalog
    netconform cleanup [--older-than 1h]                # delete leftover debug pods (remote mode)

A bundle produced inside a cluster can be copied to a laptop and read there: `report` needs only
its results.json. Subcommands register in `COMMANDS` (room for `job`, `fleet`, `capture`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from netconform.report.model import SCHEMA


class CliError(Exception):
    """One line for the user, exit status 2."""


def _load_results(path: Path) -> tuple[dict, Path]:
    results = path / "results.json" if path.is_dir() else path
    try:
        doc = json.loads(results.read_text())
    except FileNotFoundError:
        raise CliError(f"{results} does not exist (give a run folder or its results.json)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CliError(f"cannot read {results}: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CliError(f"{results} is not a netconform results file (schema {SCHEMA})")
    return doc, results


def cmd_report(args: argparse.Namespace) -> int:
    from netconform.redact import redactor_for_environment
    from netconform.report.bundle import BundleWriter
    from netconform.report.htmlreport import HtmlRenderError, render_html
    from netconform.report.markdown import render_markdown

    doc, results_path = _load_results(Path(args.run))
    out = Path(args.out) if args.out else results_path.parent
    out.mkdir(parents=True, exist_ok=True)
    # The run already redacted results.json; this catches what a hand-edited copy may add.
    writer = BundleWriter(out, redactor_for_environment())
    writer.write("report.md", render_markdown(doc))
    try:
        render_html(results_path, out / "report.html")
    except HtmlRenderError as e:
        raise CliError(str(e)) from None
    print(f"{out / 'report.md'}\n{out / 'report.html'}")
    return 0


def cmd_list_checks(args: argparse.Namespace) -> int:
    from netconform.catalog import load_catalog

    try:
        checks = sorted(load_catalog().values(), key=lambda c: (c.area, c.id))
    except (OSError, ValueError) as e:
        raise CliError(f"cannot load the catalog: {e}") from None
    if args.area:
        checks = [c for c in checks if c.area == args.area]
    if args.json:
        print(json.dumps([{"id": c.id, "title": c.title, "area": c.area, "severity": c.severity,
                           "meaning": c.meaning, "remediation": c.remediation, "links": list(c.links)}
                          for c in checks], indent=2))
        return 0
    width = max((len(c.id) for c in checks), default=10)
    print(f"{'CHECK':<{width}}  {'SEVERITY':<8}  TITLE")
    for c in checks:
        print(f"{c.id:<{width}}  {c.severity:<8}  {c.title}")
    return 0


def parse_age(value: str) -> float:
    """`90`, `90s`, `30m`, `2h`, `1d` -> seconds."""
    import re

    m = re.fullmatch(r"(\d+)([smhd]?)", value.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected an age like 90s, 30m, 2h or 1d, got {value!r}")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Delete the debug pods netconform runs left (found by their managed-by label, in the debug
    namespace or everywhere); say what was deleted. Runs sweep their own expired pods; this is
    for right now, e.g. after a SIGKILLed run."""
    from netconform.errors import NetconformError
    from netconform.kube import connect
    from netconform.remote.debugpod import Refusal, cleanup

    try:
        cluster = connect(args.kubeconfig, args.context)
        deleted, failed = cleanup(cluster, None if args.all_namespaces else args.namespace,
                                  older_than_s=args.older_than)
    except (NetconformError, Refusal) as e:
        raise CliError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- the API unreachable mid-way: one line, not a traceback
        raise CliError(f"cannot reach the cluster: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    for key in deleted:
        print(f"deleted pod {key}")
    for line in failed:
        print(f"not deleted: {line}", file=sys.stderr)
    if not deleted and not failed:
        where = "any namespace" if args.all_namespaces else f"namespace {args.namespace}"
        print(f"no netconform debug pods in {where}" + (" old enough" if args.older_than else ""))
    return 1 if failed else 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "report": (cmd_report, "re-render report.md and report.html from a run's results.json"),
    "list-checks": (cmd_list_checks, "print the check catalog (id, severity, title)"),
    "cleanup": (cmd_cleanup, "delete debug pods that netconform runs left behind"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netconform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "report":
            p.add_argument("run", metavar="DIR", help="a run folder (reports/<run-id>) or its results.json")
            p.add_argument("--out", metavar="DIR", help="write the reports here instead of beside results.json")
        elif name == "list-checks":
            p.add_argument("--area", help="only the checks of this area (dns, gateway, ...)")
            p.add_argument("--json", action="store_true", help="every field, as JSON")
        elif name == "cleanup":
            p.add_argument("--namespace", default="netconform", help="the debug namespace (default netconform)")
            p.add_argument("--all-namespaces", "-A", action="store_true", help="look in every namespace")
            p.add_argument("--older-than", type=parse_age, default=None, metavar="AGE",
                           help="only pods older than this (90s, 30m, 2h, 1d)")
            p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: as kubectl finds it)")
            p.add_argument("--context", default=None, help="kubeconfig context")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except CliError as e:
        print(f"netconform {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
