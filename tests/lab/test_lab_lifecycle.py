"""The lab's life cycle: `up` builds, `down` (and every crash path) leaves nothing behind.

"Nothing" is checked where a lab can leave things: its namespaces `nc-<lab>-*`, its processes
(the daemon, every pod process, anything else that ran in its namespaces or cgroups), its
cgroups `nc-<lab>` / `nc-<lab>.slice` in every hierarchy, `/etc/netns`, its state folder — and
the root namespace, which a lab must never change (iptables/nft, addresses, links, routes, rules,
nf_conntrack_max).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from netconform.lab.state import lab_paths
from netconform.runners.local import close_all
from tests.conftest import requires_root
from tests.lab.conftest import (
    API_TIMEOUT,
    CLI_TIMEOUT,
    FLAVORS,
    LAB_CLI,
    RUN_NETNS,
    RunningLab,
    cli,
    netns_inode,
    remove_lab,
    run_probe,
)

pytestmark = [requires_root, pytest.mark.lab]

CGROUP_ROOT = Path("/sys/fs/cgroup")
HIERARCHIES = ("pids", "systemd", "unified")
ETC_NETNS = Path("/etc/netns")
STATE_ROOT = Path("/run/netconform/labs")


# -- processes --------------------------------------------------------------------------------
def proc_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in ticks): survives pid reuse; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return pid, int(fields[19])


# Grace for a process that was just killed to be gone: instant on an idle machine, but a SIGKILLed
# process on a loaded one only exits once it is scheduled again. Only a real leftover waits it out.
GONE_WITHIN = 30.0


def still_running(identity: tuple[int, int], within: float = GONE_WITHIN) -> bool:
    """True if that very process (same start time) is still alive after `within` seconds of grace
    (SIGKILLed orphans need a moment to be reaped)."""
    deadline = time.monotonic() + within
    while True:
        if proc_identity(identity[0]) != identity:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


# The product's probe workers and namespace scanners (`python -m netconform.runners._worker serve
# /run/netns/X`, `... addresses /run/netns/A /run/netns/B ...`) name namespaces on their command
# line, and any test process on this machine may run one that lists every namespace, this lab's
# included. They belong to whoever started them, never to a lab.
FOREIGN = re.compile(r"-m netconform\.runners\._worker ")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_marked(name: str) -> dict[int, str]:
    """Live processes that belong to lab `name` by their cgroup or their command line."""
    cg = re.compile(rf"/nc-{name}(\.slice)?(/|$)", re.M)
    marks = (f"{STATE_ROOT}/{name}", f"/run/netns/nc-{name}-")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or proc_identity(int(entry)) is None:
            continue
        try:
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cg.search(cgroup) or (any(m in cmd for m in marks) and not FOREIGN.search(cmd)):
            found[int(entry)] = cmd.strip()[:160]
    return found


def lab_namespaces(name: str) -> list[str]:
    return sorted(n for n in os.listdir(RUN_NETNS) if n.startswith(f"nc-{name}-")) if RUN_NETNS.is_dir() else []


def lab_cgroups(name: str) -> list[Path]:
    return [CGROUP_ROOT / h / d for h in HIERARCHIES for d in (f"nc-{name}", f"nc-{name}.slice")
            if (CGROUP_ROOT / h / d).exists()]


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


@dataclass
class Footprint:
    """What a running lab occupies, recorded before it is taken down."""

    name: str
    namespaces: list[str]
    processes: dict[tuple[int, int], str] = field(default_factory=dict)  # identity -> what it is
    cgroups: list[Path] = field(default_factory=list)


def footprint(name: str, status: dict | None) -> Footprint:
    fp = Footprint(name, lab_namespaces(name), cgroups=lab_cgroups(name))

    def add(pid: int | None, what: str) -> None:
        ident = proc_identity(pid) if pid else None
        if ident and not FOREIGN.search(_cmdline(pid)):
            fp.processes.setdefault(ident, what)

    daemon_pid = (STATE_ROOT / name / "daemon.pid")
    if daemon_pid.exists():
        add(int(daemon_pid.read_text()), "lab daemon")
    for p in (status or {}).get("pods", []):
        add(p["pid"], f"pod {p['namespace']}/{p['name']}")
    for ns in fp.namespaces:
        for pid in netns_pids(ns):
            add(pid, f"process in {ns}")
    for pid, cmd in processes_marked(name).items():
        add(pid, f"marked process: {cmd}")
    return fp


def assert_footprint_real(fp: Footprint, status: dict) -> None:
    """The lab really had what we will check is gone (else the 'gone' checks prove nothing)."""
    want = {n["netns"] for n in status["nodes"]} | {p["netns"] for p in status["pods"]}
    assert want <= set(fp.namespaces), f"namespaces missing while running: {want - set(fp.namespaces)}"
    assert f"nc-{fp.name}-vpc" in fp.namespaces
    kinds = set(fp.processes.values())
    assert "lab daemon" in kinds
    assert all(f"pod {p['namespace']}/{p['name']}" in kinds for p in status["pods"]), \
        "some pod has no live process while the lab runs"
    present = [h for h in HIERARCHIES if (CGROUP_ROOT / h / "cgroup.procs").exists()]
    assert {c.parent.name for c in fp.cgroups} == set(present), f"lab cgroups {fp.cgroups} vs hierarchies {present}"


def leftovers(*fps: Footprint, expect_state_gone: bool = True) -> list[str]:
    """Everything of these labs still present; [] when clean."""
    left: list[str] = []
    for fp in fps:
        name = fp.name
        left += [f"netns {n}" for n in lab_namespaces(name)]
        left += [f"cgroup {c}" for c in lab_cgroups(name)]
        if ETC_NETNS.is_dir():
            left += [f"/etc/netns entry {p}" for p in ETC_NETNS.glob(f"nc-{name}-*")]
        if expect_state_gone and (STATE_ROOT / name).exists():
            left.append(f"state folder {STATE_ROOT / name}")
        left += [f"process {ident[0]} ({what})" for ident, what in fp.processes.items() if still_running(ident)]
        marked = {proc_identity(pid): cmd for pid, cmd in processes_marked(name).items()}
        left += [f"process {ident[0]} still marked as lab {name}: {cmd}" for ident, cmd in marked.items()
                 if ident and still_running(ident)]
    return left


# -- the root namespace -----------------------------------------------------------------------
def _out(*argv: str) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return f"<{argv[0]} not installed>"
    return r.stdout if r.returncode == 0 else f"<{' '.join(argv)} failed: {r.stderr.strip()}>"


def _rules_text(text: str) -> str:
    """iptables-save output reduced to configuration: rules, custom chains and non-default
    policies per table. Dropped: the generated-on comment, packet/byte counters (traffic moves
    them) and empty built-in chains, which appear in every namespace when a table's module is
    loaded (a lab's first iptables call may load it; that is not a change to the root namespace)."""
    out, table = [], ""
    for ln in text.splitlines():
        if ln.startswith("*"):
            table = ln
        elif ln.startswith("-A ") or (ln.startswith(":") and not re.match(r"^:\S+ ACCEPT \[", ln)):
            out.append(table + " " + re.sub(r"\[\d+:\d+\]", "[]", ln))
    return "\n".join(out)


def root_state() -> dict[str, str]:
    """The root namespace's network configuration, in a form that only changes when the config does."""
    conntrack_max = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    return {
        "iptables-save": _rules_text(_out("iptables-save")),
        "iptables-legacy-save": _rules_text(_out("iptables-legacy-save")),
        "ip6tables-save": _rules_text(_out("ip6tables-save")),
        "nft list ruleset": _out("nft", "list", "ruleset"),
        "ip -br addr": _out("ip", "-br", "addr"),
        "ip -br link": _out("ip", "-br", "link"),
        "ip -4 route (all tables)": _out("ip", "-4", "route", "show", "table", "all"),
        "ip -6 route (all tables)": _out("ip", "-6", "route", "show", "table", "all"),
        "ip rule": _out("ip", "rule"),
        "nf_conntrack_max": conntrack_max.read_text().strip() if conntrack_max.exists() else "<not loaded>",
    }


def assert_root_unchanged(before: dict[str, str]) -> None:
    # Retried briefly: the machine is shared, and a link that another process is moving between
    # namespaces at this very moment is not ours; a change made by a lab stays.
    if before["nf_conntrack_max"] == "<not loaded>":  # the lab's first iptables rule loads the module
        before = {k: v for k, v in before.items() if k != "nf_conntrack_max"}
    deadline = time.monotonic() + GONE_WITHIN
    while True:
        after = root_state()
        changed = [k for k in before if before[k] != after[k]]
        if not changed:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    changed = [k for k in before if before[k] != after[k]]
    detail = "\n".join(f"--- {k} before:\n{before[k]}\n--- {k} after:\n{after[k]}" for k in changed)
    pytest.fail(f"the root namespace changed ({', '.join(changed)}):\n{detail}")


# -- helpers on running labs -------------------------------------------------------------------
def cli_status(name: str) -> dict:
    r = cli("status", "--name", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def lab_answers(lab: RunningLab) -> None:
    """The lab works end to end: its API lists its pods and its cluster DNS answers a pod."""
    pods = lab.core().list_pod_for_all_namespaces(_request_timeout=API_TIMEOUT).items
    assert {(p.metadata.namespace, p.metadata.name) for p in pods} == \
        {(p["namespace"], p["name"]) for p in lab.status["pods"]}
    client = lab.web_pods[0]
    for _ in range(3):  # a busy machine may make one answer late; a broken lab never answers
        answer = run_probe(client["netns"], "dns:query", server=lab.status["dns_service_ip"],
                           name=f"kubernetes.default.svc.{lab.status['cluster_domain']}.", timeout=10.0)
        if answer["ok"]:
            break
    assert answer["ok"] and answer["answers"] == [lab.status["kubernetes_service_ip"]], answer


# -- up / down ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", FLAVORS)
def test_up_then_down_leaves_nothing_behind_and_spares_the_other_lab(flavor, lab, make_lab):
    """CLI `up` a lab next to another running lab of the same flavour (same IPs, same interface
    names), break it (faults, a pod created through the API), CLI `down`: every trace of it is
    gone, the root namespace is exactly as before, and the other lab still runs and answers."""
    from kubernetes import client, config

    from netconform.lab.cli import lab_fault

    other = lab(flavor)
    before = root_state()
    name = make_lab.reserve()
    up = cli("up", "--name", name, "--flavor", flavor)
    assert up.returncode == 0, up.stderr
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, re.M))
    assert exports["NETCONFORM_LAB"] == name and exports["KUBECONFIG"].endswith(f"/{name}/kubeconfig")
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert exports["AWS_ENDPOINT_URL"] != other.env["AWS_ENDPOINT_URL"]

    status = cli_status(name)
    this = RunningLab(name, flavor, lab_paths(name), exports, status)
    lab_answers(this)  # both labs answer, side by side
    lab_answers(other)
    # Leave the lab in a messy state on purpose: active faults and a runtime-created pod.
    lab_fault(name, "gateway-down")
    lab_fault(name, "dns-udp-blocked")
    lab_fault(name, "kube-dns-dnat-missing")
    api = config.new_client_from_config(config_file=exports["KUBECONFIG"])
    node = status["nodes"][-1]["name"]
    client.CoreV1Api(api).create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "leftover-check"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]}})
    api.close()
    close_all()  # our own probe workers sit in both labs' namespaces: not part of either lab
    status = cli_status(name)
    assert len(status["faults"]) == 3
    assert any(p["name"] == "leftover-check" and p["pid"] for p in status["pods"])
    fp = footprint(name, status)
    assert_footprint_real(fp, status)
    other_fp = footprint(other.name, other.read_status())
    assert_footprint_real(other_fp, other.read_status())
    assert not set(fp.namespaces) & set(other_fp.namespaces)

    down = cli("down", "--name", name)
    assert (down.returncode, down.stdout.strip(), down.stderr) == (0, f"lab {name} down", "")
    left = leftovers(fp)
    assert not left, "down left these behind:\n" + "\n".join(left)
    assert_root_unchanged(before)

    # the other lab lost nothing: its daemon, pods and what runs in its namespaces (processes that
    # merely name its namespaces on their command line come and go with their own work)
    assert lab_namespaces(other.name) == other_fp.namespaces
    assert [what for ident, what in other_fp.processes.items()
            if not what.startswith("marked process") and not still_running(ident, within=0)] == []
    assert [c for c in other_fp.cgroups if not c.exists()] == []
    assert other.read_status()["state"] == "running"
    lab_answers(other)


