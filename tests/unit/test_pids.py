"""Pod → pid resolution on recorded /proc/<pid>/cgroup contents and a fake /proc tree."""
from __future__ import annotations

import json
import os
import stat
import textwrap

import pytest

from netconform import pids
from netconform.errors import PermissionMissing, PidNotFound, ResolveError
from netconform.pids import (
    PodRef,
    cgroup_matches,
    kube_cgroup_ids,
    netns_path_for_pid,
    parse_proc_cgroup,
    resolve_node_netns,
    resolve_pod_pid,
)

UID = "e4c1eb2d-b7cb-4d04-a8eb-b78a0ce75bc9"
UID_ = UID.replace("-", "_")
CID = "9984920f78bea0a3365de86113f60f03801440aff1f972341625029df8ab994c"  # the app container
SANDBOX = "478c0509c757aa8f78a620ccc9db2023e482e484a5ec298be7f861edd007b52b"  # its pause container
OTHER_UID = "304313f9-908e-4be2-b7f6-8da016e52324"
OTHER_CID = "160ec9f7b13c56844233697c84c176c86569ed2ecc9eaa771025a9fe4c686bf3"
STATIC_UID = "ab9a4cb0dc1f4a3cfa1c5be0e01f3f64"  # a static pod's config hash, kubelet's uid for it


def _v1(path: str, *, systemd_line: str | None = None, unified: str = "/") -> str:
    """A cgroup v1 file as a hybrid-mode host shows it: one line per mounted controller."""
    ctrls = ["misc", "rdma", "hugetlb", "cpuset", "perf_event", "net_cls,net_prio", "freezer",
             "blkio", "memory", "devices", "pids", "cpu,cpuacct"]
    lines = [f"{13 - i}:{c}:{'/' if c in ('misc', 'rdma') else path}" for i, c in enumerate(ctrls)]
    lines.append(f"1:name=systemd:{systemd_line or path}")
    lines.append(f"0::{unified}")
    return "\n".join(lines) + "\n"


SYSTEMD_BURSTABLE = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"

# Recorded layouts (ids replaced): what /proc/<pid>/cgroup holds for a process of the pod.
CGROUP_FILES = {
    # EKS AL2 / kubeadm, containerd with cgroupDriver=cgroupfs, cgroup v1
    "v1-cgroupfs-containerd": _v1(f"/kubepods/besteffort/pod{UID}/{CID}"),
    # EKS AL2 (systemd driver), containerd, cgroup v1 — the unified line is systemd's own
    "v1-systemd-containerd": _v1(f"{SYSTEMD_BURSTABLE}/cri-containerd-{CID}.scope",
                                 unified=f"{SYSTEMD_BURSTABLE}/cri-containerd-{CID}.scope"),
    # AL2023 / Bottlerocket / Ubuntu 22.04: cgroup v2 only, systemd driver
    "v2-systemd-containerd": f"0::/kubepods.slice/kubepods-besteffort.slice/"
                             f"kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
    # k3s on cgroup v2, cgroupfs driver; Guaranteed QoS has no QoS level
    "v2-cgroupfs-containerd": f"0::/kubepods/pod{UID}/{CID}\n",
    # kind: kubelet --cgroup-root=/kubelet, systemd driver, inside a cgroup namespace
    "v2-systemd-cgroup-root": f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
                              f"kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
    # OpenShift / CRI-O with crun on v2: crun moves the payload into a `container` sub-cgroup
    "v2-systemd-crio-crun": f"0::{SYSTEMD_BURSTABLE}/crio-{CID}.scope/container\n",
    # CRI-O with runc on cgroup v1, systemd driver
    "v1-systemd-crio": _v1(f"{SYSTEMD_BURSTABLE}/crio-{CID}.scope"),
    # CRI-O with cgroupfs manager, cgroup v1
    "v1-cgroupfs-crio": _v1(f"/kubepods/burstable/pod{UID}/crio-{CID}"),
    # dockershim (Kubernetes <= 1.23), Docker with cgroupfs driver, cgroup v1
    "v1-cgroupfs-docker": _v1(f"/kubepods/burstable/pod{UID}/{CID}"),
    # dockershim with the systemd driver
    "v1-systemd-docker": _v1(f"{SYSTEMD_BURSTABLE}/docker-{CID}.scope"),
}

