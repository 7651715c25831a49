"""Where a lab keeps its state, so `status`, `fault`, `heal` and `down` work from any process.

One folder per lab under /run/netconform/labs/<name>/ (tmpfs: gone after a reboot, like the
namespaces themselves): kubeconfig, CA, token, the spec, status.json, the daemon's pid and log.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

STATE_ROOT = Path(os.environ.get("NETCONFORM_LAB_STATE", "/run/netconform/labs"))


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    request = property(lambda self: self.root / "request.json")
    spec = property(lambda self: self.root / "spec.json")
    status = property(lambda self: self.root / "status.json")
    kubeconfig = property(lambda self: self.root / "kubeconfig")
    token = property(lambda self: self.root / "token")
    pid = property(lambda self: self.root / "daemon.pid")
    log = property(lambda self: self.root / "daemon.log")
    ready = property(lambda self: self.root / "ready")
    error = property(lambda self: self.root / "error")
    env = property(lambda self: self.root / "env.sh")
    pki = property(lambda self: self.root / "pki")
    ca = property(lambda self: self.root / "pki" / "ca.crt")


def lab_paths(name: str) -> LabPaths:
    return LabPaths(STATE_ROOT / name)


def known_labs() -> list[str]:
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Atomic write: readers in other processes never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def daemon_pid(paths: LabPaths) -> int | None:
    """The lab daemon's pid if it is alive (and really ours: its cmdline names the state dir)."""
    try:
        pid = int(paths.pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(paths.root) in cmdline else None
