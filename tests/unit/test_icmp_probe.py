"""icmp.ping on loopback and across a throwaway router namespace with a 1280-byte link behind it.

    A (10.61.0.2, fd61::2) --a0/r0-- R (forwards) --r1/c0, MTU 1280-- C (10.62.0.2, fd62::2)
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading

import pytest

from netconform.probes.icmp import ping
from netconform.runners.local import LocalRunner

# Raw ICMP sockets need CAP_NET_RAW; the namespace tests need root anyway (make_netns skips).
raw_sockets = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (raw ICMP sockets)")


@raw_sockets
def test_ping_loopback_v4_and_v6():
    for dst in ("127.0.0.1", "::1"):
        r = ping(dst, count=2, timeout=2.0, interval=0.05)
        assert (r.ok, r.sent, r.received, r.duplicates, r.errors) == (True, 2, 2, 0, []), dst
        assert [x.seq for x in r.replies] == [1, 2]
        assert all(x.source == dst and x.ttl == 64 and x.bytes == 56 and x.rtt_ms >= 0 for x in r.replies)
        json.dumps(dataclasses.asdict(r))


@raw_sockets
def test_concurrent_pings_do_not_take_each_others_replies():
    # raw sockets see every echo reply in the namespace; only our identifier's count
    results = []
    threads = [threading.Thread(target=lambda: results.append(ping("127.0.0.1", count=3, interval=0.05)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(r.received, r.duplicates) for r in results] == [(3, 0), (3, 0)]


@raw_sockets
def test_payload_size_is_honoured():
    r = ping("127.0.0.1", size=1000)
    assert r.ok and r.replies[0].bytes == 1000


def test_bad_arguments_are_caller_bugs():
    for kwargs in ({"dst": "example.com"}, {"dst": "127.0.0.1", "count": 0}, {"dst": "127.0.0.1", "ttl": 0}):
        with pytest.raises(ValueError):
            ping(**kwargs)


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


def _in(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def path(make_netns):
    a, r, c = make_netns("icA"), make_netns("icR"), make_netns("icC")
    for ns in (a, r, c):
        # No DAD: a router whose link-local is still tentative sends no neighbour solicitation
        # for a forwarded packet (ndisc_send_ns needs a usable link-local source), so the first
        # echo through a fresh R would silently vanish.
        _in(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
    _ip(a, "link", "add", "a0", "type", "veth", "peer", "name", "r0", "netns", r)
    _ip(r, "link", "add", "r1", "mtu", "1280", "type", "veth", "peer", "name", "c0", "netns", c)
    _ip(c, "link", "set", "c0", "mtu", "1280")
    for ns, dev, v4, v6 in ((a, "a0", "10.61.0.2/24", "fd61::2/64"), (r, "r0", "10.61.0.1/24", "fd61::1/64"),
                            (r, "r1", "10.62.0.1/24", "fd62::1/64"), (c, "c0", "10.62.0.2/24", "fd62::2/64")):
        _ip(ns, "addr", "add", v4, "dev", dev)
        _ip(ns, "-6", "addr", "add", v6, "dev", dev, "nodad")
        _ip(ns, "link", "set", dev, "up")
    _ip(r, "-6", "addr", "add", "fe80::1/64", "dev", "r0", "nodad")
    _ip(a, "-6", "addr", "add", "fe80::2/64", "dev", "a0", "nodad")
    for ns, gw4, gw6 in ((a, "10.61.0.1", "fd61::1"), (c, "10.62.0.1", "fd62::1")):
        _ip(ns, "route", "add", "default", "via", gw4)
        _ip(ns, "-6", "route", "add", "default", "via", gw6)
    _in(r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    # Give up on ARP after one probe of 100 ms instead of 3 x 1 s (the "host unreachable" case).
    _in(a, "sysctl", "-qw", "net.ipv4.neigh.a0.mcast_solicit=1", "net.ipv4.neigh.a0.retrans_time_ms=100")
    with LocalRunner(f"/run/netns/{a}") as runner:
        yield runner, r


def call(runner, **kwargs):
    res = runner.call("icmp:ping", kwargs, timeout=20)
    assert res.ok, res.error
    return res.value


def test_echo_across_a_router(path):
    runner, _ = path
    for dst in ("10.62.0.2", "fd62::2"):
        r = call(runner, dst=dst, count=2, interval=0.05)
        assert (r["ok"], r["received"]) == (True, 2), dst
        assert r["replies"][0]["ttl"] == 63  # one router on the way


def test_ttl_exceeded_names_the_router(path):
    runner, _ = path
    for dst, router in (("10.62.0.2", "10.61.0.1"), ("fd62::2", "fd61::1")):
        r = call(runner, dst=dst, ttl=1)
        assert (r["ok"], r["error_kind"]) == (False, "ttl-exceeded"), dst
        assert r["errors"][0]["source"] == router and r["errors"][0]["seq"] == 1


def test_frag_needed_reports_next_hop_mtu_every_time(path):
    runner, _ = path
    for _ in range(2):  # the second run must not turn into a local EMSGSIZE from the learned PMTU
        r = call(runner, dst="10.62.0.2", size=1400, dont_fragment=True)
        assert (r["ok"], r["error_kind"]) == (False, "frag-needed")
        e = r["errors"][0]
        assert (e["mtu"], e["source"], e["icmp_type"], e["icmp_code"]) == (1280, "10.61.0.1", 3, 4)
    # without DF the router fragments and the echo is answered
    assert call(runner, dst="10.62.0.2", size=1400)["ok"]
    # DF over the sender's own device MTU fails locally, before anything is sent
    local = call(runner, dst="10.62.0.2", size=1600, dont_fragment=True)
    assert (local["sent"], local["error_kind"]) == (0, "message-too-long")


def test_ipv6_packet_too_big(path):
    runner, _ = path
    # a fresh path: the first echo learns the PMTU from the router, the next goes out fragmented
    r = call(runner, dst="fd62::2", size=1400, count=2, interval=0.05)
    assert [(e["kind"], e["seq"], e["mtu"]) for e in r["errors"]] == [("packet-too-big", 1, 1280)]
    assert r["ok"] and [x["seq"] for x in r["replies"]] == [2]
    # with DONTFRAG every oversized echo still reaches the router and is refused
    r = call(runner, dst="fd62::2", size=1400, dont_fragment=True)
    assert (r["ok"], r["error_kind"]) == (False, "packet-too-big")
    assert (r["errors"][0]["mtu"], r["errors"][0]["source"]) == (1280, "fd61::1")


def test_reject_rule_is_reported_as_admin_prohibited(path):
    runner, router = path
    _in(router, "iptables", "-w", "-A", "FORWARD", "-p", "icmp", "-d", "10.62.0.2", "-j", "REJECT",
        "--reject-with", "icmp-admin-prohibited")
    r = call(runner, dst="10.62.0.2")
    assert (r["error_kind"], r["errors"][0]["source"], r["errors"][0]["icmp_code"]) == (
        "admin-prohibited", "10.61.0.1", 13)


def test_no_arp_answer_is_host_unreachable_from_ourselves(path):
    runner, _ = path
    r = call(runner, dst="10.61.0.99", timeout=3.0)
    assert (r["ok"], r["error_kind"], r["errors"][0]["source"]) == (False, "host-unreachable", "10.61.0.2")


def test_link_local_destination_with_scope(path):
    runner, _ = path
    r = call(runner, dst="fe80::1%a0")
    assert r["ok"] and r["replies"][0]["source"] == "fe80::1%a0"


def test_silence_is_a_timeout(path):
    runner, router = path
    _in(router, "iptables", "-w", "-A", "FORWARD", "-p", "icmp", "-d", "10.62.0.2", "-j", "DROP")
    r = call(runner, dst="10.62.0.2", count=2, timeout=0.3, interval=0.0)
    assert (r["ok"], r["sent"], r["received"], r["error_kind"], r["errors"]) == (False, 2, 0, "timeout", [])


def test_unrouted_address_fails_at_once(make_netns):
    ns = make_netns("icmp")  # lo only: no route to anything else
    with LocalRunner(f"/run/netns/{ns}") as runner:
        # a 30 s timeout and a 20 s runner limit: the probe must not wait for an answer at all
        res = runner.call("icmp:ping", {"dst": "10.1.2.3", "count": 1, "timeout": 30.0}, timeout=20)
        assert res.ok, res.error
        r = res.value
    assert (r["ok"], r["sent"], r["error_kind"]) == (False, 0, "unreachable")
    assert r["errors"][0]["text"] == "Network is unreachable"
