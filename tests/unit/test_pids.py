"""Pod → pid resolution on recorded /proc/<pid>/cgroup contents and a fake /proc tree."""
from __future__ import annotations

import json
import os
import re
import stat
import textwrap
from pathlib import Path

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

# The ids every recorded sample under data/cgroup uses (see data/cgroup/SOURCES.md).
UID = "e4c1eb2d-b7cb-4d04-a8eb-b78a0ce75bc9"
UID_ = UID.replace("-", "_")
CID = "9984920f78bea0a3365de86113f60f03801440aff1f972341625029df8ab994c"  # the app container
SANDBOX = "478c0509c757aa8f78a620ccc9db2023e482e484a5ec298be7f861edd007b52b"  # its pause container
OTHER_UID = "304313f9-908e-4be2-b7f6-8da016e52324"
OTHER_CID = "160ec9f7b13c56844233697c84c176c86569ed2ecc9eaa771025a9fe4c686bf3"
STATIC_UID = "ab9a4cb0dc1f4a3cfa1c5be0e01f3f64"  # a static pod's config hash, kubelet's uid for it
NODE_CID = "696ae930fbed08677065273f2dd537c0aee286f86158376d1d81ea788a9367f1"  # a kind node's container

DATA = Path(__file__).parent / "data" / "cgroup"


def _load(sub: str) -> dict[str, str]:
    return {f.stem: f.read_text() for f in sorted((DATA / sub).glob("*.cgroup"))}


# One recorded /proc/<pid>/cgroup per path form (file name = form): a process of the pod's app
# container, and processes that must never be taken for one.
CGROUP_FILES = _load("pod")
NOT_POD = _load("not-pod")


def _uid_of(form: str) -> str:
    return STATIC_UID if "static-pod" in form else UID


def test_every_recorded_form_is_sourced():
    sources = (DATA / "SOURCES.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", sources, flags=re.M))
    assert listed == set(CGROUP_FILES) | set(NOT_POD)
    assert len(CGROUP_FILES) >= 29 and len(NOT_POD) >= 20


# -- parsing -------------------------------------------------------------------------------------
def test_parse_v1_multi_controller_file():
    lines = parse_proc_cgroup(CGROUP_FILES["v1-cgroupfs-containerd"])  # hybrid host, runc 1.0
    assert len(lines) == 13
    assert lines[0].hierarchy_id == 12 and lines[0].controllers == ("rdma",) and lines[0].path == "/"
    net = next(line for line in lines if "net_cls" in line.controllers)
    assert net.controllers == ("net_cls", "net_prio")
    assert net.path == f"/kubepods/besteffort/pod{UID}/{CID}"
    named = next(line for line in lines if line.hierarchy_id == 1)
    assert named.controllers == ("name=systemd",)
    assert lines[-1].unified and lines[-1].path == "/system.slice/containerd.service"
    assert not net.unified


def test_parse_keeps_colons_in_path_and_skips_junk():
    text = "0::/weird:path/with:colons\n\nnot a cgroup line\n5:memory\n7:pids:/ok\nx:cpu:/bad\n"
    lines = parse_proc_cgroup(text)
    assert [(line.hierarchy_id, line.path) for line in lines] == [(0, "/weird:path/with:colons"), (7, "/ok")]


def test_parse_keeps_the_runc_colon_form_whole():
    lines = parse_proc_cgroup(CGROUP_FILES["v2-colon-containerd"])
    assert lines == [pids.CgroupLine(0, (), f"/system.slice/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{CID}")]


# -- every recorded form -------------------------------------------------------------------------
@pytest.mark.parametrize("form", sorted(CGROUP_FILES))
def test_every_form_names_pod_and_container(form):
    paths = [line.path for line in parse_proc_cgroup(CGROUP_FILES[form])]
    found = {kube_cgroup_ids(p) for p in paths} - {None}
    assert found == {(_uid_of(form), CID)}, form


@pytest.mark.parametrize("form", sorted(CGROUP_FILES))
def test_container_id_match_in_every_form(form):
    lines = parse_proc_cgroup(CGROUP_FILES[form])
    for given in (CID, f"containerd://{CID}", f"cri-o://{CID}", f"docker://{CID}", CID[:12].upper()):
        m = cgroup_matches(lines, "", [given])
        assert m is not None and m.kind == "container" and m.container_id == CID, (form, given)


@pytest.mark.parametrize("form", sorted(CGROUP_FILES))
def test_pod_uid_match_in_every_form(form):
    lines = parse_proc_cgroup(CGROUP_FILES[form])
    uid = _uid_of(form)
    for given in (uid, uid.replace("-", "_"), uid.upper()):
        m = cgroup_matches(lines, given, [OTHER_CID])
        assert m is not None and m.kind == "pod" and m.pod_uid == uid, (form, given)
    assert cgroup_matches(lines, OTHER_UID, [OTHER_CID]) is None


