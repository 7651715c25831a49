"""The remote runner: probes run in a target's namespace on another node, through the hub in that
node's debug pod (netconform/remote/). It is to remote mode what LocalRunner is to node mode.

>>> node = RemoteNode(exec_transport(cfg, "netconform", "netconform-ip-10-0-1-5-3f2a9c1e"), node="ip-10-0-1-5",
...                   debug_pod="netconform/netconform-ip-10-0-1-5-3f2a9c1e")
>>> r = RemoteRunner(node, pod_target(PodRef("default", "web-0", uid="0f1e…")))
>>> r.where
'remote node ip-10-0-1-5 via debug pod netconform/netconform-ip-10-0-1-5-3f2a9c1e, pod default/web-0 (net:[4026532281])'
>>> r.call("netinfo:routes", {}, timeout=5).status
'ok'

Imports nothing Linux-only: the controller may be a laptop.
"""
from __future__ import annotations

from typing import Any

from netconform.remote.node import Location, RemoteNode
from netconform.runners.base import ProbeCall, Runner

__all__ = ["RemoteRunner"]


def _describe(target: dict[str, Any], loc: Location) -> str:
    if "pod" in target:
        pod = target["pod"]
        meta = pod.get("metadata") or pod
        return f"pod {meta.get('namespace')}/{meta.get('name')}"
    if "node" in target:
        return "the node's namespace"
    return loc.netns_path


class RemoteRunner(Runner):
    """Runs probes in one target's namespace on `node`'s machine (one RemoteNode, one target).

    The target is located once, at construction (PidNotFound / ResolveError / PermissionMissing /
    RemoteUnavailable, like LocalRunner's ResolveError for a missing path); `location` may be
    passed when the caller located it already. Every call then runs only in that namespace: if
    the target has moved to another one (its pod was recreated), the call answers status "error",
    error_type "ResolveError", instead of probing somewhere else.

    `key` identifies the namespace across processes: ("remote", node name, dev, inode).
    """

    name = "remote"

    def __init__(self, node: RemoteNode, target: dict[str, Any], location: Location | None = None):
        self.node = node
        self.target = target
        self.location = location if location is not None else node.locate(target)
        self.key: tuple[str, str, int, int] = ("remote", node.node, self.location.dev, self.location.inode)
        self._what = _describe(target, self.location)

    @property
    def where(self) -> str:
        via = f" via {self.node.label}" if self.node.debug_pod else ""
        return f"remote node {self.node.node or '?'}{via}, {self._what} (net:[{self.location.inode}])"

    def call(self, probe: str, kwargs: dict[str, Any] | None = None, timeout: float = 10.0) -> ProbeCall:
        call = self.node.call(self.target, probe, kwargs, timeout, expect=self.location.key)
        # The hub's worker pid, if it gave one, stays at the end, as in LocalRunner's `where`.
        worker = call.where.rpartition(" worker pid ")[2] if " worker pid " in call.where else ""
        call.where = self.where + (f" worker pid {worker}" if worker.isdigit() else "")
        return call

    def close(self) -> None:
        """Nothing to release: the RemoteNode (one session per debug pod) is its owner's to close."""
