"""Real processes for lab pods: one long-lived process per pod, in the pod's netns, in a cgroup
named the way kubelet and containerd name it, with a kubelet-style /etc/resolv.conf in its own
mount namespace — so the product's pid resolver and `/proc/<pid>/root/etc/resolv.conf` work on
the lab exactly as on a node.

Cgroups go under a lab-owned root (`nc-<lab>` / `nc-<lab>.slice`, like a kubelet
`--cgroup-root`) in the v1 `pids` and `name=systemd` hierarchies and in the v2 hierarchy, so two
labs never share a directory and `down` can remove everything it made.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .topology import LabSpec, NodeSpec, PodSpec

CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 pids + the systemd name hierarchy, and the v2 unified hierarchy when mounted (hybrid nodes)
HIERARCHIES = ("pids", "systemd", "unified")
# unshare + nsenter + sh + mount take milliseconds; generous for a loaded machine (it only waits
# this long when a pod process is stuck)
POD_START_TIMEOUT = 60.0
# after SIGKILL, a cgroup empties once its processes have exited: fast, but not instant under load
CGROUP_EMPTY_TIMEOUT = 30.0

# Runs inside the new private mount namespace, after nsenter has switched the netns:
# $1 resolv.conf for the pod, $2 (optional) flannel subnet.env for node-level pods.
_POD_INIT = r"""
mount --bind "$1" /etc/resolv.conf || exit 97
if [ -n "$2" ]; then
  # read first: the lab's state folder is itself under /run, which the tmpfs hides
  env="$(cat "$2")" || exit 98
  mount -t tmpfs -o size=64k,mode=755 netconform-run /run && mkdir -p /run/flannel \
    && printf '%s\n' "$env" > /run/flannel/subnet.env || exit 98
fi
exec sleep infinity
"""


def cgroup_relpath(lab: str, node: NodeSpec, pod: PodSpec) -> str:
    """The container's cgroup path below a hierarchy root, as kubelet + containerd name it."""
    qos = pod.qos_class.lower()
    if node.cgroup_driver == "cgroupfs":
        base = f"nc-{lab}/kubepods" + ("" if qos == "guaranteed" else f"/{qos}")
        return f"{base}/pod{pod.uid}/{pod.container_id}"
    uid = pod.uid.replace("-", "_")
    if qos == "guaranteed":
        pod_slice = f"kubepods.slice/kubepods-pod{uid}.slice"
    else:
        pod_slice = f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice"
    return f"nc-{lab}.slice/{pod_slice}/cri-containerd-{pod.container_id}.scope"


def _hierarchies() -> list[Path]:
    return [CGROUP_ROOT / h for h in HIERARCHIES if (CGROUP_ROOT / h / "cgroup.procs").exists()]


def resolv_conf(spec: LabSpec, pod: PodSpec) -> str:
    """What kubelet writes for the pod (dnsPolicy ClusterFirst; hostNetwork pods get the node's)."""
    if pod.host_network:
        return node_resolv_conf(spec)
    d = spec.cluster_domain
    search = [f"{pod.namespace}.svc.{d}", f"svc.{d}", d] + _node_search(spec)
    return f"search {' '.join(search)}\nnameserver {spec.dns_service_ip}\noptions ndots:5\n"


def _node_search(spec: LabSpec) -> list[str]:
    return [f"{spec.region}.compute.internal"] if spec.flavor == "vpc-cni" else []


def node_resolv_conf(spec: LabSpec) -> str:
    import ipaddress

    # AmazonProvidedDNS sits at the VPC base + 2; the flannel plan's gateway plays the resolver.
    if spec.flavor == "vpc-cni":
        ns = str(ipaddress.ip_network(spec.vpc_cidr).network_address + 2)
    else:
        ns = spec.gateway_ip
    search = _node_search(spec)
    return (f"search {' '.join(search)}\n" if search else "") + f"nameserver {ns}\n"


def flannel_subnet_env(spec: LabSpec, node: NodeSpec) -> str:
    """/run/flannel/subnet.env as flanneld writes it (FLANNEL_SUBNET = first usable IP/len)."""
    plen = node.pod_cidr.split("/")[1]
    return (f"FLANNEL_NETWORK={spec.pod_cidr}\nFLANNEL_SUBNET={node.bridge_ip}/{plen}\n"
            f"FLANNEL_MTU={spec.pod_mtu}\nFLANNEL_IPMASQ=true\n")


class PodProcesses:
    """Starts and stops the process of each pod; remembers them for teardown."""

    def __init__(self, spec: LabSpec, state_dir: Path):
        self.spec = spec
        self.dir = state_dir / "pods"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, pod: PodSpec) -> int:
        node = self.spec.node(pod.node)
        pdir = self.dir / f"{pod.namespace}_{pod.name}"
        pdir.mkdir(parents=True, exist_ok=True)
        resolv = pdir / "resolv.conf"
        resolv.write_text(resolv_conf(self.spec, pod))
        subnet_env = ""
        if pod.role == "kube-flannel":
            env = pdir / "subnet.env"
            env.write_text(flannel_subnet_env(self.spec, node))
            subnet_env = str(env)
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "nsenter", f"--net=/run/netns/{pod.netns}", "--",
                "sh", "-c", _POD_INIT, f"pod:{pod.key}", str(resolv), subnet_env]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        rel = cgroup_relpath(self.spec.name, node, pod)
        for h in _hierarchies():
            cg = h / rel
            cg.mkdir(parents=True, exist_ok=True)
            (cg / "cgroup.procs").write_text(str(proc.pid))
        self.procs[pod.key] = proc
        return proc.pid

    def wait_ready(self, timeout: float = POD_START_TIMEOUT, keys: set[str] | None = None) -> None:
        """Wait until every pod process (or those of `keys`) has entered its namespaces and
        mounted its resolv.conf (i.e. reached `sleep`); before that its netns is still the lab's."""
        deadline = time.monotonic() + timeout
        for key, proc in self.procs.items():
            if keys is not None and key not in keys:
                continue
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"pod process for {key} exited with {proc.returncode}")
                try:
                    if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                        break
                except FileNotFoundError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pod process for {key} did not start in {timeout} s")
                time.sleep(0.01)

    def pid(self, key: str) -> int | None:
        proc = self.procs.get(key)
        return proc.pid if proc and proc.poll() is None else None

    def stop(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        _kill(proc)
        pod = self.spec.pod(key)
        _remove_tree_up(self.spec.name, cgroup_relpath(self.spec.name, self.spec.node(pod.node), pod))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        remove_lab_cgroups(self.spec.name)
        shutil.rmtree(self.dir, ignore_errors=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _remove_tree_up(lab: str, rel: str) -> None:
    for h in _hierarchies():
        path = h / rel
        while path != h and path.name not in (f"nc-{lab}", f"nc-{lab}.slice"):
            try:
                path.rmdir()
            except OSError:
                break  # not empty (another pod) or gone
            path = path.parent


def remove_lab_cgroups(lab: str) -> list[str]:
    """Kill every process left in the lab's cgroups and remove them (also after a crash).

    Returns the cgroup roots that could not be removed (empty when clean).
    """
    left = []
    for h in _hierarchies():
        for root in (h / f"nc-{lab}", h / f"nc-{lab}.slice"):
            if not root.exists():
                continue
            dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in dirs + [root]:
                deadline = time.monotonic() + CGROUP_EMPTY_TIMEOUT
                while True:
                    try:
                        pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
                    except FileNotFoundError:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.02)
            if root.exists():
                left.append(str(root))
    return left
