"""tcp.connect / connect_attempts on loopback and in throwaway namespaces (refused, timeout, unreachable)."""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess

import pytest

from netconform.probes.tcp import connect, connect_attempts
from netconform.runners.local import LocalRunner






def test_connect_ok_reports_latency_and_local_address(listener):
    r = connect("127.0.0.1", listener, timeout=2.0)
    assert r.ok and r.error_kind is None
    assert r.local_ip == "127.0.0.1" and r.local_port
    assert r.latency_ms is not None and r.latency_ms >= 0
    json.dumps(dataclasses.asdict(r))


def test_connect_refused(closed_port):
    r = connect("127.0.0.1", closed_port, timeout=2.0)
    assert (r.ok, r.error_kind, r.errno_name) == (False, "refused", "ECONNREFUSED")
    assert r.error == "Connection refused"


def test_connect_ipv6_loopback(closed_port):
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    s.listen(1)
    with s:
        assert connect("::1", s.getsockname()[1]).ok
    assert connect("::1", closed_port).error_kind == "refused"


def test_attempts_stop_at_first_success(listener):
    r = connect_attempts("127.0.0.1", listener, attempts=5, timeout=1.0)
    assert r.ok and len(r.attempts) == 1 and r.max_attempts == 5


def test_attempts_record_every_failure(closed_port):
    r = connect_attempts("127.0.0.1", closed_port, attempts=3, timeout=1.0)
    assert not r.ok and r.error_kind == "refused"
    assert [a.error_kind for a in r.attempts] == ["refused"] * 3
    assert "3/3" in r.error


def test_names_are_not_resolved_implicitly():
    with pytest.raises(ValueError):
        connect("localhost", 80)


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


def test_timeout_behind_a_drop_rule_and_unreachable_route(make_netns):
    ns = make_netns("tcp")
    _ip(ns, "addr", "add", "10.77.0.1/32", "dev", "lo")
    _ip(ns, "route", "add", "unreachable", "10.78.0.0/16")
    _ip(ns, "route", "add", "prohibit", "10.79.0.0/16")
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "7777",
                    "-j", "DROP"], check=True, capture_output=True, timeout=10)
    with LocalRunner(f"/run/netns/{ns}") as runner:
        dropped = runner.call("tcp:connect", {"ip": "10.77.0.1", "port": 7777, "timeout": 0.5}, timeout=10).value
        assert (dropped["ok"], dropped["error_kind"], dropped["errno_name"]) == (False, "timeout", None)
        assert dropped["latency_ms"] >= 450
        refused = runner.call("tcp:connect", {"ip": "10.77.0.1", "port": 7778, "timeout": 0.5}, timeout=10).value
        assert refused["error_kind"] == "refused"
        unreachable = runner.call("tcp:connect", {"ip": "10.78.0.9", "port": 443, "timeout": 2.0}, timeout=10).value
        assert (unreachable["error_kind"], unreachable["errno_name"]) == ("unreachable", "EHOSTUNREACH")
        no_route = runner.call("tcp:connect", {"ip": "192.0.2.1", "port": 443, "timeout": 2.0}, timeout=10).value
        assert (no_route["error_kind"], no_route["errno_name"]) == ("unreachable", "ENETUNREACH")
        prohibited = runner.call("tcp:connect", {"ip": "10.79.0.9", "port": 443, "timeout": 2.0}, timeout=10).value
        assert prohibited["error_kind"] == "permission"
        attempts = runner.call("tcp:connect_attempts", {"ip": "10.77.0.1", "port": 7777, "attempts": 2,
                                                        "timeout": 0.3}, timeout=10).value
        assert [a["error_kind"] for a in attempts["attempts"]] == ["timeout", "timeout"]
