"""Where a target's network namespace is, and the runner that probes there.

A check asks for "pod default/web-0" or "node ip-10-0-0-10"; a *place* answers with the
namespace's location (a path such as `/proc/812/ns/net`, the pid of a process of the pod, what
was tried) and a runner bound to it. Two kinds of place exist:

============  ===============================================================================
node          this machine is the target's node: the pid is found by its cgroup (pids.py) and
              probes run in a local worker inside the namespace (runners/local.py)
remote        a debug pod on the target's node does both, over the exec API
              (netconform/remote/); this machine may be a laptop without Linux
============  ===============================================================================

`--mode auto` picks per node: the node place when the target's namespace can be found here,
else remote. Checks and fixtures never look at this machine's /proc or namespaces themselves,
so the same check runs in either place.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from netconform.errors import ResolveError
from netconform.runners.base import Runner

__all__ = ["LocalPlace", "Located", "Place", "places"]


@dataclass
class Located:
    """A target's namespace as a place found it; `runner` None (and `path` "") when not found."""

    path: str
    pid: int
    evidence: list[str] = field(default_factory=list)
    runner: Runner | None = None
    place: str = "node"  # which kind of place found it

    @property
    def found(self) -> bool:
        return self.runner is not None


class Place(Protocol):
    name: str

    def pod(self, raw_pod: dict) -> Located: ...

    def node(self, node_name: str, host_network_pods: list[dict]) -> Located: ...


class LocalPlace:
    """This machine, as the targets' node (needs root to enter other namespaces)."""

    name = "node"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, int, list[str]]] = {}

    def _resolve(self, key: str, how) -> Located:
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = how()
                except ResolveError as e:
                    self._cache[key] = ("", 0, e.evidence or [str(e)])
                except (ImportError, OSError) as e:  # not Linux, or no /proc: nothing is here
                    self._cache[key] = ("", 0, [f"cannot look for namespaces on this machine: {e}"])
            path, pid, evidence = self._cache[key]
        if not path:
            return Located("", 0, list(evidence), None, self.name)
        from netconform.runners.local import runner_for

        return Located(path, pid, list(evidence), runner_for(path), self.name)

    def pod(self, raw_pod: dict) -> Located:
        def how() -> tuple[str, int, list[str]]:
            from netconform.pids import PodRef, resolve_pod_pid

            res = resolve_pod_pid(PodRef.from_api(raw_pod))
            return res.netns_path, res.pid or 0, res.evidence

        m = raw_pod.get("metadata", {})
        return self._resolve(f"pod:{m.get('namespace')}/{m.get('name')}", how)

    def node(self, node_name: str, host_network_pods: list[dict]) -> Located:
        def how() -> tuple[str, int, list[str]]:
            from netconform.pids import PodRef, resolve_node_netns

            res = resolve_node_netns([PodRef.from_api(r) for r in host_network_pods])
            return res.netns_path, next((p for p in res.pids.values() if p), 0), res.evidence

        if not host_network_pods:
            return Located("", 0, [f"node {node_name} has no running hostNetwork pod to find its network "
                                   f"namespace by"], None, self.name)
        return self._resolve(f"node:{node_name}", how)


class Places:
    """The run's places: which one serves each node, by `--mode` and the debug pods made.

    Configured once per process (`configure`); `for_node` is what fixtures ask.
    """

    def __init__(self) -> None:
        self.mode = "node"
        self.local = LocalPlace()
        self.remote: dict[str, Any] = {}  # node -> its remote place (netconform/remote/place.py)
        self.refusals: dict[str, str] = {}  # node -> why no remote place could be had there

    def configure(self, mode: str, remote: dict[str, Any] | None = None,
                  refusals: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.remote = dict(remote or {})
        self.refusals = dict(refusals or {})

    def for_node(self, node: str) -> tuple[Place | None, str]:
        """(the place for targets on `node`, or None with why none is)."""
        if self.mode == "node":
            return self.local, ""
        if node in self.remote:
            return self.remote[node], ""
        if self.mode == "auto":
            return self.local, ""
        return None, self.refusals.get(node) or f"no debug pod on node {node or '?'}"


places = Places()
