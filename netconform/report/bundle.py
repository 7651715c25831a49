"""The run folder and the evidence bundle: `reports/<run-id>/{pod_<ns>_<name>,node_<name>,cluster,aws}/`.

Every byte goes through one `BundleWriter`, which redacts before writing: structured data by key
and text (so API objects keep their shape), text by value and pattern. `sweep` re-reads the
finished folder as a last line of defence, and `archive` packs it as `<run-id>.tar.gz`.

>>> run_dir = make_run_dir(Path("reports"), datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "arn:aws:eks:us-west-2:1:cluster/prod")
>>> run_dir.name
'20250102T030405Z-prod'
"""
from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from netconform.redact import Redactor

from . import model
from .collect import Collected

CLUSTER_KINDS = ("pods", "services", "endpointslices", "nodes", "root_ca_configmaps")


def short_context(context: str) -> str:
    """A short, file-name-safe name for a kubeconfig context.

    >>> short_context("arn:aws:eks:us-west-2:123456789012:cluster/prod-1"), short_context("gke_p_z_web")
    ('prod-1', 'web')
    >>> short_context("admin@blue.us-east-1.eksctl.io"), short_context("netconform-lab")
    ('blue', 'netconform-lab')
    """
    s = (context or "").rsplit("/", 1)[-1]
    if s.startswith("gke_"):
        s = s.split("_")[-1]
    s = s.split("@")[-1].split(".")[0]
    s = re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-")[:40].strip("-")
    return s or "cluster"


def run_id(start: datetime, context: str) -> str:
    return f"{start.strftime('%Y%m%dT%H%M%SZ')}-{short_context(context)}"


def make_run_dir(base: Path, start: datetime, context: str) -> Path:
    """Create `base/<run-id>/` — never an existing folder (two runs in one second get `-2`, ...)."""
    base.mkdir(parents=True, exist_ok=True)
    rid = run_id(start, context)
    for n in range(1, 1000):
        path = base / (rid if n == 1 else f"{rid}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder for {rid} in {base}")


def folder_name(kind: str, name: str) -> str:
    """`pod_<ns>_<name>` / `node_<name>`, safe as a file name.

    >>> folder_name("pod", "default/web-0"), folder_name("node", "ip-10-0-1-5.ec2.internal")
    ('pod_default_web-0', 'node_ip-10-0-1-5.ec2.internal')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "_")).strip("._") or "unnamed"
    return f"{kind}_{safe}"


def folder_of_where(where: str) -> str | None:
    """The bundle folder for an evidence item's `where` ("pod default/web-0", "node n1")."""
    kind, _, name = (where or "").partition(" ")
    if kind in ("pod", "node") and name:
        return folder_name(kind, name.strip())
    return None


class BundleWriter:
    """Writes files under the run folder, redacted, and remembers what it wrote."""

    def __init__(self, root: Path, redactor: Redactor):
        self.root = root
        self.redactor = redactor
        self.written: list[str] = []

    def write(self, rel: str, content: Any) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray)):
            raise TypeError(f"{rel}: the bundle holds text only (binary files cannot be redacted)")
        if rel.endswith(".json"):
            text = json.dumps(self.redactor.data(content), indent=2, sort_keys=False, default=str) + "\n"
        elif rel.endswith((".yaml", ".yml")) and not isinstance(content, str):
            import yaml

            text = yaml.safe_dump(self.redactor.data(content), sort_keys=False, default_flow_style=False,
                                  allow_unicode=True)
        else:
            text = str(content)
        path.write_text(self.redactor.text(text))
        self.written.append(rel)
        return rel

    def mkdir(self, rel: str) -> None:
        (self.root / rel).mkdir(parents=True, exist_ok=True)


def transcripts(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """folder -> every evidence item the checks recorded there (probe calls with args and answers)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        own = folder_of_where(model.target_label(r["target"]))
        for item in r.get("evidence") or []:
            folder = folder_of_where(item.get("where", "")) or own
            if folder:
                out.setdefault(folder, []).append({"check": r["nodeid"], "check_id": r["check_id"],
                                                   "outcome": r["outcome"], **item})
    return out


def write_bundle(writer: BundleWriter, collected: list[Collected], snapshot: dict[str, Any] | None,
                 results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write pod/node folders, cluster/ and aws/; returns the manifest for results.json."""
    folders: dict[str, dict[str, Any]] = {}
    for c in collected:
        folder = folder_name(c.target.kind, c.target.name)
        info = folders.setdefault(folder, {"target": c.target.label, "files": [], "errors": []})
        for name, content in sorted(c.files.items()):
            info["files"].append(writer.write(f"{folder}/{name}", content))
        info["errors"] += c.errors
    for folder, items in transcripts(results).items():
        info = folders.setdefault(folder, {"target": folder.replace("_", " ", 1), "files": [], "errors": []})
        info["files"].append(writer.write(f"{folder}/probe-transcript.json", items))
    for folder, info in folders.items():
        how = next((c.how for c in collected if folder_name(c.target.kind, c.target.name) == folder), {})
        info["files"].append(writer.write(f"{folder}/collection.json",
                                          {"target": info["target"], "errors": info["errors"], **how}))
        info["files"].sort()
    folders["cluster"] = {"target": "cluster", "files": write_cluster(writer, snapshot), "errors": []}
    # Cloud evidence (ENIs, security groups, CloudTrail) is collected by the AWS checks into here.
    writer.mkdir("aws")
    folders["aws"] = {"target": "aws", "files": [], "errors": []}
    return {"folders": folders}


def write_cluster(writer: BundleWriter, snapshot: dict[str, Any] | None) -> list[str]:
    """cluster/: the snapshot's API objects as kubectl-style Lists, plus where they came from."""
    if not snapshot:
        writer.mkdir("cluster")
        return []
    files = [writer.write("cluster/context.json", {
        "context": snapshot.get("context"), "server": snapshot.get("server"), "version": snapshot.get("version"),
        "missing_permissions": snapshot.get("missing_permissions") or {}})]
    for kind in CLUSTER_KINDS:
        items = snapshot.get(kind) or []
        api_version = "v1"
        files.append(writer.write(f"cluster/{kind.replace('_', '-')}.yaml",
                                  {"apiVersion": api_version, "kind": "List", "items": items}))
    return files


def attach_files(results: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    """Each result names the raw files of its target's folder."""
    folders = manifest.get("folders") or {}
    for r in results:
        folder = folder_of_where(model.target_label(r["target"]))
        r["files"] = list(folders.get(folder, {}).get("files") or []) if folder else []


def sweep(root: Path, redactor: Redactor, skip: Iterable[str] = ()) -> list[str]:
    """Re-read every text file under `root` (but `skip`: files a BundleWriter already redacted)
    and redact what is still there; returns the files fixed."""
    fixed = []
    done = set(skip)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and str(p.relative_to(root)) not in done):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if redactor.contains_secret(text):
            path.write_text(redactor.text(text))
            fixed.append(str(path.relative_to(root)))
    return fixed


def archive(run_dir: Path) -> Path:
    """`<run-id>.tar.gz` beside the run folder, holding the folder itself."""
    out = run_dir.with_name(run_dir.name + ".tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name)
    return out
