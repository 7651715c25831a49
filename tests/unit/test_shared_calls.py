"""Ask once, assert many: SharedCalls runs each question once per namespace per run — in a process,
across threads, and across processes (xdist workers) through the run's answer folder."""
from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import pytest

from netconform.runners import shared
from netconform.runners.base import ProbeCall, Runner
from netconform.runners.shared import SharedCalls, question_key, use_store
from plugins.scheduling import target_of


class CountingRunner(Runner):
    """Answers every call after `delay` seconds (a timeout for probe "hang"), counting the runs."""

    def __init__(self, key=(1, 4026532281), delay: float = 0.0):
        self.key = key
        self.delay = delay
        self.runs: list[tuple[str, dict]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def call(self, probe: str, kwargs: dict[str, Any] | None = None, timeout: float = 10.0) -> ProbeCall:
        self.runs.append((probe, dict(kwargs or {})))
        if probe == "test:block":
            self.entered.set()
            self.release.wait(10)
        if probe == "test:hang":
            return ProbeCall(probe=probe, status="timeout", error_type="Timeout", error=f"no answer within {timeout} s")
        if probe == "test:bug":
            raise ValueError("malformed request")
        return ProbeCall(probe=probe, status="ok", value={"asked": kwargs})


@pytest.fixture(autouse=True)
def no_store():
    use_store(None)
    yield
    use_store(None)


def test_same_question_runs_once():
    r = CountingRunner()
    s = SharedCalls(r)
    a, a_shared = s.call("dns:query", {"server": "10.0.1.16", "name": "x.", "timeout": 3})
    b, b_shared = s.call("dns:query", {"name": "x.", "timeout": 3, "server": "10.0.1.16"})  # same, reordered
    assert a is b and (a_shared, b_shared) == (False, True)
    assert len(r.runs) == 1 and s.stats() == {"runs": 1, "shared": 1} and s.repeated() == {}


def test_different_arguments_are_different_questions():
    r = CountingRunner()
    s = SharedCalls(r)
    s.call("dns:query", {"server": "10.0.1.16", "tcp": False})
    s.call("dns:query", {"server": "10.0.1.16", "tcp": True})
    s.call("dns:query", {"server": "10.0.1.17", "tcp": False})
    s.call("tcp:connect", {"server": "10.0.1.16", "tcp": False})
    assert len(r.runs) == 4 and s.stats()["shared"] == 0


def test_a_timeout_is_shared_as_a_timeout_not_waited_out_again():
    r = CountingRunner()
    s = SharedCalls(r)
    first, _ = s.call("test:hang", {"ip": "10.0.1.5"}, timeout=3)
    again, was_shared = s.call("test:hang", {"ip": "10.0.1.5"}, timeout=3)
    assert again.status == "timeout" and again is first and was_shared and len(r.runs) == 1


def test_concurrent_askers_wait_for_the_one_run():
    r = CountingRunner()
    s = SharedCalls(r)
    got: list = []
    first = threading.Thread(target=lambda: got.append(s.call("test:block", {})))
    first.start()
    assert r.entered.wait(10)
    others = [threading.Thread(target=lambda: got.append(s.call("test:block", {}))) for _ in range(3)]
    for t in others:
        t.start()
    r.release.set()
    for t in [first, *others]:
        t.join(10)
    assert len(r.runs) == 1 and len(got) == 4 and len({id(c) for c, _ in got}) == 1
    assert sorted(w for _, w in got) == [False, True, True, True]


def test_fresh_asks_again():
    r = CountingRunner()
    s = SharedCalls(r)
    s.call("netinfo:neighbours", {"all_states": True})
    s.call("netinfo:neighbours", {"all_states": True}, fresh=True)
    assert len(r.runs) == 2 and s.repeated() == {question_key("netinfo:neighbours", {"all_states": True}): 2}


def test_a_caller_bug_is_raised_to_everyone_and_not_kept():
    r = CountingRunner()
    s = SharedCalls(r)
    for _ in range(2):
        with pytest.raises(ValueError, match="malformed"):
            s.call("test:bug", {})
    assert len(r.runs) == 2 and s.stats()["runs"] == 0


def test_the_run_folder_shares_answers_between_processes(tmp_path):
    use_store(tmp_path)
    here = CountingRunner()
    call, was_shared = SharedCalls(here).call("dns:query", {"server": "10.0.1.16"})
    assert not was_shared and len(here.runs) == 1
    # another process: a fresh SharedCalls and runner for the same namespace
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def other() -> None:
        use_store(tmp_path)
        there = CountingRunner()
        c, w = SharedCalls(there).call("dns:query", {"server": "10.0.1.16"})
        d, _ = SharedCalls(there).call("dns:query", {"server": "10.0.1.17"})
        q.put((c.to_dict(), w, len(there.runs)))

    p = ctx.Process(target=other)
    p.start()
    p.join(30)
    got, w, runs_there = q.get(timeout=5)
    assert got == call.to_dict() and w
    # the new question ran too, but here: this process owns the namespace (the broker)
    assert runs_there == 0 and [k["server"] for _, k in here.runs] == ["10.0.1.16", "10.0.1.17"]
    # another namespace asking the same question is a different question
    elsewhere = SharedCalls(CountingRunner(key=(1, 4026532999)))
    assert elsewhere.call("dns:query", {"server": "10.0.1.16"})[1] is False


def _in_another_process(fn):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(fn()))
    p.start()
    got = q.get(timeout=60)
    p.join(30)
    return got


