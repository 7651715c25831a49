"""Targets: find the cluster, snapshot it once, and resolve which pods and nodes the run checks.

Like testinfra's `--hosts`, the resolved targets parametrize every check that asks for them, with
ids that read as the target (`default/web-0`), so `-k` selects what a user expects. The snapshot is
taken once per run: by the xdist controller (handed to workers through `workerinput`), or by the
single process at collection. Nothing touches a cluster unless checks are being collected.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from netconform import cases
from netconform.errors import NetconformError
from netconform.kube import Cluster, Snapshot, connect, take_snapshot
from netconform.targets import TargetPlan, plan_targets

_SNAPSHOT_KEY = "netconform_snapshot"
CHECKS_DIR = Path(__file__).resolve().parent.parent / "checks"


def _parse_ip(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, got {value!r}") from None


def pytest_addoption(parser) -> None:
    from plugins.options import parse_pod_ref

    group = parser.getgroup("netconform")
    group.addoption("--selector", default="", metavar="LABELS",
                    help="diagnose the pods matching this label selector (e.g. app=web)")
    # -n is pytest-xdist's worker count, so the namespace has only the long form.
    group.addoption("--namespace", default="", metavar="NS", help="namespace for --selector")
    group.addoption("--node", action="append", default=[], metavar="NAME",
                    help="run the node checks on this node (repeatable; default: the target pods' nodes)")
    group.addoption("--dst-pod", action="append", default=[], type=parse_pod_ref, metavar="NS/NAME",
                    help="pod-to-pod destination (repeatable; default: one pod on the same node and "
                         "one on each other node)")
    group.addoption("--service", action="append", default=[], type=parse_pod_ref, metavar="NS/NAME",
                    help="service to connect to (repeatable; default: kube-dns and kubernetes)")
    group.addoption("--dns-name", action="append", default=[], metavar="NAME[=IP]",
                    help="extra name the pod must resolve (optionally to IP; repeatable)")
    group.addoption("--external-ip", action="append", default=[], type=_parse_ip, metavar="IP",
                    help="opt-in external target for ICMP and TCP/443 (nothing leaves the cluster by default)")
    group.addoption("--external-host", action="append", default=[], metavar="NAME",
                    help="opt-in external host name: resolved by the pod, then ICMP and TCP/443")


def _collects_checks(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = (path if path.is_absolute() else Path(config.invocation_params.dir) / path).resolve()
        if path == CHECKS_DIR or CHECKS_DIR in path.parents:
            return True
    return False


class TargetsPlugin:
    """Holds the run's cluster snapshot and target plan. Registered as `netconform-targets`."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.cluster: Cluster | None = None
        self.snapshot: Snapshot | None = None
        self.plan: TargetPlan | None = None
        self.error = ""

    def load(self, snapshot: dict | None = None) -> None:
        opt = self.config.option
        try:
            if snapshot is None:
                self.cluster = connect(opt.kubeconfig, opt.context)
                self.snapshot = take_snapshot(self.cluster)
            else:
                self.snapshot = Snapshot.from_dict(snapshot)
            self.plan = plan_targets(self.snapshot, pod_refs=opt.pod, selector=opt.selector,
                                     namespace=opt.namespace, node_names=opt.node,
                                     lab_default=bool(opt.lab))
            # Every name the user gave is checked now, so a typo is one usage line at start.
            cases.service_cases(self.snapshot, opt.service)
            cases.pod_pairs(self.snapshot, self.plan.pods[:1], opt.dst_pod)
        except NetconformError as e:
            raise pytest.UsageError(str(e)) from None

    def api(self) -> Cluster:
        """The API client (workers connect lazily: the controller's cannot be shipped)."""
        if self.cluster is None:
            self.cluster = connect(self.config.option.kubeconfig, self.config.option.context)
        return self.cluster

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # The xdist controller snapshots once so workers do not list every kind again.
        if self.config.pluginmanager.has_plugin("dsession") and _collects_checks(self.config):
            self.load()

    def pytest_configure_node(self, node) -> None:
        if self.snapshot is not None:
            node.workerinput[_SNAPSHOT_KEY] = self.snapshot.to_dict()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        if self.plan is not None or not _collects_checks(self.config):
            return
        workerinput = getattr(self.config, "workerinput", {})
        self.load(workerinput.get(_SNAPSHOT_KEY))

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if self.snapshot is None:
            return []
        v = self.snapshot.version.get("gitVersion", "?")
        pods = ", ".join(p.key for p in self.plan.pods) or "none"
        return [f"netconform cluster: {self.snapshot.context} ({self.snapshot.server}, {v})",
                f"netconform targets: pods {pods}; nodes {', '.join(n.name for n in self.plan.nodes) or 'none'}"]


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TargetsPlugin(config), "netconform-targets")


def targets(config: pytest.Config) -> TargetsPlugin:
    return config.pluginmanager.get_plugin("netconform-targets")


def _no_target(reason: str, argname: str):
    return pytest.param(None, marks=pytest.mark.skip(reason=reason), id=f"no-target-{argname}")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `pod` and `node` over the run's targets (checks with `pod_pair` pick pairs).

    First, so test ids start with the target: `test_dns_resolves[default/web-0-kubernetes.default-udp]`.
    """
    plugin = targets(metafunc.config)
    if plugin is None or plugin.plan is None:
        return
    plan = plugin.plan
    if "pod" in metafunc.fixturenames and "pod_pair" not in metafunc.fixturenames:
        params = [pytest.param(p, id=p.key) for p in plan.pods] or [
            _no_target(plan.no_pod_reason or "no target pod", "pod")]
        metafunc.parametrize("pod", params)
    if "node" in metafunc.fixturenames:
        params = [pytest.param(n, id=n.name) for n in plan.nodes] or [
            _no_target(plan.no_pod_reason or "no target node: give --node NAME or target pods", "node")]
        metafunc.parametrize("node", params)
