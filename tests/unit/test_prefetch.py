"""plugins/prefetch.py in a child pytest: a target's checks run together before the first of them,
and pytest reports each one exactly as if it had run on its own — pass, fail, skip, error, evidence."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]

CONFTEST = '''
import pytest
from netconform.kube import Snapshot
from netconform.targets import TargetPlan, pod_target

POD = {"metadata": {"name": "web-0", "namespace": "default", "uid": "7d1c0c56-0000-4000-8000-00000000beef"},
       "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
       "status": {"phase": "Running", "podIP": "10.254.254.9", "podIPs": [{"ip": "10.254.254.9"}]}}


class FakeTargets:
    snapshot = Snapshot(context="unit", server="https://10.0.0.1", version={"gitVersion": "v1.31.0"}, pods=[POD])
    plan = TargetPlan(pods=[pod_target(POD)], nodes=[])


def pytest_configure(config):
    config.addinivalue_line("markers", "check(id): catalog id")
    config.pluginmanager.register(FakeTargets(), "netconform-targets")


def pytest_generate_tests(metafunc):
    if "pod" in metafunc.fixturenames:
        metafunc.parametrize("pod", [pytest.param(pod_target(POD), id="default/web-0")])
'''

CHECKS = '''
import threading
import time

import pytest

# Each of these returns only once all four wait at the same time: run one after another, every
# one of them breaks the barrier; run together, all pass.
TOGETHER = threading.Barrier(4)


@pytest.fixture
def together(pod, evidence):
    evidence.add("fixture", "ran", f"pod {pod.key}")
    return TOGETHER


@pytest.fixture(scope="session")
def session_thing():
    return 42


@pytest.mark.check("a.one")
def test_one(pod, together, evidence):
    evidence.add("probe", {"n": 1}, f"pod {pod.key}")
    time.sleep(0.05)
    together.wait(10)


@pytest.mark.check("a.two")
def test_two(pod, together):
    together.wait(10)
    assert 1 == 2, f"pod {pod.key}: two is broken"


@pytest.mark.check("a.three")
def test_three(pod, together):
    together.wait(10)
    pytest.skip(f"pod {pod.key}: nothing to check here")


@pytest.mark.check("a.four")
@pytest.mark.parametrize("n", [4])
def test_four(request, pod, n, together):
    together.wait(10)
    pytest.fail(f"pod {pod.key}: {n} failed, said {request.getfixturevalue('together') is TOGETHER}", pytrace=False)


@pytest.mark.check("a.five")
def test_five(pod, session_thing):
    assert session_thing == 42  # a session fixture: not run ahead, runs the ordinary way


def test_not_a_check(pod):
    pass
'''


def _run(pytester: pytest.Pytester, *plugins: str) -> dict:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks=CHECKS)
    old = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    try:
        args = [a for p in ("plugins.options", "fixtures.probing", *plugins, "plugins.report") for a in ("-p", p)]
        r = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", "--report-dir", str(pytester.path / "out"),
                                          "-rA", timeout=120)
    finally:
        os.environ.clear()
        os.environ.update(old)
    found = list((pytester.path / "out").glob("*/results.json"))
    assert found, r.stdout.str()
    return {x["nodeid"].split("::")[-1]: x for x in json.loads(found[0].read_text())["results"]}


def test_a_targets_checks_run_together_and_report_as_usual(pytester):
    got = _run(pytester, "plugins.scheduling", "plugins.prefetch")
    outcome = {k: v["outcome"] for k, v in got.items()}
    assert outcome == {"test_one[default/web-0]": "passed", "test_two[default/web-0]": "failed",
                       "test_three[default/web-0]": "skipped", "test_four[default/web-0-4]": "failed",
                       "test_five[default/web-0]": "passed", "test_not_a_check[default/web-0]": "passed"}, outcome
    assert got["test_two[default/web-0]"]["diagnosis"] == "pod default/web-0: two is broken"
    assert got["test_three[default/web-0]"]["diagnosis"] == "pod default/web-0: nothing to check here"
    assert got["test_four[default/web-0-4]"]["diagnosis"] == "pod default/web-0: 4 failed, said True"
    # its duration is the time the check took when it ran ahead (it waited at the barrier), not
    # the instant replay
    assert got["test_one[default/web-0]"]["duration_s"] >= 0.05
    # the evidence a check recorded while it ran ahead is in the report, once
    names = [e["name"] for e in got["test_one[default/web-0]"]["evidence"]]
    assert names.count("probe") == 1 and names.count("fixture") == 1, names


def test_without_it_the_same_checks_run_one_by_one(pytester):
    got = _run(pytester, "plugins.scheduling")  # the barrier proves the difference
    assert got["test_one[default/web-0]"]["outcome"] == "error"  # not an assertion: the suite broke
    assert "BrokenBarrierError" in got["test_one[default/web-0]"]["diagnosis"]