def test_sigkilled_daemon_is_replaced_by_up_and_removed_by_down(make_lab):
    """A lab whose daemon died by SIGKILL: its pods and namespaces live on (stale). `up` of the
    same name replaces it cleanly; after a second SIGKILL, `down --name` removes everything."""
    first = make_lab("vpc-cni")
    name = first.name
    fp1 = footprint(name, first.status)
    assert_footprint_real(fp1, first.status)

    daemon = proc_identity(first.status["pid"])
    assert daemon is not None
    os.kill(daemon[0], signal.SIGKILL)
    assert not still_running(daemon)
    stale = cli_status(name)
    assert stale["state"] == "stale"
    assert lab_namespaces(name), "the killed daemon's namespaces should outlive it (that is the crash case)"

    up = cli("up", "--name", name, "--flavor", "vpc-cni")
    assert up.returncode == 0, up.stderr
    second = cli_status(name)
    assert second["state"] == "running" and second["pid"] != first.status["pid"]
    # Nothing of the first instance survives: its pods' processes are gone, and every
    # namespace and cgroup now belongs to the new instance.
    old_left = [f"{what} (pid {ident[0]})" for ident, what in fp1.processes.items() if still_running(ident)]
    assert old_left == []
    want = {n["netns"] for n in second["nodes"]} | {p["netns"] for p in second["pods"]} | \
        {f"nc-{name}-vpc", f"nc-{name}-ext"}
    assert set(lab_namespaces(name)) == want
    new_uids = {p["uid"] for p in second["pods"]}
    old_uids = {p["uid"] for p in first.status["pods"]}
    assert not new_uids & old_uids
    cgroup_text = "\n".join(str(p) for c in lab_cgroups(name) for p in c.rglob("*") if p.is_dir())
    assert not [u for u in old_uids if u in cgroup_text or u.replace("-", "_") in cgroup_text]
    replacement = RunningLab(name, "vpc-cni", first.paths, first.env, second)
    lab_answers(replacement)
    close_all()

    fp2 = footprint(name, second)
    os.kill(second["pid"], signal.SIGKILL)
    down = cli("down", "--name", name)
    assert down.returncode == 0, down.stderr
    left = leftovers(fp1, fp2)
    assert not left, "down left these behind:\n" + "\n".join(left)


