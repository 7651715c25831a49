"""A broken cluster answers as fast as a healthy one: every check of a target runs at once.

pytest runs one check after another, so a pod whose network is broken makes each of its checks
wait out its own timeouts in turn. Before the first check of a target runs here, this plugin
runs all of that target's checks together, each in a thread of its own, and keeps how each one
ended (its exception, or none) with the evidence it recorded; when pytest then calls a check, the
recorded outcome is what it gets. Their probe questions are shared (netconform/runners/shared.py)
and served concurrently by the namespace's worker (netconform/runners/local.py), so the run
waits for the slowest chain of questions once, not for every timeout in a row.

Nothing about a verdict changes: the check is the same function, called with the same values;
only when it runs moves. pytest still sets up each check's fixtures first (a skip there stays a
skip of that phase) and reports every outcome as usual.

Fixtures are resolved here without pytest's machinery, so this only takes checks whose fixtures
are function-scoped (all of netconform's): any check it cannot prepare, or that breaks in a way
no check should, simply runs the ordinary way when its turn comes.
"""
from __future__ import annotations

import inspect
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from fixtures.probing import EVIDENCE_KEY, locate_namespace
from plugins.scheduling import UPFRONT_KEY, target_of
from plugins.targets import targets

MAX_AT_ONCE = 32  # checks run together per process: enough to overlap timeouts, gentle on a struggling cluster
UPFRONT_WAIT_S = 5.0  # for the rest of a worker's work to arrive (it is sent all at once, at the start)


class _Unsupported(Exception):
    """This check cannot be run ahead here (a fixture this resolver does not handle)."""


@dataclass
class _Outcome:
    exception: BaseException | None
    evidence: list[dict] = field(default_factory=list)
    duration_s: float = 0.0  # how long the check took when it ran ahead


class _Request:
    """The little of `request` that netconform's fixtures and checks use."""

    def __init__(self, item: pytest.Function, resolver: _Resolver):
        self.config = item.config
        self.node = SimpleNamespace(stash=pytest.Stash(), nodeid=item.nodeid, name=item.name)
        self.function = item.function
        self.module = item.module
        self._resolver = resolver

    def getfixturevalue(self, name: str) -> Any:
        return self._resolver.value(name)


