"""Remove everything a lab made, whether its daemon exited cleanly, crashed or was killed.

Everything of lab <name> is findable without the daemon: namespaces `nc-<name>-*`, cgroups
`nc-<name>` / `nc-<name>.slice`, files `/etc/netns/nc-<name>-*` and the state folder. The root
namespace is never changed by a lab, so there is nothing to undo there.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import netns as pr_netns

from .podproc import remove_lab_cgroups
from .state import LabPaths, daemon_pid

ETC_NETNS = Path("/etc/netns")


def lab_namespaces(name: str) -> list[str]:
    prefix = f"nc-{name}-"
    return [n for n in pr_netns.listnetns() if n.startswith(prefix)]


def _pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


def delete_namespaces(names: list[str]) -> None:
    # A namespace with live processes survives `ip netns del` as an unnamed one: kill first.
    for ns in names:
        for pid in _pids_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in names:
        try:
            pr_netns.remove(ns)
        except OSError:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


# A lab daemon tears itself down on SIGTERM in well under a second on an idle machine; on a
# loaded one (2 cores, other labs building) it can take many seconds. SIGKILL is the last resort:
# a killed daemon leaves its work to `sweep`, so it is only used after a generous wait.
STOP_TIMEOUT = 60.0


def _exited(pid: int) -> bool:
    """True once `pid` is gone or a zombie (a zombie runs nothing and holds nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def stop_process(pid: int, timeout: float = STOP_TIMEOUT, alive: Callable[[], bool] | None = None) -> None:
    """SIGTERM `pid`, wait up to `timeout` s for it to exit, then SIGKILL it and wait until it has
    really exited (so nothing it does can race the sweep that follows). `alive` overrides how
    "still running" is decided (e.g. the daemon's own pid-file check)."""
    alive = alive or (lambda: not _exited(pid))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            kill_deadline = time.monotonic() + 30
            while not _exited(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.02)
            return
        time.sleep(0.02)


def stop_daemon(paths: LabPaths, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the lab daemon (it tears down itself), SIGKILL after `timeout`. True if it ran."""
    pid = daemon_pid(paths)
    if pid is None:
        return False
    stop_process(pid, timeout, alive=lambda: daemon_pid(paths) is not None and not _exited(pid))
    return True


def sweep(paths: LabPaths) -> list[str]:
    """Remove every trace of the lab. Returns what could not be removed (empty when clean)."""
    name = paths.name
    delete_namespaces(lab_namespaces(name))
    left = remove_lab_cgroups(name)
    if ETC_NETNS.is_dir():
        for d in ETC_NETNS.glob(f"nc-{name}-*"):
            shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(paths.root, ignore_errors=True)
    left += lab_namespaces(name)
    if paths.root.exists():
        left.append(str(paths.root))
    return left