@pytest.mark.parametrize("name", sorted(NOT_POD))
def test_non_pod_processes_never_match(name):
    lines = parse_proc_cgroup(NOT_POD[name])
    assert lines, name
    assert [kube_cgroup_ids(line.path) for line in lines] == [None] * len(lines), name
    assert cgroup_matches(lines, UID, [CID, NODE_CID]) is None, name


def test_colon_form_v1_matches_on_every_controller_line():
    # runc's fs driver put the colon directory under its own cgroup: /system.slice/containerd.service
    # where systemd accounts the controller, / elsewhere; both spellings name the same container.
    lines = parse_proc_cgroup(CGROUP_FILES["v1-colon-containerd"])
    roots = {line.path.rsplit("/", 1)[0] for line in lines}
    assert roots == {"", "/system.slice/containerd.service"}
    assert all(kube_cgroup_ids(line.path) == (UID, CID) for line in lines)


def test_colon_form_names_the_pause_container_by_uid_only():
    pause = parse_proc_cgroup(CGROUP_FILES["v2-colon-containerd"].replace(CID, SANDBOX))
    m = cgroup_matches(pause, UID, [CID])
    assert (m.kind, m.pod_uid, m.container_id) == ("pod", UID, SANDBOX)


def test_container_match_wins_over_pod_match():
    lines = parse_proc_cgroup(CGROUP_FILES["v2-systemd-containerd"])
    m = cgroup_matches(lines, UID, [CID])
    assert m.kind == "container"


def test_short_or_foreign_ids_do_not_match():
    lines = parse_proc_cgroup(CGROUP_FILES["v1-cgroupfs-containerd"])
    assert cgroup_matches(lines, "", [CID[:8]]) is None  # too short to be unambiguous
    assert cgroup_matches(lines, "", [OTHER_CID]) is None
    assert cgroup_matches(lines, "", []) is None


def test_pause_container_matches_by_uid_only():
    pause = parse_proc_cgroup(CGROUP_FILES["v1-cgroupfs-containerd"].replace(CID, SANDBOX))
    m = cgroup_matches(pause, UID, [CID])
    assert m.kind == "pod" and m.container_id == SANDBOX


# -- the pieces of the colon and cgroupns handling -----------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("kubepods-burstable-podab.slice", ["kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-podab.slice"]),
    ("system.slice", ["system.slice"]),
    ("-.slice", []),                      # the root slice
    ("a--b.slice", None), ("-a.slice", None), ("a-.slice", None),  # systemd refuses empty words
    (".slice", None), ("kubepods", None), ("a/b.slice", None),
])
def test_expand_slice_like_runc(name, expected):
    assert pids._expand_slice(name) == expected


def test_colon_form_with_a_slice_name_stays_a_slice():
    # runc getUnitName: `slice:prefix:name.slice` names a slice, not `<prefix>-<name>.scope`
    assert pids._expand_colon_form("system.slice:crio:machine.slice") == ["system.slice", "machine.slice"]


@pytest.mark.parametrize("part", ["web:8080", "a:b", "x.slice::id", "x.slice:p:", "a--b.slice:p:id", "nope:p:id"])
def test_components_that_only_look_like_the_colon_form_are_kept(part):
    assert pids._expand_colon_form(part) == [part]


@pytest.mark.parametrize("path", [
    f"/../../system.slice/pod{UID}/{CID}",           # hidden ancestors, but not a kubelet layout below
    f"/../../besteffort/burstable/pod{UID}/{CID}",   # one QoS level at most
    f"/../../../burstable/pod{UID}",                 # the pod cgroup itself
    f"/burstable/pod{UID}/{CID}",                    # no `..`: kubepods is not hidden, it is absent
    f"/../pod{UID}/conmon-{CID}",                    # no container level under the pod
])
def test_cgroupns_relative_paths_need_a_kubelet_layout(path):
    assert kube_cgroup_ids(path) is None


def test_cgroupns_relative_guaranteed_pod_from_another_qos():
    # reader in /kubepods/besteffort/pod<x>/<y>, target /kubepods/pod<uid>/<id>
    assert kube_cgroup_ids(f"/../../../pod{UID}/{CID}") == (UID, CID)


def test_nested_node_container_ids_above_kubepods_are_not_the_container():
    # a kind node's own docker-<id>.scope sits above its kubepods levels
    lines = parse_proc_cgroup(CGROUP_FILES["v2-systemd-kind-host-view"])
    assert cgroup_matches(lines, "", [NODE_CID]) is None
    assert cgroup_matches(lines, "", [CID]).container_id == CID


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
    fake.process(400, CGROUP_FILES["v1-cgroupfs-containerd"].replace(CID, SANDBOX), netns="pod")
    fake.process(420, CGROUP_FILES["v1-cgroupfs-containerd"], netns="pod")
    fake.process(500, f"0::/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CID}\n", netns="other")