def _proc_state(pid: int) -> str:
    """The one-letter state of `pid` (R, S, T for stopped, Z...), "" if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _pending(pid: int) -> int:
    """Signals queued for `pid` and not yet delivered (a stopped process keeps them queued)."""
    try:
        fields = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    except OSError:
        return 0
    return int(fields.get("ShdPnd", "0"), 16) | int(fields.get("SigPnd", "0"), 16)


def _wait_for(what: str, cond, proc: subprocess.Popen | None = None, within: float = CLI_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if proc is not None and proc.poll() is not None:
            return  # it ended: the caller's assertions say whether that was right
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        time.sleep(0.002)


_DEFAULT_SIGINT_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.argv[1], sys.argv[1:])")


@dataclass
class Interrupted:
    out: str
    err: str
    returncode: int
    half_built: Footprint
    daemon: tuple[int, int] | None
    was_ready: bool


def _interrupt_up(stage: str, name: str) -> Interrupted:
    """`netconform-lab up --name NAME`, SIGINT to its process group once the build reaches `stage`."""
    state = STATE_ROOT / name
    # As a shell starts a foreground job: SIGINT at its default, even when this test runs under
    # a runner that ignores it (a background job of a script does; children inherit that, and
    # Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT_EXEC, *LAB_CLI, "up", "--name", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd="/")
    frozen = None
    try:
        reached = (lambda: bool(lab_cgroups(name))) if stage == "pods-starting" else (state / "ready").exists
        # pods-starting: the first pod process is being placed in its cgroup
        _wait_for(f"the lab reaching {stage}", reached)
        assert proc.poll() is None, f"up ended before the signal: {proc.communicate()}"
        daemon_pid = int((state / "daemon.pid").read_text())
        if stage == "pods-starting":
            # Freeze the build right here (SIGSTOP), so the interrupt lands in a half-built lab
            # however slowly this machine runs the test meanwhile; it goes on once the CLI has
            # asked it to stop.
            os.kill(daemon_pid, signal.SIGSTOP)
            frozen = daemon_pid
            _wait_for("the lab daemon stopping on SIGSTOP", lambda: _proc_state(daemon_pid) in ("T", "", "Z"))
        else:
            # Aim past the CLI's next look at `ready`, into writing the exports. Not a wait for a
            # condition: whichever side of that the signal lands on, the outcome is checked.
            time.sleep(0.06)
        # what exists now (cheap to take); pod processes started later are found afterwards by
        # their cgroup and command line
        half_built = Footprint(name, lab_namespaces(name), cgroups=lab_cgroups(name))
        daemon = proc_identity(daemon_pid)
        if daemon:
            half_built.processes[daemon] = "lab daemon"
        was_ready = (state / "ready").exists()
        os.killpg(proc.pid, signal.SIGINT)
        if frozen:
            # The interrupted CLI asks the daemon to stop (SIGTERM, queued while it is stopped).
            _wait_for("the CLI asking the daemon to stop",
                      lambda: _pending(daemon_pid) & (1 << (signal.SIGTERM - 1)), proc)
            os.kill(daemon_pid, signal.SIGCONT)
            frozen = None
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if frozen:
            os.kill(frozen, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Interrupted(out, err, proc.returncode, half_built, daemon, was_ready)


@pytest.mark.parametrize("stage", ["pods-starting", "just-ready"])
def test_ctrl_c_during_up_leaves_nothing(stage, make_lab):
    """SIGINT to `netconform-lab up`'s process group (what Ctrl-C does) while the lab is half
    built (namespaces made, pod processes starting), or just as the daemon reports ready but
    before `up` has printed its exports: the CLI says so in one line, exits 130, and nothing of
    the lab remains. (If `up` got its exports out first, the lab is up and must work.)"""
    for _ in range(3):
        name = make_lab.reserve()
        r = _interrupt_up(stage, name)
        if not (stage == "pods-starting" and r.was_ready):
            break
        # This machine stalled the test long enough for the daemon to finish the whole build
        # between "first pod cgroup" and the freeze: no build was interrupted. Not the lab's
        # fault and nothing to check: take it down and try again.
        remove_lab(name)
    else:
        pytest.fail("three times the lab was already up: the signal never interrupted a build")
    assert r.half_built.namespaces and r.half_built.cgroups and r.daemon
    if stage == "just-ready" and "export KUBECONFIG=" in r.out:
        # `up` finished before the signal: then the lab is up, and that is fine
        assert cli_status(name)["state"] == "running"
        return
    assert r.returncode == 130, (r.out, r.err)
    assert r.out == "" and r.err.strip() == "netconform-lab: interrupted", r.err
    left = leftovers(r.half_built)
    assert not left, "Ctrl-C left these behind:\n" + "\n".join(left)


# -- bad input -----------------------------------------------------------------------------------
def _assert_one_line_usage_error(r: subprocess.CompletedProcess, *, mentions: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert lines[0].startswith("netconform-lab"), lines[0]
    assert mentions.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize(("args", "mentions"), [
    (["up", "--name", "Bad-Name"], "lab name"),
    (["up", "--name", "abcdefghijklm"], "1-12"),
    (["up", "--name", "{fresh}", "--flavor", "calico"], "calico"),
    (["status", "--name", "{fresh}"], "no lab named"),
    (["status", "--name", "{fresh}", "--json"], "no lab named"),
    (["fault", "dns-down", "--name", "{fresh}"], "no lab named"),
    (["env", "--name", "{fresh}"], "no lab named"),
    (["up", "--name", "{fresh}", "--nodes", "0"], "nodes"),
    (["bogus-command"], "invalid choice"),
], ids=["bad-name", "long-name", "unknown-flavor", "status-missing", "status-json-missing",
        "fault-missing-lab", "env-missing", "zero-nodes", "unknown-command"])
def test_bad_input_is_one_line_and_exit_2(args, mentions, make_lab):
    name = make_lab.reserve()
    r = cli(*[a.replace("{fresh}", name) for a in args])
    _assert_one_line_usage_error(r, mentions=mentions)
    assert not (STATE_ROOT / name).exists() and lab_namespaces(name) == []


def test_bad_input_against_a_running_lab(lab):
    running = lab("vpc-cni")
    r = cli("fault", "no-such-fault", "--name", running.name)
    _assert_one_line_usage_error(r, mentions="unknown fault 'no-such-fault'")
    r = cli("fault", "gateway-down", "--target", "default/no-such-pod", "--name", running.name)
    _assert_one_line_usage_error(r, mentions="no-such-pod")
    r = cli("fault", "apiserver-endpoint-down", "--target", "192.0.2.99", "--name", running.name)
    _assert_one_line_usage_error(r, mentions="not an apiserver endpoint")
    r = cli("heal", "--name", running.name)
    _assert_one_line_usage_error(r, mentions="--all")
    r = cli("heal", "no-such-fault", "--name", running.name)
    _assert_one_line_usage_error(r, mentions="unknown fault")
    assert running.read_status()["faults"] == []  # none of that changed the lab


CLI_AS_USER = Path(__file__).with_name("cli_as_user.py")
REPO = Path(__file__).resolve().parents[2]
NON_ROOT_CASES = {"up": ["up"], "down": ["down"], "status": ["status"], "status-json": ["status", "--json"],
                  "env": ["env"], "fault": ["fault", "dns-down"], "heal": ["heal", "--all"]}


def unprivileged() -> tuple[str, str]:
    """(user, group) to run the CLI as: nobody, and its group (nogroup on Debian)."""
    import grp
    import pwd

    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user `nobody` to run the CLI as")
    try:
        return user.pw_name, grp.getgrnam("nogroup").gr_name
    except KeyError:
        return user.pw_name, grp.getgrgid(user.pw_gid).gr_name


def cli_as_user(user: str, group: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`netconform-lab ARGS` as user:group (see tests/lab/cli_as_user.py): a fresh root interpreter
    imports the CLI from this checkout, drops to the user for good, then runs the CLI's main().
    Returns the CLI's result and the helper's report (its ids; what it touched of the checkout,
    the venv or the interpreter after the drop)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "LANG": "C.UTF-8"}
    read_end, write_end = os.pipe()
    try:
        r = subprocess.run([sys.executable, "-I", "-B", str(CLI_AS_USER), "--checkout", str(REPO),
                            "--user", user, "--group", group, "--report-fd", str(write_end), "--", *args],
                           capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env, cwd="/",
                           pass_fds=(write_end,))
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        raw = f.read()
    assert raw, f"the helper reported nothing (exit {r.returncode}):\n{r.stderr}"
    return r, json.loads(raw)


@pytest.mark.parametrize("case", NON_ROOT_CASES)
def test_non_root_user_gets_one_line_and_exit_2(case, lab, make_lab):
    """As `nobody`: refused in one line, exit 2, nothing created, nothing removed or changed.

    The CLI runs in a process that is nobody from the first line of the CLI's own code on (see
    cli_as_user), and that process never reads the checkout, the venv or the interpreter's files:
    so this holds for a checkout only root can enter, too (test below)."""
    import pwd

    user, group = unprivileged()
    running = lab("vpc-cni")
    name = make_lab.reserve() if case == "up" else running.name
    state_before = sorted(os.listdir(STATE_ROOT / running.name))
    namespaces_before = lab_namespaces(running.name)
    r, report = cli_as_user(user, group, *NON_ROOT_CASES[case], "--name", name)
    assert report["uid"] == pwd.getpwnam(user).pw_uid != 0, report
    assert report["touched"] == [], "after dropping root the CLI read files it has no business with"
    _assert_one_line_usage_error(r, mentions="root")
    assert str(REPO) not in r.stderr, r.stderr  # refused for the lab's sake, not for the checkout's
    if case == "up":
        assert not (STATE_ROOT / name).exists() and lab_namespaces(name) == []
    st = running.read_status()
    assert (st["state"], st["faults"]) == ("running", []) and proc_identity(st["pid"]) is not None
    assert sorted(os.listdir(STATE_ROOT / running.name)) == state_before
    assert lab_namespaces(running.name) == namespaces_before


def _clone_working_tree(dest: Path) -> None:
    """`git clone` of this checkout at `dest`, then the working tree's uncommitted state on top
    (modified and new files copied, deleted ones removed): the clone holds the code under test,
    not just the last commit."""
    git = ["git", "-c", "safe.directory=*", "-C", str(REPO)]
    subprocess.run(["git", "-c", "safe.directory=*", "clone", "-q", "--no-hardlinks", str(REPO), str(dest)],
                   check=True, capture_output=True, timeout=CLI_TIMEOUT)

    def listed(*flags: str) -> list[str]:
        out = subprocess.run([*git, "ls-files", "-z", *flags], check=True, capture_output=True,
                             timeout=CLI_TIMEOUT).stdout
        return [f for f in out.decode().split("\0") if f]

    for rel in listed("--deleted"):
        (dest / rel).unlink(missing_ok=True)
    for rel in listed("--modified", "--others", "--exclude-standard"):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _labs_of_process(pid: int) -> set[str]:
    """Labs a pytest process (no xdist) may have made: their names end in `m<pid in base 36>`."""
    from tests.lab.conftest import _b36

    tail = "m" + _b36(pid)
    names = {p.name for p in STATE_ROOT.iterdir()} if STATE_ROOT.is_dir() else set()
    names |= {n.split("-")[1] for n in os.listdir(RUN_NETNS) if n.startswith("nc-")} if RUN_NETNS.is_dir() else set()
    return {n for n in names if n.startswith("lt") and n.endswith(tail)}


def test_non_root_cases_pass_from_a_checkout_only_root_can_enter():
    """The non-root cases above, run by pytest from a clone of this checkout in a folder only root
    can enter (mkdtemp: 0700): nothing of those tests may depend on `nobody` reading the checkout,
    even where CI's checkout happens to be world-readable. (No install: the clone uses this venv.)"""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    work = Path(tempfile.mkdtemp(prefix="netconform-0700-"))
    proc = None
    try:
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        clone = work / "repo"
        _clone_working_tree(clone)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
        env["PYTHONPATH"] = str(clone)  # the clone's code, not what the venv's editable install points at
        node = "tests/lab/test_lab_lifecycle.py::test_non_root_user_gets_one_line_and_exit_2"
        proc = subprocess.Popen([sys.executable, "-B", "-m", "pytest", node, "-q", "-p", "no:cacheprovider",
                                 "-o", "addopts="], cwd=clone, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"pytest in the 0700 clone did not finish within {CLI_TIMEOUT:.0f} s:\n{out[-4000:]}")
        summary = out.strip().splitlines()[-1] if out.strip() else ""
        assert proc.returncode == 0 and re.fullmatch(rf"{len(NON_ROOT_CASES)} passed in .*", summary), out[-6000:]
    finally:
        if proc is not None:
            for name in _labs_of_process(proc.pid):  # only if that run died before its own cleanup
                remove_lab(name)
        shutil.rmtree(work, ignore_errors=True)