NOT_POD = {
    "kubelet": _v1("/system.slice/kubelet.service"),
    "containerd": "0::/system.slice/containerd.service\n",
    "init": "0::/init.scope\n",
    "kthread": "0::/\n",
    "ssh-session": "0::/user.slice/user-1000.slice/session-3.scope\n",
    "docker-run": _v1(f"/docker/{CID}"),  # a plain `docker run`: same id, but no kubepods
    # conmon supervises a CRI-O container from the host netns; its scope names the container id
    "crio-conmon-in-pod": f"0::{SYSTEMD_BURSTABLE}/crio-conmon-{CID}.scope\n",
    "crio-conmon-system": f"0::/system.slice/crio-conmon-{CID}.scope\n",
    "crio-conmon-cgroupfs": _v1(f"/kubepods/burstable/pod{UID}/crio-conmon-{CID}"),
    # a process sitting in the pod cgroup itself, in no container (e.g. a shim placed there)
    "pod-level": f"0::/kubepods/besteffort/pod{UID}\n",
}


# -- parsing -------------------------------------------------------------------------------------
def test_parse_v1_multi_controller_file():
    lines = parse_proc_cgroup(CGROUP_FILES["v1-cgroupfs-containerd"])
    assert len(lines) == 14
    assert lines[0].hierarchy_id == 13 and lines[0].controllers == ("misc",) and lines[0].path == "/"
    net = next(line for line in lines if "net_cls" in line.controllers)
    assert net.controllers == ("net_cls", "net_prio")
    assert net.path == f"/kubepods/besteffort/pod{UID}/{CID}"
    named = next(line for line in lines if line.hierarchy_id == 1)
    assert named.controllers == ("name=systemd",)
    assert lines[-1].unified and lines[-1].path == "/"
    assert not net.unified


def test_parse_keeps_colons_in_path_and_skips_junk():
    text = "0::/weird:path/with:colons\n\nnot a cgroup line\n5:memory\n7:pids:/ok\nx:cpu:/bad\n"
    lines = parse_proc_cgroup(text)
    assert [(line.hierarchy_id, line.path) for line in lines] == [(0, "/weird:path/with:colons"), (7, "/ok")]


@pytest.mark.parametrize("layout", sorted(CGROUP_FILES))
def test_every_layout_names_pod_and_container(layout):
    paths = [line.path for line in parse_proc_cgroup(CGROUP_FILES[layout])]
    found = {kube_cgroup_ids(p) for p in paths} - {None}
    assert found == {(UID, CID)}, layout


@pytest.mark.parametrize("layout", sorted(CGROUP_FILES))
def test_container_id_match_in_every_layout(layout):
    lines = parse_proc_cgroup(CGROUP_FILES[layout])
    for given in (CID, f"containerd://{CID}", f"cri-o://{CID}", f"docker://{CID}", CID[:12].upper()):
        m = cgroup_matches(lines, "", [given])
        assert m is not None and m.kind == "container" and m.container_id == CID, (layout, given)


@pytest.mark.parametrize("layout", sorted(CGROUP_FILES))
def test_pod_uid_match_in_every_layout(layout):
    lines = parse_proc_cgroup(CGROUP_FILES[layout])
    for uid in (UID, UID_, UID.upper()):
        m = cgroup_matches(lines, uid, [OTHER_CID])
        assert m is not None and m.kind == "pod" and m.pod_uid == UID, (layout, uid)
    assert cgroup_matches(lines, OTHER_UID, [OTHER_CID]) is None


def test_container_match_wins_over_pod_match():
    lines = parse_proc_cgroup(CGROUP_FILES["v2-systemd-containerd"])
    m = cgroup_matches(lines, UID, [CID])
    assert m.kind == "container"


