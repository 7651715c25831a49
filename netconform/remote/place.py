"""The remote place of one node: its debug pod's hub finds target namespaces and probes in them.

`netconform.runners.places` asks a place for a target; this one answers through the node's debug
pod (made by the run's controller, netconform/remote/debugpod.py): one exec session per node per
process (`RemoteNode`), opened at the first question, a `RemoteRunner` per target namespace.
Imports nothing Linux-only.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from netconform.errors import NetconformError
from netconform.runners.places import Located

__all__ = ["RemotePlace", "close_all"]

_open: list[Any] = []  # every RemoteNode this process opened, for close_all
_open_lock = threading.Lock()


class RemotePlace:
    """Targets on `node`, reached through its debug pod (`pod`: a DebugPod.to_dict())."""

    name = "remote"

    def __init__(self, node: str, pod: dict[str, Any], cluster: Callable[[], Any], *, start_timeout: float = 120.0):
        self.node_name = node
        self.pod = pod
        self._cluster = cluster
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._remote: Any = None
        self._found: dict[str, Located] = {}

    @property
    def debug_pod(self) -> str:
        return f"{self.pod['namespace']}/{self.pod['name']}"

    def _remote_node(self) -> Any:
        with self._lock:
            if self._remote is None:
                from netconform.remote.debugpod import CACHE_DIR, CONTAINER
                from netconform.remote.node import RemoteNode
                from netconform.remote.transport import ExecTransport

                configuration = self._cluster().api_client.configuration
                ns, name = self.pod["namespace"], self.pod["name"]

                def connect(argv: list[str]) -> Any:
                    return ExecTransport(configuration, ns, name, argv, container=CONTAINER)

                self._remote = RemoteNode(connect, node=self.node_name, debug_pod=self.debug_pod, cache_dir=CACHE_DIR,
                                          boot_timeout=self.start_timeout)
                with _open_lock:
                    _open.append(self._remote)
            return self._remote

    def _locate(self, key: str, target: dict[str, Any]) -> Located:
        with self._lock:
            if key in self._found:
                return self._found[key]
        from netconform.runners.remote import RemoteRunner

        try:
            runner = RemoteRunner(self._remote_node(), target)
        except (NetconformError, OSError) as e:
            found = Located("", 0, [str(e)], None, self.name)
        else:
            loc = runner.location
            found = Located(loc.netns_path, loc.pid or 0, [*loc.evidence, f"via debug pod {self.debug_pod}"],
                            runner, self.name)
        with self._lock:
            return self._found.setdefault(key, found)

    def pod(self, raw_pod: dict) -> Located:
        from netconform.remote.node import pod_target

        m = raw_pod.get("metadata", {})
        return self._locate(f"pod:{m.get('namespace')}/{m.get('name')}", pod_target(raw_pod))

    def node(self, node_name: str, host_network_pods: list[dict]) -> Located:
        from netconform.remote.node import node_target

        return self._locate("node", node_target())


def close_all() -> None:
    """Say bye to every hub this process talked to (each stops its workers and exits)."""
    with _open_lock:
        nodes = list(_open)
        _open.clear()
    for n in nodes:
        try:
            n.close()
        except Exception:  # noqa: BLE001 -- closing is best effort; the pod is deleted anyway
            pass