def test_one_process_runs_a_namespaces_probes_the_others_hand_it_their_questions(tmp_path):
    use_store(tmp_path)
    owner = CountingRunner()
    SharedCalls(owner).call("netinfo:links", {})  # this process asks first: it owns the namespace

    def other() -> tuple[dict, int]:
        use_store(tmp_path)
        mine = CountingRunner()
        call, _ = SharedCalls(mine).call("netinfo:routes", {"family": "inet"})
        fresh, _ = SharedCalls(mine).call("netinfo:neighbours", {}, fresh=True)
        return call.to_dict(), fresh.status, len(mine.runs)

    call, fresh_status, ran_there = _in_another_process(other)
    assert call["status"] == "ok" and call["value"] == {"asked": {"family": "inet"}} and fresh_status == "ok"
    assert ran_there == 0  # the other process never ran a probe in this namespace itself
    assert [p for p, _ in owner.runs] == ["netinfo:links", "netinfo:routes", "netinfo:neighbours"]


def test_when_the_owner_is_gone_the_next_asker_takes_over(tmp_path):
    def own_and_exit() -> bool:
        use_store(tmp_path)
        SharedCalls(CountingRunner()).call("netinfo:links", {})
        return True

    assert _in_another_process(own_and_exit)  # it owned the namespace, then exited
    use_store(tmp_path)
    here = CountingRunner()
    call, _ = SharedCalls(here).call("netinfo:routes", {})
    assert call.status == "ok" and len(here.runs) == 1


def test_the_process_registry_gives_one_sharer_per_runner():
    r = CountingRunner()
    assert shared.shared_calls(r) is shared.shared_calls(r)
    assert shared.shared_calls(CountingRunner()) is not shared.shared_calls(r)


def test_checks_are_scheduled_by_the_target_their_id_starts_with():
    keys = ["default/web-1", "default/web-10", "ip-10-0-0-11.ec2.internal"]
    assert target_of("checks/test_dns.py::test_dns_resolves[default/web-10-kubernetes.default-udp]", keys) == \
        "default/web-10"
    assert target_of("checks/test_pod_to_pod.py::test_pod_to_pod_icmp[default/web-1-to-shop/db-0]", keys) == \
        "default/web-1"
    assert target_of("checks/test_apiserver.py::test_apiserver_node_clusterip[ip-10-0-0-11.ec2.internal]", keys) == \
        "ip-10-0-0-11.ec2.internal"
    assert target_of("checks/test_external.py::test_external_icmp[not-requested]", keys) is None
    assert target_of("checks/test_x.py::test_plain", keys) is None


def test_a_killed_runs_folder_is_swept_by_the_next_run(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from fixtures import probing

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"netconform-run-{gone.pid}-abc123"
    alive = tmp_path / f"netconform-run-{os.getpid()}-def456"
    for d in (dead, alive):
        (d / "requests").mkdir(parents=True)
    probing._sweep_dead_runs()
    assert not dead.exists() and alive.exists()