def test_short_or_foreign_ids_do_not_match():
    lines = parse_proc_cgroup(CGROUP_FILES["v1-cgroupfs-containerd"])
    assert cgroup_matches(lines, "", [CID[:8]]) is None  # too short to be unambiguous
    assert cgroup_matches(lines, "", [OTHER_CID]) is None
    assert cgroup_matches(lines, "", []) is None


@pytest.mark.parametrize("name", sorted(NOT_POD))
def test_non_pod_processes_never_match(name):
    lines = parse_proc_cgroup(NOT_POD[name])
    assert cgroup_matches(lines, UID, [CID]) is None, name


def test_pause_container_matches_by_uid_only():
    pause = parse_proc_cgroup(_v1(f"/kubepods/besteffort/pod{UID}/{SANDBOX}"))
    m = cgroup_matches(pause, UID, [CID])
    assert m.kind == "pod" and m.container_id == SANDBOX


def test_static_pod_hash_uid():
    lines = parse_proc_cgroup(f"0::/kubepods/burstable/pod{STATIC_UID}/{CID}\n")
    assert cgroup_matches(lines, STATIC_UID, []).kind == "pod"
    systemd = parse_proc_cgroup(f"0::/kubepods.slice/kubepods-burstable.slice/"
                                f"kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope\n")
    assert cgroup_matches(systemd, STATIC_UID, []).kind == "pod"


# -- PodRef ---------------------------------------------------------------------------------------
def test_podref_normalises_ids():
    pod = PodRef("default", "web-0", uid=UID.upper(), container_ids=(f"containerd://{CID.upper()}", "", f"cri-o://{SANDBOX}"))
    assert pod.container_ids == (CID, SANDBOX)
    assert pod.uid == UID
    assert PodRef("a", "b", container_ids=f"docker://{CID}").container_ids == (CID,)
    assert pod.key == "default/web-0"


def test_podref_from_api_mirror_pod():
    api_pod = {
        "metadata": {"namespace": "kube-system", "name": "kube-proxy-ip-10-0-1-5", "uid": OTHER_UID,
                     "annotations": {"kubernetes.io/config.mirror": STATIC_UID,
                                     "kubernetes.io/config.hash": STATIC_UID}},
        "spec": {"hostNetwork": True},
        "status": {"podIP": "10.0.1.5", "containerStatuses": [{"name": "kube-proxy", "containerID": f"containerd://{CID}"}],
                   "initContainerStatuses": [{"name": "init"}]},
    }
    pod = PodRef.from_api(api_pod)
    assert pod == PodRef("kube-system", "kube-proxy-ip-10-0-1-5", uid=STATIC_UID, container_ids=(CID,),
                         pod_ip="10.0.1.5", host_network=True)


# -- a fake /proc tree ----------------------------------------------------------------------------
class FakeProc:
    """tmp_path/proc/<pid>/{cgroup,ns/net} and tmp_path/netns/<name>; equal netns = hard links."""

    def __init__(self, root):
        self.proc = root / "proc"
        self.run_netns = root / "netns"
        self.nsdir = root / "namespaces"
        for d in (self.proc, self.run_netns, self.nsdir):
            d.mkdir()
        (self.proc / "self").mkdir()  # non-numeric entries are ignored
        (self.proc / "sys").mkdir()

    def netns(self, name: str, *, named: bool = False):
        path = self.nsdir / name
        if not path.exists():
            path.write_text("")
        if named and not (self.run_netns / name).exists():
            os.link(path, self.run_netns / name)
        return path

    def process(self, pid: int, cgroup: str | None, netns: str | None = "host"):
        d = self.proc / str(pid)
        (d / "ns").mkdir(parents=True)
        if cgroup is not None:
            (d / "cgroup").write_text(cgroup)
        if netns is not None:
            os.link(self.netns(netns), d / "ns" / "net")
        return d

    def kwargs(self, **extra):
        return {"proc": str(self.proc), "run_netns": str(self.run_netns), "crictl": "no-such-crictl-here", **extra}


