"""Remote mode in the pytest run: the debug pods are made once, shared by every worker, removed.

The xdist controller (or the single process) decides which nodes need a debug pod — every node
hosting a target in `--mode remote`; in `--mode auto` only those whose targets' namespaces are not
reachable from this machine — makes them all at once before any check runs, hands their names to
the workers (`workerinput`), and deletes them when the run ends: normally, on a failure, on
Ctrl-C (SIGINT) and on SIGTERM (how CI cancels a job). A SIGKILLed run's pods stop by
themselves (`activeDeadlineSeconds`, a sleep that ends) and the next run sweeps them.

A node whose debug pod is refused (Pod Security, RBAC, an image that cannot be pulled, a full
node...) gets its one-line reason printed once; its checks skip with it; the rest goes on.
"""
from __future__ import annotations

import atexit
import getpass
import os
import signal
import socket
import threading
import uuid
from typing import Any

import pytest

from netconform.runners.places import places
from plugins.targets import targets

_WORKER_KEY = "netconform_remote"


def _nodes_needing_pods(config: pytest.Config) -> list[str]:
    plugin = targets(config)
    plan, snap = plugin.plan, plugin.snapshot
    if plan is None or snap is None:
        return []
    mode = config.option.mode
    nodes: dict[str, bool] = {}  # node -> some target there is not reachable from here
    for p in plan.pods:
        if p.not_probeable or not p.node:
            continue
        here = mode == "auto" and places.local.pod(snap.pod(p.namespace, p.name)).found
        nodes[p.node] = nodes.get(p.node, False) or not here
    for n in plan.nodes:
        raws = [snap.pod(p.namespace, p.name) for p in n.host_network_pods]
        here = mode == "auto" and bool(raws) and places.local.node(n.name, raws).found
        nodes[n.name] = nodes.get(n.name, False) or not here
    return sorted(n for n, needed in nodes.items() if needed)


class RemotePlugin:
    """Owns the run's debug pods (controller side) and configures the places (every process)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.pods = None  # DebugPods, in the process that made them
        self.made: dict[str, dict] = {}  # node -> DebugPod.to_dict()
        self.run_id = ""
        self._done = threading.Event()
        self._old_sigterm: Any = None

    # -- the process that makes the pods --------------------------------------------------------
    def setup(self) -> None:
        """Make the debug pods this run needs (once; a usage problem is one line)."""
        opt = self.config.option
        if self.pods is not None or opt.mode == "node" or targets(self.config).plan is None:
            return
        nodes = _nodes_needing_pods(self.config)
        if not nodes:
            self.configure_places()
            return
        from netconform.remote.debugpod import DEFAULT_IMAGE, DebugPodOptions, DebugPods

        self.run_id = uuid.uuid4().hex[:12]
        opts = DebugPodOptions(namespace=opt.debug_namespace, image=opt.debug_image or DEFAULT_IMAGE,
                               run_id=self.run_id, ttl_s=opt.debug_pod_ttl, pull_secrets=list(opt.image_pull_secret),
                               created_by=_who())
        self.pods = DebugPods(targets(self.config).api(), opts)
        self._catch_sigterm()
        atexit.register(self.teardown)
        self.pods.sweep_expired()
        snap = targets(self.config).snapshot
        made = self.pods.create([(n, snap.node(n)) for n in nodes])
        self.made = {n: p.to_dict() for n, p in made.items()}
        self.configure_places()
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        for line in sorted({p.refusal for p in made.values() if p.refusal}):
            if tr is not None:
                tr.write_line(f"netconform: remote mode: {line}", yellow=True)

    def teardown(self) -> None:
        if self.pods is None or self._done.is_set():
            return
        self._done.set()
        from netconform.remote.place import close_all

        close_all()
        self.pods.delete_all()
        if self._old_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except ValueError:  # not the main thread (atexit from elsewhere): nothing to restore
                pass

    def _catch_sigterm(self) -> None:
        """SIGTERM ends the run the way Ctrl-C does, so the same cleanup runs."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    # -- every process ------------------------------------------------------------------------
    def configure_places(self) -> None:
        opt = self.config.option
        ready = {n: p for n, p in self.made.items() if p.get("ready")}
        refusals = {n: p["refusal"] for n, p in self.made.items() if p.get("refusal")}
        remote = {}
        if ready:
            from netconform.remote.place import RemotePlace

            cluster = targets(self.config).api
            remote = {n: RemotePlace(n, p, cluster, start_timeout=max(30.0, opt.probe_timeout * 10))
                      for n, p in ready.items()}
        places.configure(opt.mode, remote, refusals)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # xdist controller: the targets plugin took the snapshot in its own (tryfirst) sessionstart;
        # the workers start after this hook (xdist's own sessionstart is trylast too, but
        # registered earlier... so make the pods in configure_node's first call if not yet made).
        if self.config.pluginmanager.has_plugin("dsession"):
            self.setup()

    def pytest_configure_node(self, node) -> None:
        self.setup()
        node.workerinput[_WORKER_KEY] = {"made": self.made, "run_id": self.run_id}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is not None:
            got = workerinput.get(_WORKER_KEY) or {}
            self.made, self.run_id = got.get("made", {}), got.get("run_id", "")
            self.configure_places()
        elif not self.config.pluginmanager.has_plugin("dsession") and session.items:
            self.setup()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if getattr(self.config, "workerinput", None) is not None:
            from netconform.remote.place import close_all

            close_all()  # this worker's exec sessions (the pods are the controller's)
            return
        self.teardown()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.teardown()


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "mode", None) is None:
        return
    places.configure(config.option.mode)
    config.pluginmanager.register(RemotePlugin(config), "netconform-remote")
