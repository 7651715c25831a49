"""Fixtures shared by the project's own tests."""
from __future__ import annotations

import os
import secrets
import subprocess

import pytest

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)")


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