def test_scan_prefers_the_container_process(fake):
    _node(fake)
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(f"containerd://{CID}",)), **fake.kwargs())
    assert res.pid == 420 and res.method == "cgroup"
    assert res.netns_path == f"{fake.proc}/420/ns/net"
    assert any("no-such-crictl-here not found" in e for e in res.evidence)
    assert any("pid 420" in e and CID[:13] in e for e in res.evidence)


def test_scan_prefers_a_process_at_the_container_level(fake):
    # systemd inside the container: a lower pid in a sub-cgroup, maybe with a netns of its own
    # (PrivateNetwork=yes); the container's own level is what the pod's network is.
    sub = f"0::/kubepods/besteffort/pod{UID}/{CID}/system.slice/worker.service\n"
    fake.process(410, sub, netns="private")
    fake.process(420, f"0::/kubepods/besteffort/pod{UID}/{CID}\n", netns="pod")
    res = resolve_pod_pid(PodRef("default", "web-0", container_ids=(CID,)), **fake.kwargs())
    assert res.pid == 420


def test_upper_case_runtime_schemes_are_dropped():
    assert PodRef("default", "web-0", container_ids=(f"CONTAINERD://{CID.upper()}",)).container_ids == (CID,)
    lines = parse_proc_cgroup(CGROUP_FILES["v2-cgroupfs-containerd"])
    assert cgroup_matches(lines, "", [f"Docker://{CID[:12]}"]).kind == "container"


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


def test_scan_on_a_colon_form_node(fake):
    # containerd >= 1.3 under a systemd kubelet, runc without SystemdCgroup (cgroup v1): the shim
    # sits in containerd.service, the pod's cgroups are colon-named directories below it.
    fake.process(1, NOT_POD["init"])
    fake.process(230, NOT_POD["containerd-shim-v1-colon-node"])
    fake.process(400, CGROUP_FILES["v1-colon-containerd"].replace(CID, SANDBOX), netns="pod")
    fake.process(420, CGROUP_FILES["v1-colon-containerd"], netns="pod")
    pod = PodRef("default", "web-0", uid=UID, container_ids=(f"containerd://{CID}",))
    res = resolve_pod_pid(pod, **fake.kwargs())
    assert (res.method, res.pid) == ("cgroup", 420)
    assert any(f":cri-containerd:{CID}" in e for e in res.evidence)
    uid_only = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(OTHER_CID,)), **fake.kwargs())
    assert uid_only.pid == 400


def test_scan_from_inside_a_cgroup_namespace(fake):
    # What an unprivileged hostPID debug pod reads on a v2 node (cgroupfs driver): everything
    # relative to its own cgroup, /kubepods/besteffort/pod<x>/<y>.
    fake.process(1, NOT_POD["cgroupns-system-service"].replace("kubelet.service", "init.scope"))
    fake.process(7, "0::/\n")  # the reader itself
    fake.process(420, CGROUP_FILES["v2-cgroupns-cgroupfs"], netns="pod")
    fake.process(500, f"0::/../../pod{OTHER_UID}/{OTHER_CID}\n", netns="other")
    res = resolve_pod_pid(PodRef("default", "web-0", uid=UID, container_ids=(CID,)), **fake.kwargs())
    assert (res.method, res.pid) == ("cgroup", 420)
    other = resolve_pod_pid(PodRef("default", "db-0", uid=OTHER_UID, container_ids=(OTHER_CID,)), **fake.kwargs())
    assert other.pid == 500


def test_cgroups_per_qos_false_pods_are_left_to_the_netns_method(fake, monkeypatch):
    # kubelet --cgroups-per-qos=false: containerd's default /k8s.io/<id> names no pod; not guessed.
    fake.process(1, NOT_POD["init"])
    fake.process(420, NOT_POD["cgroups-per-qos-false-containerd"], netns="cni-1")
    fake.netns("cni-1", named=True)
    monkeypatch.setattr(pids, "_netns_addresses", _addresses({"cni-1": ["10.0.1.12"]}))
    pod = PodRef("default", "web-0", uid=UID, container_ids=(CID,), pod_ip="10.0.1.12")
    res = resolve_pod_pid(pod, **fake.kwargs())
    assert (res.method, res.pid, res.netns_path) == ("netns", 420, str(fake.run_netns / "cni-1"))
    assert any(e.startswith("cgroup: none of 2 processes") for e in res.evidence)


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
