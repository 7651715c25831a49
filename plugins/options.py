"""netconform's command-line options, in one group. Malformed values are rejected here, before
collection, with one readable line (like pytest-xdist's `parse_numprocesses`)."""
from __future__ import annotations

import argparse
import re

from netconform.lab.topology import FLAVORS

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_POD_NAME = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"


def parse_pod_ref(value: str) -> tuple[str, str]:
    """`ns/name` -> (ns, name); anything else is a usage error naming the expected form."""
    m = re.fullmatch(rf"({_DNS_LABEL})/({_POD_NAME})", value or "")
    if not m or len(m.group(1)) > 63 or len(m.group(3)) > 253:
        raise argparse.ArgumentTypeError(
            f"expected NAMESPACE/NAME (lowercase DNS names, e.g. default/web-0), got {value!r}")
    return m.group(1), m.group(3)


def parse_flavor(value: str) -> str:
    if value not in FLAVORS:
        raise argparse.ArgumentTypeError(f"the lab flavour is one of {', '.join(FLAVORS)}, got {value!r}")
    return value


def parse_fault(value: str) -> tuple[str, str]:
    """`name` or `name:target` (target: pod ns/name, node name or endpoint IP)."""
    name, _, target = value.partition(":")
    if not re.fullmatch(r"[a-z0-9-]+", name):
        raise argparse.ArgumentTypeError(f"expected a fault name like dns-down[:target], got {value!r}")
    return name, target


MODES = ("auto", "node", "remote")


def parse_dns_label(value: str) -> str:
    if not re.fullmatch(_DNS_LABEL, value or "") or len(value) > 63:
        raise argparse.ArgumentTypeError(f"expected a lowercase DNS label (e.g. netconform), got {value!r}")
    return value


def parse_ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if not 60 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"expected whole seconds between 60 and 86400, got {value!r}")
    return seconds


def parse_positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= 300:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 300, got {value!r}")
    return seconds


def pytest_addoption(parser) -> None:
    group = parser.getgroup("netconform", "netconform: Kubernetes pod network diagnostics")
    group.addoption("--lab", nargs="?", const="vpc-cni", default=None, type=parse_flavor,
                    metavar="FLAVOR", help="bring up the built-in lab cluster for this run (vpc-cni or "
                    "flannel; default vpc-cni) and remove it at the end")
    group.addoption("--lab-fault", action="append", default=[], type=parse_fault, metavar="NAME[:TARGET]",
                    help="apply a lab fault after the lab is up (repeatable)")
    group.addoption("--lab-name", default=None, metavar="NAME",
                    help="name of the lab --lab builds (default: one per run)")
    group.addoption("--lab-nodes", type=int, default=2, metavar="N", help="lab nodes (default 2)")
    group.addoption("--lab-pods-per-node", type=int, default=3, metavar="M",
                    help="lab workload pods per node (default 3)")
    group.addoption("--lab-cluster-domain", default="cluster.local", metavar="DOMAIN",
                    help="the lab's cluster domain (default cluster.local)")
    group.addoption("--pod", action="append", default=[], type=parse_pod_ref, metavar="NS/NAME",
                    help="a pod to diagnose (repeatable)")
    group.addoption("--kubeconfig", default=None, metavar="PATH",
                    help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
    group.addoption("--context", default=None, metavar="NAME", help="kubeconfig context to use")
    group.addoption("--probe-timeout", type=parse_positive_seconds, default=3.0, metavar="SECONDS",
                    help="timeout of one network probe (default 3)")
    group.addoption("--mode", choices=MODES, default="auto",
                    help="where probes run: node (this machine must be the targets' node, as root), remote "
                         "(through a debug pod per target node, over the exec API), or auto (default: node for "
                         "targets whose network namespace is reachable here, remote for the rest)")
    group.addoption("--debug-namespace", default="netconform", type=parse_dns_label, metavar="NS",
                    help="namespace for remote mode's debug pods (default netconform; it must allow privileged "
                         "pods: pod-security.kubernetes.io/enforce=privileged)")
    group.addoption("--debug-image", default=None, metavar="IMAGE",
                    help="image of the debug pods: any image with python3 >= 3.11 (default "
                         "public.ecr.aws/docker/library/python:3.13-slim)")
    group.addoption("--image-pull-secret", action="append", default=[], type=parse_dns_label, metavar="NAME",
                    help="image pull secret (in --debug-namespace) for --debug-image (repeatable)")
    group.addoption("--debug-pod-ttl", type=parse_ttl, default=1800, metavar="SECONDS",
                    help="debug pods end by themselves after this long, even if the run is killed (default 1800)")