# -- status --json --------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", FLAVORS)
def test_status_json_describes_the_running_lab(flavor, lab):
    """Every documented field is there, and each one is true of the running lab."""
    running = lab(flavor)
    st = cli_status(running.name)
    for key in ("name", "flavor", "kubeconfig", "aws_endpoint_url", "dns_service_ip", "apiserver_endpoints",
                "nodes", "pods", "services", "faults"):
        assert key in st, f"status --json has no {key!r}"
    assert (st["name"], st["flavor"], st["state"], st["faults"]) == (running.name, flavor, "running", [])
    assert st["kubeconfig"] == running.env["KUBECONFIG"] and Path(st["kubeconfig"]).is_file()
    aws = urlparse(st["aws_endpoint_url"])
    assert (aws.scheme, aws.hostname) == ("http", "127.0.0.1") and aws.port
    assert st["aws_endpoint_url"] == running.env["AWS_ENDPOINT_URL"]

    # nodes: name, ip, netns -- the IP is on the node namespace's eth0
    node_names = set()
    for n in st["nodes"]:
        assert {"name", "ip", "netns"} <= set(n)
        node_names.add(n["name"])
        addrs = json.loads(subprocess.run(["ip", "-n", n["netns"], "-j", "-4", "addr", "show", "eth0"],
                                          capture_output=True, text=True, timeout=10, check=True).stdout)
        assert n["ip"] in {a["local"] for i in addrs for a in i["addr_info"]}
    assert len(node_names) == len(st["nodes"]) >= 2

    # pods: the process is alive and sits in the pod's namespace, which holds the pod IP
    for p in st["pods"]:
        assert {"namespace", "name", "ip", "node", "netns", "pid", "host_network"} <= set(p)
        assert p["node"] in node_names
        node = next(n for n in st["nodes"] if n["name"] == p["node"])
        assert proc_identity(p["pid"]) is not None, f"{p['name']}: pid {p['pid']} is not running"
        assert os.stat(f"/proc/{p['pid']}/ns/net").st_ino == netns_inode(p["netns"]), p["name"]
        if p["host_network"]:
            assert (p["netns"], p["ip"]) == (node["netns"], node["ip"])
        else:
            addrs = json.loads(subprocess.run(["ip", "-n", p["netns"], "-j", "-4", "addr", "show", "eth0"],
                                              capture_output=True, text=True, timeout=10, check=True).stdout)
            assert p["ip"] in {a["local"] for i in addrs for a in i["addr_info"]}, p["name"]
    assert len({p["ip"] for p in st["pods"] if not p["host_network"]}) == \
        len([p for p in st["pods"] if not p["host_network"]]), "duplicate pod IPs"

    # services: ClusterIPs, ports and endpoints; kube-dns is the DNS service IP
    svcs = {f"{s['namespace']}/{s['name']}": s for s in st["services"]}
    for s in st["services"]:
        assert {"namespace", "name", "cluster_ip", "ports", "endpoints"} <= set(s)
        assert s["ports"] and all({"port", "protocol"} <= set(pt) for pt in s["ports"])
    assert svcs["kube-system/kube-dns"]["cluster_ip"] == st["dns_service_ip"]
    assert sorted(svcs["kube-system/kube-dns"]["endpoints"]) == sorted(p["ip"] for p in st["pods"]
                                                                       if p["name"].startswith("coredns-"))
    assert sorted(svcs["default/kubernetes"]["endpoints"]) == sorted(st["apiserver_endpoints"])
    assert len(st["apiserver_endpoints"]) == 2
    assert sorted(svcs["default/web"]["endpoints"]) == sorted(p["ip"] for p in st["pods"]
                                                              if p["namespace"] == "default"
                                                              and p["name"].startswith("web-"))

    # and it is what the lab's Kubernetes API says
    api_pods = {(p.metadata.namespace, p.metadata.name): p for p in
                running.core().list_pod_for_all_namespaces(_request_timeout=API_TIMEOUT).items}
    assert set(api_pods) == {(p["namespace"], p["name"]) for p in st["pods"]}
    for p in st["pods"]:
        a = api_pods[(p["namespace"], p["name"])]
        assert (a.status.pod_ip, a.spec.node_name, bool(a.spec.host_network)) == (p["ip"], p["node"], p["host_network"])


def test_lab_runs_ahead_of_the_suite_it_serves(lab):
    """The lab's servers stand in for other machines: a busy suite must not starve them."""
    from netconform.lab.daemon import LAB_NICE

    running = lab("flannel")
    pid = int(running.paths.pid.read_text())
    assert os.getpriority(os.PRIO_PROCESS, pid) == LAB_NICE
    # and its server threads with it (Linux nice values are per thread, inherited at creation)
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    assert len(tids) > 1 and {os.getpriority(os.PRIO_PROCESS, t) for t in tids} == {LAB_NICE}