class _Resolver:
    """Function-scoped fixture values for one check, computed the way pytest would."""

    def __init__(self, item: pytest.Function):
        self.item = item
        self.params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
        self.values: dict[str, Any] = {}
        self.request = _Request(item, self)

    def value(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name == "request":
            v = self.request
        elif name in self.params:
            v = self.params[name]
        else:
            defs = self.item._fixtureinfo.name2fixturedefs.get(name)  # noqa: SLF001 -- see module doc
            if not defs:
                raise _Unsupported(f"no fixture {name!r}")
            fd = defs[-1]
            if fd.scope != "function" or inspect.isgeneratorfunction(fd.func) or fd.params:
                raise _Unsupported(f"fixture {name!r} is {fd.scope}-scoped, a generator or parametrized")
            v = fd.func(**{a: self.value(a) for a in fd.argnames})
        self.values[name] = v
        return v

    def run(self) -> _Outcome:
        fn = self.item.function
        args = {name: self.value(name) for name in self.item._fixtureinfo.argnames}  # noqa: SLF001
        evidence = self.request.node.stash.get(EVIDENCE_KEY, [])
        t0 = time.monotonic()
        try:
            fn(**args)
        except (AssertionError, pytest.skip.Exception, pytest.fail.Exception) as e:
            return _Outcome(e, list(evidence), time.monotonic() - t0)
        return _Outcome(None, list(evidence), time.monotonic() - t0)


class Prefetch:
    """Runs each target's checks together, at the first of them; hands pytest their outcomes."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.outcomes: dict[str, _Outcome] = {}
        self.done: set[str] = set()
        self._lock = threading.Lock()

    def _keys(self) -> list[str]:
        plugin = targets(self.config)
        plan = plugin.plan if plugin else None
        return ([p.key for p in plan.pods] + [n.name for n in plan.nodes]) if plan else []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        keys = self._keys()
        target = target_of(item.nodeid, keys) if isinstance(item, pytest.Function) else None
        if target is None or target in self.done:
            return
        # This target, and every other one already queued for this process: a worker given two
        # broken pods then waits for one chain of timeouts, not two in a row.
        wanted = {target} | {t for t in (target_of(i.nodeid, keys) for i in self._queued(item.session)) if t}
        wanted -= self.done
        self.done |= wanted
        prepared = [(i, _Resolver(i)) for i in item.session.items if isinstance(i, pytest.Function)
                    and _is_check(i) and target_of(i.nodeid, keys) in wanted and i.nodeid not in self.outcomes]
        bundles = [b for b in (self._bundle_task(t) for t in sorted(wanted)) if b]

        def run(pair: tuple[pytest.Function, _Resolver]) -> tuple[str, _Outcome | None]:
            sib, res = pair
            try:
                return sib.nodeid, res.run()
            except (_Unsupported, pytest.skip.Exception, pytest.fail.Exception):
                return sib.nodeid, None  # a fixture skips or fails: pytest's own setup will say so
            except Exception:  # noqa: BLE001 -- a bug shows when the check runs the ordinary way
                return sib.nodeid, None

        with ThreadPoolExecutor(max_workers=min(MAX_AT_ONCE, len(prepared) + len(bundles)),
                                thread_name_prefix="check") as pool:
            asked = [pool.submit(b) for b in bundles]
            for nodeid, outcome in pool.map(run, prepared):
                if outcome is not None:
                    self.outcomes[nodeid] = outcome
            for a in asked:
                a.result()

    def _queued(self, session: pytest.Session) -> list[pytest.Item]:
        """The items xdist has already handed this worker and it has not run yet (none without
        xdist: then every collected item is this process's, and all are taken)."""
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is None:
            return list(session.items)
        queue = next((q for q in (getattr(p, "torun", None) for p in self.config.pluginmanager.get_plugins())
                      if q is not None and hasattr(q, "lock")), None)  # xdist's WorkerInteractor (xdist/remote.py)
        if queue is None:
            return []
        # plugins/scheduling.py sends a worker all its work, then its shutdown: wait (briefly) for
        # that marker, so the first check already knows every target of this worker.
        deadline = time.monotonic() + (UPFRONT_WAIT_S if workerinput.get(UPFRONT_KEY) else 0.0)
        while True:
            with queue.lock() as pending:
                items = list(pending)
            if any(not isinstance(i, int) for i in items) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return [session.items[i] for i in items if isinstance(i, int) and i < len(session.items)]

    def _bundle_task(self, key: str):
        """The evidence bundle's questions for this target's namespace, asked alongside its checks:
        the controller writes the bundle at the end from these answers (run folder), not by
        starting probe workers of its own."""
        from netconform.report.collect import RESOLV_CONF_PROBE, bundle_questions, probe_limit, resolv_conf_path
        from netconform.runners.shared import shared_calls

        plugin = targets(self.config)
        found = {p.key: p for p in plugin.plan.pods} | {n.name: n for n in plugin.plan.nodes}
        target = found.get(key)
        if target is None:
            return None
        kind = "node" if key in {n.name for n in plugin.plan.nodes} else "pod"

        def ask() -> None:
            try:
                found = locate_namespace(plugin.snapshot, target)
                if not found.found:
                    return
                shared = shared_calls(found.runner)
                limit_s = probe_limit(self.config.option.probe_timeout)
                for _, probe, kwargs, limit in bundle_questions(kind, limit_s):
                    shared.call(probe, kwargs, timeout=limit)
                if kind == "pod" and found.pid:
                    shared.call(RESOLV_CONF_PROBE, {"path": resolv_conf_path(found.pid)}, timeout=limit_s)
            except Exception:  # noqa: BLE001 -- best effort, as the bundle is: it asks again at the end
                return

        return ask

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        outcome = self.outcomes.pop(pyfuncitem.nodeid, None)
        if outcome is None:
            return None
        pyfuncitem.stash[_RAN_AHEAD] = outcome.duration_s
        real = pyfuncitem.stash.get(EVIDENCE_KEY, None)
        if real is not None:
            seen = {_fingerprint(e) for e in real}
            real.extend(e for e in outcome.evidence if _fingerprint(e) not in seen)
        if outcome.exception is not None:
            raise outcome.exception
        return True


    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        outcome = yield
        ran_ahead = item.stash.get(_RAN_AHEAD, None)
        if call.when == "call" and ran_ahead is not None:
            # the check's own time (it ran ahead with its siblings), not the replay's
            outcome.get_result().duration = ran_ahead


_RAN_AHEAD = pytest.StashKey[float]()


def _is_check(item: pytest.Function) -> bool:
    return item.get_closest_marker("check") is not None


def _fingerprint(e: dict) -> str:
    return json.dumps(e, sort_keys=True, default=str)


def pytest_configure(config: pytest.Config) -> None:
    # With xdist, only where a target's checks all run in one process: our scheduler's default.
    dist = getattr(config.option, "dist", "no")
    if dist in ("no", "load") and not config.option.collectonly:
        config.pluginmanager.register(Prefetch(config), "netconform-prefetch")
