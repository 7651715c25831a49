"""Fixtures shared by the lab's own tests: labs with unique names that are always removed.

- `lab(flavor)` (session): one running lab per flavour per pytest process (xdist worker), built
  on first use and removed (`stop_lab`) at session end, whatever happened in between.
- `make_lab(flavor)` (function): a fresh lab for tests that take labs apart (lifecycle); every
  lab it made is removed at teardown even when the test already did it or failed half-way.
- `probe(netns, "module:function", **kwargs)`: run one of the product's probes inside a lab
  namespace through the node-local runner, the way the checks do.

Lab names are `lt<tag><worker><pid in base 36>`: unique per xdist worker and per concurrently
running pytest process, so two workers (or two engineers) never share, replace or remove a lab.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

FLAVORS = ("vpc-cni", "flannel")
LAB_CLI = [str(Path(sys.executable).with_name("netconform-lab"))]
if not Path(LAB_CLI[0]).exists():  # not a venv install: run the module
    LAB_CLI = [sys.executable, "-m", "netconform.lab.cli"]
RUN_NETNS = Path("/run/netns")
# Time limits for a loaded 2-core machine (other labs building, xdist workers, busy loops): each is
# many times what the step takes on an idle machine, and only a broken step ever uses it up. A
# test waits for a condition within these; it never asserts that something was fast.
CLI_TIMEOUT = 600.0  # one netconform-lab command; above the CLI's own `up` limit (UP_TIMEOUT)
API_TIMEOUT = 120.0  # one request to the lab's Kubernetes API (`_request_timeout=`)
PROBE_CALL_TIMEOUT = 120.0  # one probe call through the node-local runner (worker start included)
WORKER_START_TIMEOUT = 120.0  # a runner's worker process starting and entering its namespace
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_serial = itertools.count()


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def worker_tag() -> str:
    """The xdist worker number ("gw3" -> "3"), "m" without xdist."""
    wid = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(c for c in wid if c.isdigit())
    return digits or "m"


def unique_lab_name(tag: str) -> str:
    """`lt` + tag + worker + pid: never the same for two live pytest processes."""
    from netconform.lab.topology import validate_lab_name

    return validate_lab_name(f"lt{tag}{worker_tag()}{_b36(os.getpid())}")


def fresh_lab_name() -> str:
    """A new name on every call within this process (tag `f<serial>`)."""
    return unique_lab_name("f" + _b36(next(_serial)))


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates network namespaces, cgroups and iptables rules")


def netns_path(netns: str) -> str:
    return str(RUN_NETNS / netns)


def netns_inode(path_or_name: str) -> int:
    path = path_or_name if path_or_name.startswith("/") else netns_path(path_or_name)
    return os.stat(path).st_ino


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT,
        preexec: Callable[[], None] | None = None, argv0: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `netconform-lab ARGS` and capture its output (never raises on a non-zero exit)."""
    return subprocess.run([*(argv0 or LAB_CLI), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, preexec_fn=preexec, cwd="/")


@dataclass
class RunningLab:
    """A lab this test process started: its status as of start-up, env and helpers."""

    name: str
    flavor: str
    paths: Any  # netconform.lab.state.LabPaths
    env: dict[str, str]
    status: dict
    _api: Any = field(default=None, repr=False)

    # -- fresh views -------------------------------------------------------------------------
    def read_status(self) -> dict:
        """status.json as the lab process has it now (pods created through the API included)."""
        from netconform.lab.state import read_json

        st = read_json(self.paths.status)
        assert st is not None, f"lab {self.name} has no status.json (not running?)"
        return st

    def spec(self) -> Any:
        """The LabSpec the lab was built from (labels, SGFP data, trunk ENIs)."""
        from netconform.lab.topology import LabSpec

        return LabSpec.from_dict(json.loads(self.paths.spec.read_text()))

    @property
    def ca_pem(self) -> str:
        return self.paths.ca.read_text()

    @property
    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    # -- lookups in the start-up status ------------------------------------------------------
    def pods(self, *, host_network: bool | None = False, node: str | None = None,
             role: str | None = None, prefix: str | None = None) -> list[dict]:
        out = []
        for p in self.status["pods"]:
            if host_network is not None and p["host_network"] != host_network:
                continue
            if node is not None and p["node"] != node:
                continue
            if role is not None and p["role"] != role:
                continue
            if prefix is not None and not p["name"].startswith(prefix):
                continue
            out.append(p)
        return out

    def pod(self, key: str) -> dict:
        return next(p for p in self.status["pods"] if f"{p['namespace']}/{p['name']}" == key)

    def node(self, name_or_index: str | int) -> dict:
        if isinstance(name_or_index, int):
            return self.status["nodes"][name_or_index]
        return next(n for n in self.status["nodes"] if n["name"] == name_or_index)

    def service(self, key: str) -> dict:
        return next(s for s in self.status["services"] if f"{s['namespace']}/{s['name']}" == key)

    @property
    def web_pods(self) -> list[dict]:
        return [p for p in self.pods() if p["namespace"] == "default" and p["name"].startswith("web-")]

    @property
    def coredns_pods(self) -> list[dict]:
        return self.pods(role="coredns")

    def api(self) -> Any:
        """An official kubernetes ApiClient built from the lab's kubeconfig (cached)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=str(self.paths.kubeconfig))
        return self._api

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api())

    def kubectl(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Real kubectl against the lab (its own cache dir, so labs never share discovery)."""
        cache = kubectl_cache(self.name)
        return subprocess.run(["kubectl", "--cache-dir", str(cache), *args], capture_output=True, text=True,
                              timeout=timeout, env={**self.subprocess_env, "HOME": str(cache)})


def kubectl_cache(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"netconform-kubectl-{name}"


def start_running_lab(name: str, flavor: str) -> RunningLab:
    from netconform.lab.cli import lab_env, start_lab
    from netconform.lab.state import read_json

    paths = start_lab(name, flavor)
    status = read_json(paths.status)
    assert status is not None and status.get("state") == "running", f"lab {name} did not report running"
    return RunningLab(name=name, flavor=flavor, paths=paths, env=lab_env(paths), status=status)


def remove_lab(name: str) -> list[str]:
    """Stop the lab and sweep it (idempotent); close our probe workers first (they sit in its netns)."""
    from netconform.lab.cli import stop_lab
    from netconform.runners.local import close_all

    close_all()
    left = stop_lab(name)
    shutil.rmtree(kubectl_cache(name), ignore_errors=True)
    return left


def _atexit_remove(names: set[str]) -> None:
    for name in list(names):
        try:
            remove_lab(name)
        except Exception:  # noqa: BLE001 -- interpreter exit: best effort
            pass


_owned: set[str] = set()
atexit.register(_atexit_remove, _owned)


@pytest.fixture(scope="session")
def lab() -> Iterator[Callable[[str], RunningLab]]:
    """`lab(flavor)`: the shared running lab of that flavour for this process (built on first use).

    Tests that break something (faults, created pods) must undo it before they end: other tests
    of this process see the same lab.
    """
    require_root()
    labs: dict[str, RunningLab] = {}
    failed: dict[str, str] = {}

    def get(flavor: str) -> RunningLab:
        from netconform.lab.cli import CliError

        if flavor in failed:
            pytest.fail(f"the shared {flavor} lab could not be started earlier: {failed[flavor]}")
        if flavor not in labs:
            name = unique_lab_name("s" + flavor[0])
            _owned.add(name)
            try:
                labs[flavor] = start_running_lab(name, flavor)
            except (CliError, ValueError, AssertionError) as e:
                failed[flavor] = str(e)
                remove_lab(name)
                raise
        return labs[flavor]

    try:
        yield get
    finally:
        problems = []
        for running in labs.values():
            left = remove_lab(running.name)
            _owned.discard(running.name)
            if left:
                problems.append(f"{running.name}: {left}")
        assert not problems, f"stop_lab left things behind: {problems}"


@dataclass
class LabMaker:
    made: list[str] = field(default_factory=list)

    def __call__(self, flavor: str = "vpc-cni", name: str | None = None) -> RunningLab:
        name = name or fresh_lab_name()
        self.made.append(name)
        _owned.add(name)
        return start_running_lab(name, flavor)

    def reserve(self, name: str | None = None) -> str:
        """A name this fixture will clean up, for labs a test starts itself (CLI, SIGINT...)."""
        name = name or fresh_lab_name()
        self.made.append(name)
        _owned.add(name)
        return name


@pytest.fixture
def make_lab() -> Iterator[LabMaker]:
    """Fresh labs for one test; each is removed at teardown, pass or fail."""
    require_root()
    maker = LabMaker()
    try:
        yield maker
    finally:
        for name in maker.made:
            remove_lab(name)
            _owned.discard(name)


def run_probe(netns: str, probe: str, call_timeout: float = PROBE_CALL_TIMEOUT, /, **kwargs: Any) -> Any:
    """Run `probe` ("module:function" under netconform.probes) with `kwargs` inside `netns` (a
    name or a path) through the product's node-local runner; return its JSON value (fails the
    test if the probe did not run at all). `call_timeout` bounds the whole call (it is only a
    safety net against a hung worker, so it is never below PROBE_CALL_TIMEOUT); a probe's own
    `timeout` goes in `kwargs`."""
    from netconform.runners.local import runner_for

    path = netns if netns.startswith("/") else netns_path(netns)
    runner = runner_for(path)
    runner.start_timeout = max(runner.start_timeout, WORKER_START_TIMEOUT)
    call = runner.call(probe, kwargs, timeout=max(call_timeout, PROBE_CALL_TIMEOUT))
    assert call.ok, f"probe {probe}{kwargs} in {path} did not run: {call.status} {call.error_type}: {call.error}"
    return call.value


@pytest.fixture(scope="session")
def probe() -> Callable[..., dict]:
    return run_probe
