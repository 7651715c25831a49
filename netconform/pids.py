"""Pod → process → network namespace on this node (DESIGN.md, "Where probes run").

Three methods, in order, each recorded in `PidResolution.evidence`:

1. **cri** — `crictl inspect <container-id>` → `.info.pid` (only if crictl is installed; bounded
   by `timeout`, and given up after one hang: a wedged runtime socket hangs every call).
2. **cgroup** — scan `/proc/*/cgroup` (v1, v2 and hybrid, cgroupfs and systemd drivers and a mix
   of both, containerd, CRI-O and Docker, any `--cgroup-root`, cgroup namespaces; table below)
   for a process in one of the pod's containers; failing that, in any container of the pod's UID
   (the pause process).
3. **netns** — the `/run/netns` entry holding the pod IP (for runtimes and cgroup layouts we do
   not recognise), and a process inside it if any.

The returned `netns_path` is the most stable name of that namespace: its `/run/netns` entry
(it outlives container restarts), `/proc/1/ns/net` when it is the root namespace, else
`/proc/<pid>/ns/net`.

Cgroup path forms the cgroup method knows (`kube_cgroup_ids`). One recorded sample of each is in
`tests/unit/data/cgroup/`; its `SOURCES.md` has the links and the public bug reports. `<uid>` is the
pod UID as kubelet names cgroups (a static pod's is its 32-hex config hash), `<id>` the container
id, `<qos>` burstable/besteffort (Guaranteed pods have no QoS level). `<slices>` stands for
`/kubepods.slice/kubepods-<qos>.slice` and `<pod.slice>` for `kubepods-<qos>-pod<uid_>.slice`
(systemd reads "-" as nesting, so kubelet writes the UID's dashes as "_"). Each line of a file is
tried on its own (v1 controllers, `name=systemd`, the hybrid `0::` line); one naming the container
is enough.

| example path | who writes it | source |
|---|---|---|
| `/kubepods/<qos>/pod<uid>/<id>` | kubelet + containerd or cri-dockerd, cgroupfs driver | kubelet `ToCgroupfs`; containerd `getCgroupsPath` |
| `/kubepods/pod<uid>/<id>` | the same, Guaranteed QoS | kubelet `qosContainerManagerImpl.Start` |
| `/kubepods/<qos>/pod<uid>/crio-<id>` | CRI-O, cgroupfs manager | cri-o `CgroupfsManager.ContainerCgroupPath` |
| `<slices>/<pod.slice>/cri-containerd-<id>.scope` | kubelet + containerd + runc/crun, systemd | kubelet `ToSystemd`; runc `ExpandSlice` |
| `<slices>/<pod.slice>/crio-<id>.scope`, `…/docker-<id>.scope` | CRI-O; dockerd (cri-dockerd), systemd | cri-o `SystemdManager`; moby `withCgroups` |
| `<slices>/<pod.slice>/<id>` | containerd <= 1.2 with `systemd_cgroup = false`, systemd kubelet | containerd/cri `getCgroupsPath` < eae5fc36 |
| `/system.slice/containerd.service/<pod.slice>:cri-containerd:<id>` | containerd >= 1.3, runc `SystemdCgroup = false`, systemd kubelet, v1 | runc `CreateCgroupConfig`, fs `subsysPath` |
| `/<pod.slice>:cri-containerd:<id>` | the same, v1 controllers where runc's own cgroup is `/`; crun | crun `make_cgroup_path` |
| `/system.slice/<pod.slice>:cri-containerd:<id>` | the same on v2 (under the parent of runc's cgroup) | runc fs2 `_defaultDirPath` |
| `/kubelet.slice/kubelet-kubepods.slice/…`, `/kubelet/kubepods/<qos>/…` | kubelet `--cgroup-root=/kubelet` (kind) | kubelet `NewContainerManager`; kind |
| `/system.slice/docker-<node>.scope/kubelet.slice/…`, `/docker/<node>/…` | a node that is a container, read from its host | moby `withCgroups`; kind |
| `…/crio-<id>.scope/container`, `…/exec`, `…/init.scope`, `…/<id>/<sub>` | crun; CRI-O exec; systemd in the container; the process | crun `find_systemd_subgroup`; cri-o `execCgroupManager` |
| `/../../../kubepods-<qos>.slice/…`, `/../../../<qos>/pod<uid>/<id>`, `/../../pod<uid>/<id>` | any of these, read from a private cgroupns | kernel cgroup-v2.rst "Namespace" |

Never a pod container: `crio-conmon-<id>[.scope]` (CRI-O's conmon: it names the container id but
runs in the host netns), the pod- and QoS-level cgroups, containerd and its shims in
`containerd.service`, `/docker/<id>` without `kubepods` (a plain `docker run`), system services and
sessions. Kubelet `--cgroups-per-qos=false` gives runtimes no cgroup parent, so their paths name no
pod (`/k8s.io/<id>`, `/system.slice/crio-<id>.scope`, `/crio/crio-<id>`, `/docker/<id>`): not
matched on purpose, as they look like any other container of that runtime; the cri and netns
methods find those pods. Nor is a reader inside the target pod itself (`/../<id>`: its pod level is
hidden).

>>> pod = PodRef("default", "web-0", uid="0f1e…", container_ids=("containerd://4b1f…",), pod_ip="10.0.1.12")
>>> res = resolve_pod_pid(pod)
>>> res.method, res.netns_path
('cgroup', '/run/netns/cni-5c9a0b3e-…')
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from netconform.errors import PermissionMissing, PidNotFound, ResolveError

__all__ = [
    "CgroupLine",
    "Match",
    "NetnsResolution",
    "PidResolution",
    "PodRef",
    "cgroup_matches",
    "kube_cgroup_ids",
    "netns_path_for_pid",
    "parse_proc_cgroup",
    "resolve_node_netns",
    "resolve_pod_pid",
    "scan_proc_cgroups",
]

# `pod<uid>` with the UID's dashes kept (cgroupfs) or turned into underscores (systemd slice names
# use "-" for nesting), after any slice prefix; 32-hex UIDs are static pods' config hashes.
_POD_COMPONENT = re.compile(
    r"^(?:.*-)?pod(?P<uid>[0-9a-f]{8}(?:[-_]?[0-9a-f]{4}){3}[-_]?[0-9a-f]{12})(?:\.slice)?$")
# A container's own cgroup: bare id (cgroupfs), or a runtime-prefixed systemd scope. CRI-O's
# `crio-conmon-<id>` does not match on purpose: conmon lives in the host's network namespace.
_CONTAINER_COMPONENT = re.compile(
    r"^(?:(?:cri-containerd|crio|docker|containerd)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$")
_SCHEME = re.compile(r"^[a-z0-9.+-]+://", re.IGNORECASE)
# Kubelet's QoS levels under `kubepods`; Guaranteed pods have none (qos_container_manager_linux.go:
# `Guaranteed: rootContainer`). Seen first only in a cgroupns-relative path that hides `kubepods`.
_QOS_LEVELS = frozenset({"burstable", "besteffort"})


@dataclass(frozen=True)
class PodRef:
    """What the resolver needs to know about a pod (normally built from the API object).

    Container ids are kept bare and lower-case (`containerd://`, `cri-o://`, `docker://` dropped).

    >>> PodRef("kube-system", "coredns-7d9c", container_ids=("containerd://AB12" + "0" * 60,)).container_ids[0][:6]
    'ab1200'
    """

    namespace: str
    name: str
    uid: str = ""
    container_ids: tuple[str, ...] = ()
    pod_ip: str = ""
    host_network: bool = False

    def __post_init__(self) -> None:
        ids = (self.container_ids,) if isinstance(self.container_ids, str) else self.container_ids
        object.__setattr__(self, "container_ids",
                           tuple(_SCHEME.sub("", c.strip()).lower() for c in ids if c and c.strip()))
        object.__setattr__(self, "uid", (self.uid or "").strip().lower())

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_api(cls, pod: dict[str, Any]) -> PodRef:
        """From a pod in API JSON form (`ApiClient().sanitize_for_serialization(v1pod)`)."""
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        annotations = meta.get("annotations") or {}
        # A mirror pod's API uid is not the uid kubelet names cgroups after: that is the static
        # pod's config hash, which the mirror carries in this annotation.
        uid = annotations.get("kubernetes.io/config.mirror") or meta.get("uid") or ""
        ids = [s.get("containerID") for key in ("containerStatuses", "initContainerStatuses",
                                                "ephemeralContainerStatuses")
               for s in status.get(key) or [] if s.get("containerID")]
        return cls(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=uid,
                   container_ids=tuple(ids), pod_ip=status.get("podIP") or "",
                   host_network=bool(spec.get("hostNetwork")))


@dataclass(frozen=True)
class CgroupLine:
    """One line of /proc/<pid>/cgroup: `hierarchy-ID:controller-list:path`."""

    hierarchy_id: int
    controllers: tuple[str, ...]  # () on the v2 line ("0::/…")
    path: str

    @property
    def unified(self) -> bool:
        return self.hierarchy_id == 0 and not self.controllers


@dataclass(frozen=True)
class Match:
    """Why a process belongs to the pod: it runs in one of its containers, or only under its UID."""

    kind: Literal["container", "pod"]
    pod_uid: str  # as it appears in the path, normalised to dashes
    container_id: str
    path: str


@dataclass
class PidResolution:
    """A process of the pod (None if only its namespace was found) and the netns path to enter."""

    pid: int | None
    method: Literal["cri", "cgroup", "netns"]
    netns_path: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class NetnsResolution:
    """A node's network namespace, found through its hostNetwork pods' processes."""

    netns_path: str
    netns_inode: int
    pids: dict[str, int | None] = field(default_factory=dict)  # "ns/name" -> pid
    evidence: list[str] = field(default_factory=list)


# -- pure parsing ------------------------------------------------------------------------------
def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    """Parse /proc/<pid>/cgroup; malformed lines are skipped.

    >>> parse_proc_cgroup("12:pids:/kubepods/besteffort/podab\\n0::/init.scope\\n")[1]
    CgroupLine(hierarchy_id=0, controllers=(), path='/init.scope')
    """
    lines = []
    for raw in text.splitlines():
        parts = raw.strip().split(":", 2)  # the path itself may contain ":"
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            continue
        ctrls = tuple(c for c in parts[1].split(",") if c)
        lines.append(CgroupLine(int(parts[0]), ctrls, parts[2]))
    return lines


def _expand_slice(name: str) -> list[str] | None:
    """The cgroup directories of a systemd slice name, as runc's systemd driver lays them out.

    `a-b-c.slice` nests as `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root. None if `name`
    is no valid slice name. (runc libcontainer/cgroups/systemd/common.go `ExpandSlice`,
    https://github.com/opencontainers/runc/blob/v1.1.0/libcontainer/cgroups/systemd/common.go#L58)

    >>> _expand_slice("kubepods-besteffort-pod0f1e.slice")
    ['kubepods.slice', 'kubepods-besteffort.slice', 'kubepods-besteffort-pod0f1e.slice']
    """
    stem = name.removesuffix(".slice")
    if stem == name or not stem or "/" in name:
        return None
    if stem == "-":
        return []
    words = stem.split("-")
    if "" in words:  # `a--b.slice`, `-a.slice`: systemd refuses them
        return None
    return ["-".join(words[:n]) + ".slice" for n in range(1, len(words) + 1)]


def _expand_colon_form(part: str) -> list[str]:
    """One path component, with runc's systemd `slice:prefix:name` spelled out as directories.

    containerd (>= 1.3) hands runc `<pod slice>:cri-containerd:<id>` whenever the kubelet's cgroup
    parent ends in `.slice`, whatever runc's own driver
    (https://github.com/containerd/containerd/blob/v2.0.0/internal/cri/server/helpers.go#L414).
    Without `SystemdCgroup = true`, runc's fs driver keeps that string as one relative directory
    name (https://github.com/opencontainers/runc/blob/v1.1.0/libcontainer/specconv/spec_linux.go#L616),
    so the pod's slice, the runtime prefix and the container id all sit in a single component.
    Expanded, it reads like the systemd driver's `<slices>/<prefix>-<id>.scope`
    (`getUnitName`: a name ending in `.slice` stays a slice).

    >>> _expand_colon_form("kubepods-pod0f1e.slice:cri-containerd:4b1f")
    ['kubepods.slice', 'kubepods-pod0f1e.slice', 'cri-containerd-4b1f.scope']
    >>> _expand_colon_form("web:8080")
    ['web:8080']
    """
    fields = part.split(":")
    if len(fields) != 3 or not all(fields):
        return [part]
    slices = _expand_slice(fields[0])
    if slices is None:
        return [part]
    prefix, name = fields[1], fields[2]
    return [*slices, name if name.endswith(".slice") else f"{prefix}-{name}.scope"]


def _path_components(path: str) -> tuple[int, list[str]]:
    """(leading `..` count, components) of a /proc/<pid>/cgroup path, colon forms expanded.

    A reader inside a cgroup namespace sees other processes' paths relative to its own root, as
    `/../..` and then the path down (kernel Documentation/admin-guide/cgroup-v2.rst, "Namespace":
    `0::/../container_id2/sub_cgrp_1`); `..` only ever leads such a path.

    >>> _path_components("/../../burstable/pod0f1e/4b1f")
    (2, ['burstable', 'pod0f1e', '4b1f'])
    """
    parts = [p for p in path.lower().split("/") if p and p != "."]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    return ups, [c for p in parts[ups:] for c in _expand_colon_form(p)]


def _pod_levels(ups: int, parts: list[str]) -> range:
    """The indices in `parts` where the pod's cgroup may be (a container level must follow it).

    Requiring a `kubepods` level above it keeps out look-alikes (a plain `docker run` at
    `/docker/<id>`); custom `--cgroup-root`s and nodes that are themselves containers only add
    levels above that. Seen from a sibling cgroup namespace on the cgroupfs driver, `kubepods`
    (and the QoS level, when reader and target share it) are among the hidden ancestors: then
    the path must start at the QoS level or at the pod itself, nothing else.
    """
    anchor = next((i for i, p in enumerate(parts) if "kubepods" in p), None)
    if anchor is not None:
        return range(anchor, len(parts) - 1)
    if ups and parts:
        first = 1 if parts[0] in _QOS_LEVELS else 0
        return range(first, min(first + 1, len(parts) - 1))
    return range(0)


def kube_cgroup_ids(path: str) -> tuple[str, str] | None:
    """(pod uid with dashes, container id) if `path` is a kubelet pod container's cgroup.

    Every form in the module docstring's table; the not-a-pod forms there give None.

    >>> kube_cgroup_ids("/kubepods.slice/kubepods-pod1a2b3c4d_0000_1111_2222_333344445555.slice/"
    ...                 "cri-containerd-" + "f" * 64 + ".scope")[0]
    '1a2b3c4d-0000-1111-2222-333344445555'
    >>> kube_cgroup_ids("/system.slice/containerd.service/kubepods-besteffort-pod"
    ...                 "1a2b3c4d_0000_1111_2222_333344445555.slice:cri-containerd:" + "f" * 64)[1][:8]
    'ffffffff'
    """
    ups, parts = _path_components(path)
    for i in _pod_levels(ups, parts):
        pod = _POD_COMPONENT.match(parts[i])
        if pod is None:
            continue
        # The container's cgroup sits right under the pod's; deeper levels (crun's
        # `.scope/container`, CRI-O's `exec`, systemd's `init.scope` inside the container) are
        # inside the container and still count.
        ctr = _CONTAINER_COMPONENT.match(parts[i + 1])
        if ctr is None:
            return None
        uid = pod.group("uid").replace("_", "-")
        return uid, ctr.group("id")
    return None


def _uid_key(uid: str) -> str:
    return uid.lower().replace("_", "").replace("-", "")


def cgroup_matches(lines: list[CgroupLine], uid: str, container_ids: list[str] | tuple[str, ...]) -> Match | None:
    """Does a process with these cgroup lines belong to the pod? Container matches win.

    A container id may be given in full or as a prefix of at least 12 characters.

    >>> lines = parse_proc_cgroup("0::/kubepods/besteffort/pod" + "1" * 32 + "/" + "a" * 64)
    >>> cgroup_matches(lines, uid="1" * 32, container_ids=["b" * 64]).kind
    'pod'
    >>> cgroup_matches(lines, uid="", container_ids=["containerd://" + "a" * 12]).kind
    'container'
    """
    wanted = [_SCHEME.sub("", c).lower() for c in container_ids if c]
    uid_key = _uid_key(uid) if uid else ""
    pod_match = None
    for line in lines:
        ids = kube_cgroup_ids(line.path)
        if ids is None:
            continue
        pod_uid, cid = ids
        if any(len(w) >= 12 and cid.startswith(w) for w in wanted):
            return Match("container", pod_uid, cid, line.path)
        if uid_key and _uid_key(pod_uid) == uid_key and pod_match is None:
            pod_match = Match("pod", pod_uid, cid, line.path)
    return pod_match


# -- the scan ------------------------------------------------------------------------------------
def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def scan_proc_cgroups(proc: str = "/proc") -> Iterator[tuple[int, list[CgroupLine]]]:
    """(pid, cgroup lines) for every process; processes that vanish or can't be read are skipped."""
    try:
        names = os.listdir(proc)
    except OSError as e:
        raise ResolveError(f"cannot list {proc}: {e}") from None
    for name in names:
        if not name.isdigit():
            continue
        try:
            text = _read_text(os.path.join(proc, name, "cgroup"))
        except OSError:  # exited mid-scan (ENOENT, ESRCH), or unreadable: not ours to judge
            continue
        yield int(name), parse_proc_cgroup(text)


def netns_path_for_pid(pid: int, proc: str = "/proc") -> str:
    """`/proc/<pid>/ns/net`, checked to exist now (raises PidNotFound if the process is gone).

    >>> netns_path_for_pid(1)
    '/proc/1/ns/net'
    """
    path = os.path.join(proc, str(pid), "ns", "net")
    try:
        os.stat(path)
    except (FileNotFoundError, ProcessLookupError):
        raise PidNotFound(f"process {pid} is gone (or a zombie without namespaces)") from None
    except PermissionError as e:
        raise PermissionMissing("CAP_SYS_PTRACE (or root)", f"open {path}", str(e)) from None
    return path


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stable_netns_path(key: tuple[int, int], fallback: str, proc: str, run_netns: str) -> str:
    try:
        named = sorted(os.listdir(run_netns))
    except OSError:
        named = []
    for path in [os.path.join(run_netns, n) for n in named] + [os.path.join(proc, "1", "ns", "net")]:
        if _key(path) == key:
            return path
    return fallback


def _is_our_worker(pid: int, proc: str) -> bool:
    # Our own runner workers sit in the namespaces we probe; they are not the pod's processes.
    try:
        stat = _read_text(os.path.join(proc, str(pid), "stat"))
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # comm may contain spaces and ")"
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            cmdline = f.read()
    except (OSError, IndexError, ValueError):
        return False
    return ppid == os.getpid() and b"netconform.runners._worker" in cmdline


def _pids_in_netns(key: tuple[int, int], proc: str) -> list[int]:
    pids = []
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    for name in names:
        if (name.isdigit() and _key(os.path.join(proc, name, "ns", "net")) == key
                and not _is_our_worker(int(name), proc)):
            pids.append(int(name))
    return sorted(pids)


# -- the three methods ---------------------------------------------------------------------------
def _by_cri(pod: PodRef, crictl: str, proc: str, timeout: float, evidence: list[str]) -> int | None:
    if not pod.container_ids:
        evidence.append("cri: the pod lists no container ids; skipped")
        return None
    exe = shutil.which(crictl)
    if exe is None:
        evidence.append(f"cri: {crictl} not found; skipped")
        return None
    for cid in pod.container_ids:
        short = cid[:13]
        try:
            out = subprocess.run([exe, "inspect", "--output", "json", cid], capture_output=True,
                                 text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            evidence.append(f"cri: `crictl inspect {short}` gave no answer in {timeout:g} s; CRI given up")
            return None
        except OSError as e:
            evidence.append(f"cri: cannot run {exe}: {e}")
            return None
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or [""])[-1]
            evidence.append(f"cri: `crictl inspect {short}` failed (exit {out.returncode}): {last[:200]}")
            continue
        try:
            pid = int(json.loads(out.stdout)["info"]["pid"])
        except (ValueError, KeyError, TypeError):
            evidence.append(f"cri: `crictl inspect {short}` has no .info.pid")
            continue
        if pid <= 0:
            evidence.append(f"cri: container {short} is not running (pid {pid})")
            continue
        if not os.path.exists(os.path.join(proc, str(pid))):
            evidence.append(f"cri: pid {pid} of {short} is not in {proc} (not in the host pid namespace?"
                            " run with hostPID)")
            continue
        evidence.append(f"cri: `crictl inspect {short}` → pid {pid}")
        return pid
    return None


def _at_container_level(path: str) -> bool:
    _, parts = _path_components(path)
    return bool(parts) and _CONTAINER_COMPONENT.match(parts[-1]) is not None


def _by_cgroup(pod: PodRef, proc: str, evidence: list[str]) -> int | None:
    if not pod.uid and not pod.container_ids:
        evidence.append("cgroup: the pod has neither uid nor container ids; skipped")
        return None
    hits: list[tuple[int, int, int, Match]] = []
    scanned = 0
    for pid, lines in scan_proc_cgroups(proc):
        scanned += 1
        m = cgroup_matches(lines, pod.uid, pod.container_ids)
        if m is not None:
            # A process in a sub-cgroup of the container (systemd or Docker inside it) may sit in a
            # network namespace of its own: prefer one at the container's own level.
            hits.append((0 if m.kind == "container" else 1, 0 if _at_container_level(m.path) else 1, pid, m))
    denied = []
    for *_, pid, m in sorted(hits, key=lambda h: h[:3]):
        try:
            os.stat(os.path.join(proc, str(pid), "ns", "net"))
        except PermissionError:
            denied.append(pid)
            continue
        except OSError:  # exited since the scan, or a zombie (its namespaces are gone)
            continue
        what = f"container {m.container_id[:13]}" if m.kind == "container" else f"pod uid {m.pod_uid} (another container of the pod)"
        evidence.append(f"cgroup: pid {pid} runs in {what}: {m.path}")
        return pid
    if denied:
        raise PermissionMissing("CAP_SYS_PTRACE (or root)", f"open /proc/<pid>/ns/net of {pod.key}'s processes",
                                f"denied for pids {denied[:5]}")
    wanted = ", ".join([c[:13] for c in pod.container_ids] + ([f"pod{pod.uid}"] if pod.uid else []))
    evidence.append(f"cgroup: none of {scanned} processes in {proc} is in a kubepods cgroup of {wanted}")
    return None


def _netns_addresses(paths: list[str], timeout: float) -> dict[str, Any]:
    # One child enters each namespace in turn; setns would move a thread of this (threaded)
    # process, so the parent never does it itself.
    from netconform.runners._worker import command

    args, env = command("addresses", *paths)
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if out.returncode != 0:
        raise OSError(f"address scan failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def _norm_ip(text: Any) -> str | None:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def _by_netns_ip(pod: PodRef, proc: str, run_netns: str, timeout: float,
                 evidence: list[str]) -> tuple[str, int | None] | None:
    if not pod.pod_ip:
        evidence.append("netns: the pod has no IP; skipped")
        return None
    try:
        ip = ipaddress.ip_address(pod.pod_ip).compressed
    except ValueError:
        evidence.append(f"netns: pod IP {pod.pod_ip!r} is not an IP address; skipped")
        return None
    try:
        paths = [os.path.join(run_netns, n) for n in sorted(os.listdir(run_netns))]
    except OSError as e:
        evidence.append(f"netns: cannot list {run_netns}: {e.strerror}")
        return None
    if not paths:
        evidence.append(f"netns: {run_netns} is empty")
        return None
    try:
        found = _netns_addresses(paths, timeout)
    except subprocess.TimeoutExpired:
        evidence.append(f"netns: reading addresses of {len(paths)} namespaces took over {timeout:g} s; gave up")
        return None
    except (OSError, ValueError) as e:
        evidence.append(f"netns: {e}")
        return None
    holders = [p for p, addrs in found.items() if isinstance(addrs, list) and ip in {_norm_ip(a) for a in addrs}]
    if not holders:
        unreadable = [f"{os.path.basename(p)}: {v['error']}" for p, v in found.items() if isinstance(v, dict)]
        evidence.append(f"netns: none of {len(paths)} namespaces in {run_netns} holds {ip}"
                        + (f" ({len(unreadable)} unreadable: {'; '.join(unreadable[:3])})" if unreadable else ""))
        return None
    with_pids = [(p, _pids_in_netns(k, proc)) for p in holders if (k := _key(p)) is not None]
    if len(holders) > 1:
        # A duplicate IP (a leaked namespace, or a real conflict): only a namespace with live
        # processes can be the running pod's; if that is still ambiguous, refuse to guess.
        alive = [(p, pids) for p, pids in with_pids if pids]
        desc = ", ".join(f"{p} ({len(pids)} processes)" for p, pids in with_pids)
        if len(alive) != 1:
            evidence.append(f"netns: {len(holders)} namespaces hold {ip}: {desc}")
            raise PidNotFound(f"{len(holders)} network namespaces hold {ip} ({desc}); cannot tell which is "
                              f"{pod.key}'s", evidence=evidence)
        evidence.append(f"netns: {len(holders)} namespaces hold {ip}: {desc}; using the one with processes")
        with_pids = alive
    if not with_pids:
        evidence.append(f"netns: {holders[0]} holds {ip} but vanished")
        return None
    path, pids = with_pids[0]
    evidence.append(f"netns: {path} holds {ip}; processes in it: {pids[:10] or 'none'}")
    return path, (pids[0] if pids else None)


# -- public resolvers ----------------------------------------------------------------------------
def resolve_pod_pid(pod: PodRef, *, proc: str = "/proc", crictl: str = "crictl", run_netns: str = "/run/netns",
                    timeout: float = 5) -> PidResolution:
    """Find a process of `pod` on this node and the namespace path to enter (raises PidNotFound).

    >>> resolve_pod_pid(PodRef("default", "web-0", uid="0f1e…", pod_ip="10.0.1.12")).method
    'cgroup'
    """
    evidence: list[str] = []
    method: Literal["cri", "cgroup"] = "cri"
    pid = _by_cri(pod, crictl, proc, timeout, evidence)
    if pid is None:
        method = "cgroup"
        pid = _by_cgroup(pod, proc, evidence)
    if pid is not None:
        path = os.path.join(proc, str(pid), "ns", "net")
        key = _key(path)
        stable = _stable_netns_path(key, path, proc, run_netns) if key else path
        return PidResolution(pid=pid, method=method, netns_path=stable, evidence=evidence)
    found = _by_netns_ip(pod, proc, run_netns, timeout, evidence)
    if found is not None:
        path, pid = found
        return PidResolution(pid=pid, method="netns", netns_path=path, evidence=evidence)
    raise PidNotFound(f"no process or namespace of pod {pod.key} found on this node: " + "; ".join(evidence),
                      evidence=evidence)


def resolve_node_netns(hostnetwork_pods: list[PodRef], *, proc: str = "/proc", crictl: str = "crictl",
                       run_netns: str = "/run/netns", timeout: float = 5) -> NetnsResolution:
    """The node's network namespace: the one its hostNetwork pods' processes share.

    On a real node that is the root namespace (reported as `/proc/1/ns/net` when readable); the
    pods only have to agree. Pods without a process here are noted in the evidence.

    >>> resolve_node_netns([PodRef("kube-system", "kube-proxy-x2k", uid="…", host_network=True)]).netns_path
    '/proc/1/ns/net'
    """
    if not hostnetwork_pods:
        raise ResolveError("no hostNetwork pods given: cannot locate the node's network namespace through them")
    evidence: list[str] = []
    groups: dict[tuple[int, int], list[tuple[PodRef, PidResolution]]] = {}
    for pod in hostnetwork_pods:
        try:
            res = resolve_pod_pid(pod, proc=proc, crictl=crictl, run_netns=run_netns, timeout=timeout)
        except PidNotFound as e:
            evidence.append(f"{pod.key}: not found ({'; '.join(e.evidence[-2:])})")
            continue
        key = _key(res.netns_path)
        if key is None:
            evidence.append(f"{pod.key}: {res.netns_path} vanished")
            continue
        evidence.append(f"{pod.key}: pid {res.pid} by {res.method} → {res.netns_path} (net:[{key[1]}])")
        groups.setdefault(key, []).append((pod, res))
    if not groups:
        raise ResolveError(f"none of the {len(hostnetwork_pods)} hostNetwork pods has a process on this node",
                           evidence=evidence)
    if len(groups) > 1:
        desc = "; ".join(f"net:[{k[1]}]: {', '.join(p.key for p, _ in members)}" for k, members in groups.items())
        raise ResolveError(f"hostNetwork pods are in different network namespaces ({desc})", evidence=evidence)
    (key, members), = groups.items()
    first = members[0][1]
    path = _stable_netns_path(key, first.netns_path, proc, run_netns)
    return NetnsResolution(netns_path=path, netns_inode=key[1], pids={p.key: r.pid for p, r in members},
                           evidence=evidence)
