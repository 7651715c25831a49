"""The check catalog (checks/catalog.yaml): title, area, severity, meaning, remediation, links."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

CATALOG_PATH = Path(__file__).resolve().parent.parent / "checks" / "catalog.yaml"
SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class CheckInfo:
    id: str
    title: str
    area: str
    severity: str
    meaning: str
    remediation: str
    links: tuple[str, ...] = field(default_factory=tuple)


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_PATH) -> dict[str, CheckInfo]:
    raw = yaml.safe_load(path.read_text()) or {}
    out = {}
    for cid, entry in raw.items():
        missing = [k for k in ("title", "area", "severity", "meaning", "remediation") if not entry.get(k)]
        if missing:
            raise ValueError(f"{path}: check {cid} lacks {', '.join(missing)}")
        if entry["severity"] not in SEVERITIES:
            raise ValueError(f"{path}: check {cid} has severity {entry['severity']!r}, not one of {SEVERITIES}")
        if cid.split(".")[0] != entry["area"]:
            raise ValueError(f"{path}: check {cid} must start with its area {entry['area']!r}")
        out[cid] = CheckInfo(cid, entry["title"], entry["area"], entry["severity"], entry["meaning"].strip(),
                             entry["remediation"].strip(), tuple(entry.get("links") or ()))
    return out