@pytest.fixture
def fake(tmp_path):
    return FakeProc(tmp_path)


def _node(fake: FakeProc) -> None:
    """A node with the usual residents plus the pod's pause (pid 400) and app (pid 420)."""
    fake.process(1, NOT_POD["init"])
    fake.process(210, NOT_POD["kubelet"])
    fake.process(220, NOT_POD["containerd"])
    fake.process(390, NOT_POD["crio-conmon-in-pod"])  # host netns, names the container id
    fake.process(400, _v1(f"/kubepods/besteffort/pod{UID}/{SANDBOX}"), netns="pod")
    fake.process(420, CGROUP_FILES["v1-cgroupfs-containerd"], netns="pod")
    fake.process(500, f"0::/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CID}\n", netns="other")


def test_scan_prefers_the_container_process(fake):
    _node(fake)
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(f"containerd://{CID}",)), **fake.kwargs())
    assert res.pid == 420 and res.method == "cgroup"
    assert res.netns_path == f"{fake.proc}/420/ns/net"
    assert any("no-such-crictl-here not found" in e for e in res.evidence)
    assert any("pid 420" in e and CID[:13] in e for e in res.evidence)


def test_scan_falls_back_to_pod_uid(fake):
    _node(fake)
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=("f" * 64,)), **fake.kwargs())
    assert res.pid == 400 and res.method == "cgroup"


def test_scan_prefers_a_stable_netns_name(fake):
    _node(fake)
    fake.netns("pod", named=True)  # /run/netns/<name> of the same namespace as pid 420's
    res = resolve_pod_pid(PodRef("default", "web-0", container_ids=(CID,)), **fake.kwargs())
    assert res.pid == 420 and res.netns_path == str(fake.run_netns / "pod")


def test_scan_survives_vanished_and_unreadable_processes(fake, monkeypatch):
    _node(fake)
    fake.process(300, None)  # listed, then gone before its cgroup file was read
    os.symlink(fake.proc / "999999", fake.proc / "301")  # a dangling entry
    fake.process(302, CGROUP_FILES["v2-systemd-containerd"])  # unreadable: EACCES
    fake.process(303, CGROUP_FILES["v2-systemd-containerd"])  # exits while read: ESRCH
    (fake.proc / "304").mkdir()
    (fake.proc / "304" / "cgroup").mkdir()  # EISDIR: not a process file at all
    real_read = pids._read_text

    def read(path):
        if path.endswith("/302/cgroup"):
            raise PermissionError(13, "Permission denied", path)
        if path.endswith("/303/cgroup"):
            raise ProcessLookupError(3, "No such process", path)
        return real_read(path)

    monkeypatch.setattr(pids, "_read_text", read)
    scanned = dict(pids.scan_proc_cgroups(str(fake.proc)))
    assert set(scanned) == {1, 210, 220, 390, 400, 420, 500}
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(CID,)), **fake.kwargs())
    assert res.pid == 420


def test_scan_skips_zombies_without_namespaces(fake):
    _node(fake)
    fake.process(410, CGROUP_FILES["v2-cgroupfs-containerd"], netns=None)  # a zombie: lower pid, no ns/net
    res = resolve_pod_pid(PodRef("default", "web-0", container_ids=(CID,)), **fake.kwargs())
    assert res.pid == 420


def test_scan_reports_missing_ptrace_permission(fake, monkeypatch):
    _node(fake)
    real_stat = os.stat

    def stat_(path, *a, **kw):
        if str(path).endswith("/ns/net") and "/proc/" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(pids.os, "stat", stat_)
    with pytest.raises(PermissionMissing) as exc:
        resolve_pod_pid(PodRef("default", "web-0", container_ids=(CID,)), **fake.kwargs())
    assert "CAP_SYS_PTRACE" in exc.value.permission


