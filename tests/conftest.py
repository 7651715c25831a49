"""Fixtures shared by the project's own tests."""
from __future__ import annotations

import os
import secrets
import subprocess

import pytest

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` (what `make test` uses) keep each `xdist_group` on one worker.

    pytest-xdist 3.8 marks a grouped test by appending `@<group>` to `item._nodeid`, but pytest 9
    derives `nodeid` from `item._id`: the suffix never shows, and every grouped test is scheduled
    on its own like with `--dist load`. Module-scoped fixtures shared by a group (a lab, a whole
    suite run) were then built once per worker: twice the work, on a machine that the lab tests
    already load. This sets the suffix where pytest 9 reads it; it does nothing once xdist's own
    suffix shows (a fixed xdist) or without loadgroup.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works there
        return
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        nodeid = item.nodeid
        if groups and nodeid.rfind("@") <= nodeid.rfind("]") and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{nodeid}@{'_'.join(groups)}")


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


def delete_netns(name: str) -> None:
    """Kill what runs inside `name`, then delete it (a netns with live processes outlives `del`)."""
    for pid in _netns_pids(name):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture
def make_netns(request):
    """Factory for throwaway network namespaces (`nct-<prefix>-<random>`), lo up, removed after.

    >>> ns = make_netns("dns")          # -> "nct-dns-3fa9c1"
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"nct-{prefix}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        return name

    yield make
    for name in made:
        delete_netns(name)
