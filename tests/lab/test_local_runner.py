"""LocalRunner and the pod → pid resolver against real namespaces, processes and cgroups (root)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from netconform.errors import PidNotFound, ResolveError
from netconform.pids import PodRef, resolve_pod_pid
from netconform.runners.base import runner_class
from netconform.runners.local import LocalRunner, close_all, runner_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, setns, cgroups)"),
]

T = "tests.lab.probes_for_tests"
# Limit for a call that is expected to answer, worker start included, and for a process that is
# expected to end: generous for a loaded 2-core machine; only a broken runner waits it out.
# (Calls that are meant to time out pass their own short timeout.)
CALL = 120.0
GONE_WITHIN = 30.0
POD_IP = "203.0.113.77"  # TEST-NET-3: neither the root namespace's nor any lab's


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture
def pod_netns(make_netns):
    """A namespace that looks like a pod's: eth0 (a veth, this kernel has no dummy) with POD_IP."""
    ns = make_netns("run")
    _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
    _ip("-n", ns, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    return ns


@pytest.fixture
def runners():
    """Runners made by a test; closed afterwards even when an assertion failed."""
    made: list[LocalRunner] = []

    def make(path: str) -> LocalRunner:
        made.append(LocalRunner(path, start_timeout=CALL))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def process_in(request):
    """Start `sleep` inside a named netns; killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(ns: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "300"])
        procs.append(p)
        target = os.stat(f"/run/netns/{ns}").st_ino
        deadline = time.monotonic() + GONE_WITHIN
        while time.monotonic() < deadline:  # `ip netns exec` has to setns and exec first
            try:
                if os.stat(f"/proc/{p.pid}/ns/net").st_ino == target and _comm(p.pid) == "sleep":
                    return p
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise AssertionError(f"sleep never entered {ns}")

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=GONE_WITHIN)


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _gone(pid: int, within: float = GONE_WITHIN) -> bool:
    """True once /proc/<pid> is gone or a zombie (reaping an orphan is init's business)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def _my_netns() -> str:
    return f"/proc/{os.getpid()}/ns/net"


# -- LocalRunner -----------------------------------------------------------------------------
def test_addresses_come_from_the_target_namespace(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    call = r.call("netinfo:addresses", {}, timeout=CALL)
    assert call.status == "ok", call
    got = {(a["ifname"], a["address"], a["prefixlen"]) for a in call.value}
    assert ("eth0", POD_IP, 24) in got
    assert {a["ifname"] for a in call.value} <= {"lo", "eth0", "peer0"}
    root = runners(_my_netns()).call("netinfo:addresses", {}, timeout=CALL)
    assert root.status == "ok"
    assert POD_IP not in {a["address"] for a in root.value}
    assert {a["address"] for a in root.value} != {a["address"] for a in call.value}
    assert call.where.startswith(f"local /run/netns/{pod_netns} (net:[{os.stat(f'/run/netns/{pod_netns}').st_ino}])")


def test_links_and_routes_of_the_namespace(pod_netns, runners):
    _ip("-n", pod_netns, "link", "set", "peer0", "up")
    _ip("-n", pod_netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
    r = runners(f"/run/netns/{pod_netns}")
    links = {link["name"]: link for link in r.call("netinfo:links", {}, CALL).value}
    assert set(links) == {"lo", "eth0", "peer0"}
    assert links["eth0"]["kind"] == "veth" and links["eth0"]["state"] == "up"
    assert links["eth0"]["parent_index"] == links["peer0"]["index"]
    routes = r.call("netinfo:routes", {"family": "inet"}, CALL).value
    default = next(x for x in routes if x["dst"] == "default")
    assert (default["gateway"], default["dev"], default["onlink"]) == ("169.254.1.1", "eth0", True)


def test_timeout_kills_the_worker_and_the_next_call_works(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    first = r.call(f"{T}:whoami", {}, CALL)
    assert first.status == "ok"
    # the probe sleeps 60 s: "timeout" (not "ok") proves the runner cut it off
    call = r.call(f"{T}:sleep", {"seconds": 60}, timeout=1.0)
    assert call.status == "timeout" and call.error_type == "Timeout"
    assert _gone(first.value["pid"])
    again = r.call(f"{T}:whoami", {}, CALL)
    assert again.status == "ok" and again.value["pid"] != first.value["pid"]
    assert again.value["netns_inode"] == first.value["netns_inode"]
    assert r.spawns == 2


def test_calls_run_at_once_in_one_worker(pod_netns, runners):
    """Four calls from four threads are inside the worker together (a barrier of four releases
    only then), all in the target namespace, served by one worker process."""
    r = runners(f"/run/netns/{pod_netns}")
    pid = r.call(f"{T}:whoami", {}, CALL).value["pid"]
    results: list = [None] * 4

    def call(i: int) -> None:
        results[i] = r.call(f"{T}:barrier", {"name": "four", "parties": 4, "timeout": 60}, CALL)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * CALL)
    assert all(c is not None and c.status == "ok" for c in results), results
    assert len({c.value for c in results}) == 4  # four probe threads
    assert r.call(f"{T}:whoami", {}, CALL).value["pid"] == pid and r.spawns == 1


def test_a_timeout_does_not_cut_off_the_other_calls(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    pid = r.call(f"{T}:whoami", {}, CALL).value["pid"]
    slow: list = []
    t = threading.Thread(target=lambda: slow.append(r.call(f"{T}:barrier", {"name": "late", "parties": 2,
                                                                          "timeout": 60}, CALL)))
    t.start()
    deadline = time.monotonic() + CALL
    while r._worker.in_flight() == 0 and time.monotonic() < deadline:  # the slow call is in the worker
        time.sleep(0.01)
    hung = r.call(f"{T}:sleep", {"seconds": 60}, timeout=0.5)
    assert hung.status == "timeout" and "restarted once its other calls end" in hung.error
    assert not _gone(pid, within=0.5)  # the slow call still runs there
    # release the slow call: the barrier's second party
    assert r.call(f"{T}:barrier", {"name": "late", "parties": 2, "timeout": 60}, CALL).status == "ok"
    t.join(CALL)
    assert slow and slow[0].status == "ok"
    assert _gone(pid)  # idle now: the worker with the hung probe is gone
    again = r.call(f"{T}:whoami", {}, CALL)
    assert again.status == "ok" and again.value["pid"] != pid


def test_raising_probe_is_an_error_result(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    call = r.call(f"{T}:boom", {"message": "socket exploded"}, CALL)
    assert (call.status, call.error_type, call.error) == ("error", "RuntimeError", "socket exploded")
    assert "probes_for_tests.py" in call.traceback
    assert r.call(f"{T}:whoami", {}, CALL).status == "ok"
    assert r.spawns == 1  # an exception does not cost the worker
    missing = r.call("no_such_probe_module:run", {}, CALL)
    assert (missing.status, missing.error_type) == ("error", "ModuleNotFoundError")
    bad_value = r.call(f"{T}:non_jsonable", {}, CALL)
    assert bad_value.status == "error" and "not JSON-able" in bad_value.error


def test_worker_death_is_an_error_and_respawns(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    call = r.call(f"{T}:die", {"code": 7}, CALL)
    assert (call.status, call.error_type) == ("error", "WorkerDied")
    assert "exited with code 7" in call.error
    assert r.call(f"{T}:whoami", {}, CALL).status == "ok"


def test_probe_output_cannot_corrupt_the_protocol(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    call = r.call(f"{T}:chatty", {}, CALL)
    assert call.status == "ok" and call.value == ""  # stdin is /dev/null for probes
    assert r.call(f"{T}:whoami", {}, CALL).status == "ok"


def test_caller_bugs_raise(pod_netns, runners):
    r = runners(f"/run/netns/{pod_netns}")
    with pytest.raises(ValueError):
        r.call("not a probe name", {}, CALL)
    with pytest.raises(TypeError):
        r.call(f"{T}:sleep", {"seconds": object()}, CALL)
    with pytest.raises(ValueError):
        r.call(f"{T}:sleep", {"seconds": 0}, 0)


def test_worker_is_warm_but_lean(pod_netns, runners):
    # The probes (pyroute2 and dnspython too) are imported before "ready", so no probe pays an
    # import inside its timeout; nothing of the suite's own stack is, and never scapy (it caches
    # the interfaces of whatever namespace it is imported in).
    r = runners(f"/run/netns/{pod_netns}")
    loaded = r.call(f"{T}:loaded", {"prefixes": ["scapy", "pyroute2", "dns", "kubernetes", "boto3", "pytest"]},
                    CALL).value
    tops = {m.split(".")[0] for m in loaded}
    assert tops == {"pyroute2", "dns"}, loaded


def test_worker_runs_ahead_of_the_suite(pod_netns, runners):
    from netconform.runners._worker import PROBE_NICE

    r = runners(f"/run/netns/{pod_netns}")
    pid = r.call(f"{T}:whoami", {}, CALL).value["pid"]
    assert os.getpriority(os.PRIO_PROCESS, pid) == PROBE_NICE  # setpriority(2) sets it outright (root)


def test_concurrent_calls_from_threads(pod_netns):
    paths = [f"/run/netns/{pod_netns}", _my_netns()]
    want = {p: os.stat(p).st_ino for p in paths}
    errors: list[str] = []
    seen: dict[str, set[int]] = {p: set() for p in paths}

    def hammer(i: int) -> None:
        for n in range(15):
            path = paths[(i + n) % 2]
            call = runner_for(path).call(f"{T}:whoami", {}, CALL)
            if call.status != "ok" or call.value["netns_inode"] != want[path]:
                errors.append(f"{path}: {call}")
            else:
                seen[path].add(call.value["pid"])

    try:
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10 * CALL)
        assert not errors, errors[:3]
        assert all(len(pids_) == 1 for pids_ in seen.values()), seen  # one worker per namespace
    finally:
        close_all()


def test_pool_shares_one_worker_per_namespace(pod_netns, process_in):
    p = process_in(pod_netns)
    try:
        a = runner_for(f"/run/netns/{pod_netns}")
        b = runner_for(f"/proc/{p.pid}/ns/net")
        assert a is b
        assert runner_for(_my_netns()) is not a
        with pytest.raises(ResolveError):
            runner_for("/run/netns/nct-does-not-exist")
    finally:
        close_all()


def test_worker_survives_the_thread_that_started_it(pod_netns):
    try:
        r = runner_for(f"/run/netns/{pod_netns}")
        box = {}
        t = threading.Thread(target=lambda: box.update(call=r.call(f"{T}:whoami", {}, CALL)))
        t.start()
        t.join(CALL)
        pid = box["call"].value["pid"]
        time.sleep(0.3)  # PR_SET_PDEATHSIG would have fired by now if that thread had forked it
        assert not _gone(pid, within=0.1)
        assert r.call(f"{T}:whoami", {}, CALL).value["pid"] == pid
    finally:
        close_all()


def test_close_all_ends_the_workers(pod_netns):
    pids_ = [runner_for(p).call(f"{T}:whoami", {}, CALL).value["pid"]
             for p in (f"/run/netns/{pod_netns}", _my_netns())]
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids_)
    close_all()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids_)  # reaped, not just killed


def test_worker_dies_with_its_parent(pod_netns):
    script = ("import sys, time\n"
              "from netconform.runners.local import runner_for\n"
              "r = runner_for(sys.argv[1])\n"
              "print(r.call('tests.lab.probes_for_tests:whoami', {}, 120).value['pid'], flush=True)\n"
              "r.call('tests.lab.probes_for_tests:sleep', {'seconds': 300}, 600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, f"/run/netns/{pod_netns}"], stdout=subprocess.PIPE,
                              text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        worker = int(parent.stdout.readline())
        assert not _gone(worker, within=0.2)
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only PDEATHSIG can end the worker
        parent.wait(GONE_WITHIN)
        assert _gone(worker), f"worker {worker} outlived its parent"
    finally:
        parent.kill()
        parent.wait(GONE_WITHIN)
        parent.stdout.close()


def test_runner_refuses_a_path_that_now_names_another_namespace(make_netns, tmp_path):
    a, b = make_netns("ida"), make_netns("idb")
    link = tmp_path / "netns-link"
    link.symlink_to(f"/run/netns/{a}")
    r = LocalRunner(str(link), start_timeout=CALL)
    try:
        assert r.call(f"{T}:whoami", {}, CALL).status == "ok"
        link.unlink()
        link.symlink_to(f"/run/netns/{b}")  # as /proc/<pid>/ns/net does when the pid is reused
        assert r.call(f"{T}:sleep", {"seconds": 30}, 0.5).status == "timeout"  # forces a respawn
        call = r.call(f"{T}:whoami", {}, CALL)
        assert (call.status, call.error_type) == ("error", "ResolveError")
        assert "now names namespace" in call.error and "pid was reused" in call.error
        link.unlink()  # and once the path is gone altogether
        call = r.call(f"{T}:whoami", {}, CALL)
        assert call.status == "error" and "cannot enter" in call.error
    finally:
        r.close()
    assert r.call(f"{T}:whoami", {}, CALL).error_type == "RunnerClosed"


def test_registered_by_name():
    assert runner_class("local") is LocalRunner


# -- pod -> pid on real processes and cgroups ---------------------------------------------------
@pytest.fixture
def pod_cgroup(request):
    """Make kubelet-style cgroup dirs for a fake pod container, under a `nct-*` root; removed after."""
    made: list[str] = []

    def make(hierarchy: str, layout: str, uid: str, cid: str) -> str:
        root = os.path.join("/sys/fs/cgroup", hierarchy)
        if not os.path.isdir(root) or not os.access(root, os.W_OK):
            pytest.skip(f"cgroup hierarchy {root} is not writable here")
        top = os.path.join(root, f"nct-{secrets.token_hex(3)}")
        parts = ({"cgroupfs": ["kubepods", "besteffort", f"pod{uid}", cid],
                  "systemd": ["kubepods.slice", "kubepods-besteffort.slice",
                              f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice",
                              f"cri-containerd-{cid}.scope"]})[layout]
        os.mkdir(top)
        made.append(top)
        path = top
        for part in parts:
            path = os.path.join(path, part)
            os.mkdir(path)
            made.append(path)
        return path

    yield make
    for path in reversed(made):  # leaves first
        # Whatever still runs in it goes back to the hierarchy's root, so rmdir cannot hit EBUSY
        # (fixture teardown order is not ours to rely on).
        root = os.path.join("/sys/fs/cgroup", os.path.relpath(path, "/sys/fs/cgroup").split(os.sep)[0])
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                stragglers = f.read().split()
        except FileNotFoundError:
            continue
        for pid in stragglers:
            try:
                _join(root, int(pid))
            except OSError:  # exited meanwhile
                pass
        os.rmdir(path)


def _join(cgroup: str, pid: int) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(pid))


@pytest.mark.parametrize("hierarchy,layout", [("pids", "cgroupfs"), ("unified", "systemd")])
def test_resolve_pod_pid_by_cgroup(pod_netns, process_in, pod_cgroup, tmp_path, hierarchy, layout):
    p = process_in(pod_netns)
    uid, cid = str(uuid.uuid4()), secrets.token_hex(32)
    cgroup = pod_cgroup(hierarchy, layout, uid, cid)
    # Fixtures finalise in reverse order: pod_cgroup removes its dirs after process_in killed p.
    _join(cgroup, p.pid)
    with open(f"/proc/{p.pid}/cgroup") as f:
        assert "/kubepods" in f.read()
    run_netns = tmp_path / "netns"  # only our namespace: the address scan must not read other labs'
    run_netns.mkdir()
    (run_netns / pod_netns).symlink_to(f"/run/netns/{pod_netns}")
    pod = PodRef("default", "web-0", uid=uid, container_ids=(f"containerd://{cid}",), pod_ip=POD_IP)
    res = resolve_pod_pid(pod, run_netns=str(run_netns), crictl="crictl-is-not-installed")
    assert (res.method, res.pid) == ("cgroup", p.pid), res.evidence
    assert res.netns_path == str(run_netns / pod_netns)  # the stable name, not /proc/<pid>
    # the pod's other containers are found by uid alone
    res = resolve_pod_pid(PodRef("default", "web-0", uid=uid.replace("-", "_")), run_netns=str(run_netns),
                          crictl="crictl-is-not-installed")
    assert (res.method, res.pid) == ("cgroup", p.pid)


def test_resolve_pod_pid_falls_back_to_the_netns_holding_the_ip(pod_netns, process_in, make_netns, tmp_path):
    p = process_in(pod_netns)
    empty = make_netns("empty")
    run_netns = tmp_path / "netns"
    run_netns.mkdir()
    for ns in (pod_netns, empty):
        (run_netns / ns).symlink_to(f"/run/netns/{ns}")
    pod = PodRef("default", "web-0", uid=str(uuid.uuid4()), container_ids=(secrets.token_hex(32),), pod_ip=POD_IP)
    res = resolve_pod_pid(pod, run_netns=str(run_netns), crictl="crictl-is-not-installed")
    assert (res.method, res.pid, res.netns_path) == ("netns", p.pid, str(run_netns / pod_netns)), res.evidence
    assert [e.split(":")[0] for e in res.evidence] == ["cri", "cgroup", "netns"]
    # the path it found is directly usable by a runner
    try:
        call = runner_for(res.netns_path).call("netinfo:addresses", {"ifname": "eth0", "family": "inet"}, CALL)
        assert [a["address"] for a in call.value] == [POD_IP]
    finally:
        close_all()
    with pytest.raises(PidNotFound, match="no process or namespace of pod default/web-0"):
        resolve_pod_pid(PodRef("default", "web-0", uid=str(uuid.uuid4()), pod_ip="203.0.113.78"),
                        run_netns=str(run_netns), crictl="crictl-is-not-installed")


def test_address_scan_child_reports_every_namespace(pod_netns, make_netns, tmp_path):
    from netconform.pids import _netns_addresses

    other = make_netns("scan")
    out = _netns_addresses([f"/run/netns/{pod_netns}", f"/run/netns/{other}", str(tmp_path / "missing")], 20)
    assert POD_IP in out[f"/run/netns/{pod_netns}"]
    assert out[f"/run/netns/{other}"] == ["127.0.0.1", "::1"]
    assert "error" in out[str(tmp_path / "missing")]
    assert json.dumps(out)
