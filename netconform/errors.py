"""netconform's own exceptions: every transport, resolver and parser error becomes one of these.

```
NetconformError
├── UsageError             the caller asked for something malformed (bad --pod, bad option)
├── ClusterUnavailable     no usable kubeconfig, or the API server cannot be reached
├── TargetError            the target exists in the API but cannot be probed as asked
│   ├── PodNotFound
│   ├── PodNotRunning
│   ├── NoPodIP
│   └── HostNetworkPod     pod-netns checks do not apply: the pod shares the node's netns
├── ResolveError           a pod's or node's process / network namespace cannot be found here
│   └── PidNotFound
├── RunnerError            a probe could not be run to completion
│   ├── ProbeTimeout       (from ProbeCall.raise_for_status: status "timeout")
│   └── ProbeCrashed       (from ProbeCall.raise_for_status: the probe raised or its worker died)
├── InvalidAnnotation      an annotation the component that reads it would reject (names why)
└── PermissionMissing      names the permission (capability, RBAC verb, IAM action) it lacks
```

Runners never raise RunnerError into a check: `Runner.call` returns a `ProbeCall` whose status
says what happened; `ProbeCall.raise_for_status()` turns it into these exceptions for callers
that prefer them. In a check an uncaught NetconformError means the suite broke (ERROR), which
is why checks turn "not applicable" into `pytest.skip` before they probe.

>>> try:
...     raise PidNotFound("no process of default/web-0 on this node", evidence=["crictl: absent"])
... except ResolveError as e:
...     e.evidence
['crictl: absent']
"""
from __future__ import annotations

__all__ = [
    "ClusterUnavailable",
    "HostNetworkPod",
    "InvalidAnnotation",
    "NetconformError",
    "NoPodIP",
    "PermissionMissing",
    "PidNotFound",
    "PodNotFound",
    "PodNotRunning",
    "ProbeCrashed",
    "ProbeTimeout",
    "ResolveError",
    "RunnerError",
    "TargetError",
    "UsageError",
]


class NetconformError(Exception):
    """Base of every error netconform raises on purpose."""


class UsageError(NetconformError):
    """The caller asked for something malformed; the message says what a valid form looks like."""


class ClusterUnavailable(NetconformError):
    """No usable cluster: kubeconfig missing or broken, API server unreachable or failing."""


class TargetError(NetconformError):
    """The target is known to the cluster but cannot be probed the way the caller asked."""


class PodNotFound(TargetError):
    """No pod with that namespace/name exists."""


class PodNotRunning(TargetError):
    """The pod exists but is not Running (no sandbox, so no network namespace to enter)."""


class NoPodIP(TargetError):
    """The pod has no IP yet (CNI ADD has not completed or failed)."""


class HostNetworkPod(TargetError):
    """The pod uses the node's network namespace; pod-netns checks do not apply to it."""


class ResolveError(NetconformError):
    """A process or network namespace could not be found on this machine.

    `evidence` lists what was tried, in order, so a report can show it.
    """

    def __init__(self, message: str, *, evidence: list[str] | None = None):
        super().__init__(message)
        self.evidence: list[str] = list(evidence or [])


class PidNotFound(ResolveError):
    """No live process of the pod could be found by CRI, cgroup scan or network namespace."""


class RunnerError(NetconformError):
    """A probe did not run to completion."""

    def __init__(self, message: str, *, probe: str = "", where: str = ""):
        super().__init__(message)
        self.probe = probe
        self.where = where


class ProbeTimeout(RunnerError):
    """The probe did not answer within its timeout (its worker was killed)."""


class ProbeCrashed(RunnerError):
    """The probe raised, returned something not JSON-able, or its worker process died."""


class InvalidAnnotation(NetconformError):
    """An annotation value that its reader would reject; `reason` says why in one phrase."""

    def __init__(self, key: str, reason: str, value: str | None = None):
        super().__init__(f"annotation {key} is invalid: {reason}")
        self.key = key
        self.reason = reason
        self.value = value


class PermissionMissing(NetconformError):
    """The suite lacks a permission; `permission` names it ("CAP_SYS_ADMIN", "list pods").

    >>> str(PermissionMissing("CAP_SYS_ADMIN", "enter /proc/812/ns/net"))
    'missing permission CAP_SYS_ADMIN, needed to enter /proc/812/ns/net'
    """

    def __init__(self, permission: str, needed_for: str = "", detail: str = ""):
        msg = f"missing permission {permission}" + (f", needed to {needed_for}" if needed_for else "")
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.permission = permission
        self.needed_for = needed_for
