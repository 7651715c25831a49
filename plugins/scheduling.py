"""With pytest-xdist, every check of one target runs on one worker.

A target's checks ask many of the same questions (netconform/runners/shared.py shares them within
a process) and all run in the target's network namespace (one long-lived probe worker per
namespace per process). xdist's default `--dist load` spreads them over every worker, so each
worker starts its own probe worker for every namespace and asks the shared questions again.
Grouping by target makes both once per run, and still balances: a run has many targets.

The target is the first part of a check's id (plugins/targets.py parametrizes targets first:
`test_dns_resolves[default/web-0-kubernetes.default-udp]`). Only the default `--dist load` is
replaced; a `--dist` the user chose is left alone.
"""
from __future__ import annotations

import pytest

from plugins.targets import targets


def target_of(nodeid: str, keys: list[str]) -> str | None:
    """The target key a check id starts with (the longest that fits), or None.

    >>> target_of("checks/test_dns.py::test_dns_replica[default/web-1-coredns-a-udp]", ["default/web-1", "default/web-10"])
    'default/web-1'
    """
    _, _, params = nodeid.partition("[")
    params = params.rstrip("]")
    best = None
    for key in keys:
        if (params == key or params.startswith(key + "-")) and (best is None or len(key) > len(best)):
            best = key
    return best


def _scheduler_class():
    from xdist.scheduler import LoadScopeScheduling

    class TargetScheduling(LoadScopeScheduling):
        """xdist's scope scheduling, with one scope per target (pod or node)."""

        def __init__(self, config: pytest.Config, log=None):
            super().__init__(config, log)
            plugin = targets(config)
            plan = plugin.plan if plugin is not None else None
            self.keys = ([p.key for p in plan.pods] + [n.name for n in plan.nodes]) if plan else []

        def _split_scope(self, nodeid: str) -> str:
            key = target_of(nodeid, self.keys)
            return f"target {key}" if key else nodeid.rsplit("::", 1)[0]

        def schedule(self) -> None:
            """Every scope handed out at the start, in turn: each worker knows all its targets at
            once, so it runs all their checks together (plugins/prefetch.py) instead of one
            target's timeouts after another's. Targets cost about the same, so the turns balance."""
            first = self.collection is None
            super().schedule()
            if first and self.collection:
                while self.workqueue:
                    for node in self.nodes:
                        if not self.workqueue:
                            break
                        if not node.shutting_down:
                            self._assign_work_unit(node)
                for node in self.nodes:
                    if not node.shutting_down:
                        node.shutdown()  # everything is sent: a worker ends when its queue is done

    return TargetScheduling


UPFRONT_KEY = "netconform_all_work_upfront"  # workerinput: this worker gets all its work at the start


def _ours(config: pytest.Config) -> bool:
    plugin = targets(config)
    return getattr(config.option, "dist", "load") == "load" and plugin is not None and plugin.plan is not None


@pytest.hookimpl(optionalhook=True)  # without xdist (-p no:xdist) the hook simply never runs
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    return _scheduler_class()(config, log) if _ours(config) else None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[UPFRONT_KEY] = _ours(node.config)