def test_nothing_found_raises_with_evidence(fake):
    _node(fake)
    with pytest.raises(PidNotFound) as exc:
        ghost = PodRef("default", "ghost", uid="a7d799eb-dc53-4fcb-be6c-46e4df1183bc", container_ids=("f" * 64,))
        resolve_pod_pid(ghost, **fake.kwargs())
    ev = exc.value.evidence
    assert [e.split(":")[0] for e in ev] == ["cri", "cgroup", "netns"]
    assert "none of 7 processes" in ev[1]
    assert "default/ghost" in str(exc.value)


def test_proc_not_listable_is_a_resolve_error(tmp_path):
    with pytest.raises(ResolveError):
        list(pids.scan_proc_cgroups(str(tmp_path / "absent")))


# -- CRI through a stand-in crictl ---------------------------------------------------------------
def _crictl(tmp_path, body: str) -> str:
    script = tmp_path / "crictl"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_cri_pid_is_used_first(fake, tmp_path):
    _node(fake)
    log = tmp_path / "argv"
    crictl = _crictl(tmp_path, f"""\
        echo "$@" > {log}
        echo '{json.dumps({"status": {"state": "CONTAINER_RUNNING"}, "info": {"pid": 420, "runtimeSpec": {}}})}'
        """)
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(f"containerd://{CID}",)),
                          **fake.kwargs(crictl=crictl))
    assert (res.method, res.pid) == ("cri", 420)
    assert log.read_text().split() == ["inspect", "--output", "json", CID]


@pytest.mark.parametrize("body,expect", [
    ("exec sleep 30\n", "no answer in 0.5 s"),
    ("echo 'connect: connection refused' >&2; exit 1\n", "failed (exit 1): connect: connection refused"),
    ("echo '{\"info\": {\"pid\": 0}}'\n", "is not running (pid 0)"),
    ("echo '{\"info\": {\"pid\": 77777}}'\n", "not in the host pid namespace"),
    ("echo 'not json'\n", "has no .info.pid"),
])
def test_cri_failures_fall_back_to_cgroup(fake, tmp_path, body, expect):
    _node(fake)
    crictl = _crictl(tmp_path, body)
    res = resolve_pod_pid(PodRef("default", "web-0", container_ids=(CID,)), **fake.kwargs(crictl=crictl, timeout=0.5))
    assert (res.method, res.pid) == ("cgroup", 420)
    assert expect in res.evidence[0]


# -- the netns-holding-the-IP fallback (the child that reads addresses is tested in tests/lab) ----
def _addresses(mapping):
    def fake_scan(paths, timeout):
        return {p: mapping.get(os.path.basename(p), []) for p in paths}
    return fake_scan


def test_netns_fallback_finds_the_namespace_and_a_process(fake, monkeypatch):
    fake.process(1, NOT_POD["init"])
    fake.process(700, "0::/some/unknown/runtime/layout\n", netns="cni-1")
    fake.netns("cni-1", named=True)
    fake.netns("cni-2", named=True)
    monkeypatch.setattr(pids, "_netns_addresses", _addresses({"cni-1": ["127.0.0.1", "10.0.1.12"],
                                                              "cni-2": ["10.0.1.13"]}))
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, pod_ip="10.0.1.12"), **fake.kwargs())
    assert (res.method, res.pid, res.netns_path) == ("netns", 700, str(fake.run_netns / "cni-1"))


def test_netns_fallback_normalises_ipv6(fake, monkeypatch):
    fake.netns("cni-6", named=True)
    monkeypatch.setattr(pids, "_netns_addresses", _addresses({"cni-6": ["2600:1f14:0:0::5"]}))
    res = resolve_pod_pid(PodRef("default", "v6", pod_ip="2600:1f14::5"), **fake.kwargs())
    assert res.netns_path.endswith("cni-6") and res.pid is None


def test_netns_fallback_duplicate_ip_prefers_the_live_namespace(fake, monkeypatch):
    fake.process(700, "0::/x\n", netns="cni-live")
    fake.netns("cni-live", named=True)
    fake.netns("cni-leaked", named=True)  # no process: a leaked namespace still holding the IP
    monkeypatch.setattr(pids, "_netns_addresses", _addresses({"cni-live": ["10.0.1.12"], "cni-leaked": ["10.0.1.12"]}))
    res = resolve_pod_pid(PodRef("default", "web-0", pod_ip="10.0.1.12"), **fake.kwargs())
    assert res.netns_path.endswith("cni-live") and res.pid == 700
    assert any("2 namespaces hold 10.0.1.12" in e for e in res.evidence)


def test_netns_fallback_refuses_to_guess_between_live_namespaces(fake, monkeypatch):
    fake.process(700, "0::/x\n", netns="cni-a")
    fake.process(701, "0::/x\n", netns="cni-b")
    fake.netns("cni-a", named=True)
    fake.netns("cni-b", named=True)
    monkeypatch.setattr(pids, "_netns_addresses", _addresses({"cni-a": ["10.0.1.12"], "cni-b": ["10.0.1.12"]}))
    with pytest.raises(PidNotFound, match="2 network namespaces hold 10.0.1.12"):
        resolve_pod_pid(PodRef("default", "web-0", pod_ip="10.0.1.12"), **fake.kwargs())


def test_netns_fallback_scan_errors_are_evidence(fake, monkeypatch):
    fake.netns("cni-1", named=True)

    def broken(paths, timeout):
        raise OSError("address scan failed (exit 1): boom")

    monkeypatch.setattr(pids, "_netns_addresses", broken)
    with pytest.raises(PidNotFound) as exc:
        resolve_pod_pid(PodRef("default", "web-0", pod_ip="10.0.1.12"), **fake.kwargs())
    assert "address scan failed" in exc.value.evidence[-1]


# -- the node's namespace -------------------------------------------------------------------------
def test_node_netns_from_hostnetwork_pods(fake):
    fake.process(1, NOT_POD["init"], netns="root")
    fake.process(600, f"0::/kubepods/burstable/pod{UID}/{CID}\n", netns="root")
    fake.process(610, f"0::/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CID}\n", netns="root")
    pods_ = [PodRef("kube-system", "aws-node-x", uid=UID, container_ids=(CID,), host_network=True),
             PodRef("kube-system", "kube-proxy-y", uid=OTHER_UID, container_ids=(OTHER_CID,), host_network=True),
             PodRef("kube-system", "gone", uid=STATIC_UID, host_network=True)]
    res = resolve_node_netns(pods_, **fake.kwargs())
    # the root namespace is named by pid 1, which outlives any pod process
    assert res.netns_path == f"{fake.proc}/1/ns/net"
    assert res.netns_inode == os.stat(fake.nsdir / "root").st_ino
    assert res.pids == {"kube-system/aws-node-x": 600, "kube-system/kube-proxy-y": 610}
    assert any(e.startswith("kube-system/gone: not found") for e in res.evidence)


def test_node_netns_disagreement_and_absence(fake):
    fake.process(600, f"0::/kubepods/burstable/pod{UID}/{CID}\n", netns="a")
    fake.process(610, f"0::/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CID}\n", netns="b")
    a = PodRef("kube-system", "a", container_ids=(CID,), host_network=True)
    b = PodRef("kube-system", "b", container_ids=(OTHER_CID,), host_network=True)
    with pytest.raises(ResolveError, match="different network namespaces"):
        resolve_node_netns([a, b], **fake.kwargs())
    with pytest.raises(ResolveError, match="none of the 1 hostNetwork pods"):
        resolve_node_netns([PodRef("kube-system", "c", container_ids=("e" * 64,))], **fake.kwargs())
    with pytest.raises(ResolveError, match="no hostNetwork pods"):
        resolve_node_netns([], **fake.kwargs())


def test_netns_path_for_pid(fake):
    fake.process(42, NOT_POD["init"])
    assert netns_path_for_pid(42, proc=str(fake.proc)) == f"{fake.proc}/42/ns/net"
    with pytest.raises(PidNotFound):
        netns_path_for_pid(43, proc=str(fake.proc))
