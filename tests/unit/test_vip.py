"""ClusterIP verdicts: attempts through a Service VIP, the direct answers, and the sentence that names
the broken part — on probe results recorded from the lab's real sockets (tests/unit/data/vip/, each
file says what was broken when it was recorded), and the probe itself on loopback."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from netconform.analysis.vip import Backend, attempts_summary, diagnose, diagnose_partial, failure_phrase
from netconform.probes import vip
from netconform.retry import attempts_for, chance_all_missed, chance_so_few_answered

DATA = Path(__file__).parent / "data" / "vip"


def _recorded(name: str) -> tuple[dict, list[tuple[Backend, dict]], dict]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    backends = [Backend(e["name"], e["ip"], e["port"]) for e in doc["endpoints"]]
    return doc["through"], list(zip(backends, doc["direct"])), doc


# -- how many attempts -------------------------------------------------------------------------
def test_attempts_make_chance_below_one_in_a_million():
    for k in range(2, 12):
        n = attempts_for(k)
        assert chance_all_missed(k, 1, n) < 1e-6 <= chance_all_missed(k, 1, n - 1), k
    assert attempts_for(2) == 20  # the figure: one dead endpoint of two
    assert attempts_for(1) == attempts_for(0) == 3
    assert attempts_for(10_000) == 256  # bounded; the time budget bounds it further


def test_chance_edges():
    assert chance_all_missed(3, 0, 5) == 1.0  # nothing alive: failing is certain, not chance
    assert chance_all_missed(3, 3, 5) == 0.0
    assert chance_all_missed(4, 1, 2) == pytest.approx(0.5625)


# -- the diagnosis, one case per verdict -------------------------------------------------------
def test_one_dead_of_two_names_the_dead_endpoint_and_the_odds():
    through, direct, _ = _recorded("apiserver-one-dead-of-two")
    v = diagnose("172.20.0.1", 443, through, direct, source="node ip-10-0-0-10", node="ip-10-0-0-10",
                 service="default/kubernetes")
    assert v.verdict == "dead-backends"
    assert [(b.label, how) for b, how in v.dead] == [("10.0.200.11:443", "refuses connections")]
    assert [b.label for b in v.alive] == ["10.0.200.12:443"]
    assert v.sentence == (
        "2 of 2 attempts through 172.20.0.1:443 were refused; endpoint 10.0.200.11:443 refuses connections "
        "directly, 10.0.200.12:443 answers — the Service still balances onto a dead backend that is Ready "
        "(2 attempts all land on the dead one by chance with p = 25%)")
    assert not v.translation_suspect and v.chance == 0.25


def test_many_attempts_missing_the_live_endpoint_is_not_chance():
    # 20 refused attempts (recorded with every backend down) against one dead and one live backend
    through, _, _ = _recorded("kube-dns-metrics-all-dead")
    _, direct, _ = _recorded("apiserver-one-dead-of-two")
    v = diagnose("172.20.0.1", 443, through, direct, node="ip-10-0-0-10", service="default/kubernetes")
    assert v.verdict == "dead-backends" and v.translation_suspect
    assert "10.0.200.11:443 refuses connections directly" in v.sentence
    assert ("20 attempts all missing the live one is not chance (p = 1e-6): the translation on node "
            "ip-10-0-0-10 does not lead to it either (kube-proxy rules for default/kubernetes)") in v.sentence


def test_all_dead_names_every_backend():
    through, direct, doc = _recorded("kube-dns-udp-all-dead")
    v = diagnose("172.20.0.10", 53, through, direct, source=doc["source"], node="ip-10-0-0-11")
    assert v.verdict == "all-backends-down" and not v.alive
    assert [b.name for b, _ in v.dead] == [e["name"] for e in doc["endpoints"]]
    # ICMP port-unreachable is rate limited, so some UDP attempts through the VIP time out
    assert v.sentence.startswith("20 of 20 attempts through 172.20.0.10:53 failed (")
    for e in doc["endpoints"]:
        assert f"{e['name']} ({e['ip']}:53) refuses connections" in v.sentence
    assert v.sentence.endswith(f"every backend of the Service is down or unreachable from {doc['source']}")


@pytest.mark.parametrize("name", ["kube-dns-udp-translation-missing", "kube-dns-tcp-translation-missing"])
def test_every_backend_alive_blames_the_translation(name):
    through, direct, _ = _recorded(name)
    v = diagnose("172.20.0.10", 53, through, direct, node="ip-10-0-0-11", service="kube-system/kube-dns")
    assert v.verdict == "translation-broken" and not v.dead
    assert v.sentence.startswith("17 of 17 attempts through 172.20.0.10:53 timed out; every ready endpoint (")
    assert v.sentence.endswith("answers directly — the ClusterIP translation on node ip-10-0-0-11 is broken "
                               "(kube-proxy rules for kube-system/kube-dns)")


def test_a_source_that_is_its_own_endpoint_does_not_count_as_a_live_backend():
    through, direct, doc = _recorded("web-source-cut-off")
    me = next(b for b, r in direct if r["ok"])
    v = diagnose("172.20.0.100", 80, through, direct, source=doc["source"], node="ip-10-0-0-10",
                 self_ips=[me.ip])
    assert v.verdict == "all-backends-down", v.sentence
    assert f"only {me.label} — {doc['source']} itself — answers" in v.sentence
    # without knowing the source's own IP it would wrongly blame the others as dead backends
    assert diagnose("172.20.0.100", 80, through, direct).verdict == "dead-backends"


def test_a_lone_endpoint_that_is_the_source_still_counts():
    through, direct, _ = _recorded("web-source-cut-off")
    me = [(b, r) for b, r in direct if r["ok"]]
    assert diagnose("172.20.0.100", 80, through, me, self_ips=[me[0][0].ip]).verdict == "translation-broken"


def test_no_ready_endpoints():
    through, _, _ = _recorded("kube-dns-metrics-all-dead")
    v = diagnose("172.20.0.10", 9153, through, [])
    assert v.verdict == "no-endpoints"
    assert "the Service has no ready endpoints, so kube-proxy rejects its ClusterIP" in v.sentence


def test_answered():
    through, direct, _ = _recorded("web-one-endpoint-cut-off-answered")
    v = diagnose("172.20.0.100", 80, through, direct)
    assert v.verdict == "answered" and v.sentence == "1 of 1 attempts through 172.20.0.100:80 answered"


def _answered_late(answered: int, attempted: int) -> dict:
    """A recorded wave that answered (web-one-endpoint-cut-off-answered) stretched to `attempted`
    attempts of which `answered` answered: the shape `through` gives after a failed first attempt."""
    through, _, _ = _recorded("web-one-endpoint-cut-off-answered")
    ok, bad = through["attempts"][0], {"ok": False, "error_kind": "timeout"}
    return {**through, "attempted": attempted, "answered": answered,
            "attempts": [bad] * (attempted - answered) + [ok] * answered}


def test_an_answer_now_and_then_from_live_backends_is_partial_translation():
    # kube-dns rules gone on the node; a query that reused the source port of an older flow was
    # still translated by conntrack: 1 of 17 answered while both replicas answer directly
    _, direct, _ = _recorded("kube-dns-udp-translation-missing")
    v = diagnose_partial("172.20.0.10", 53, _answered_late(1, 17), direct, node="ip-10-0-0-11",
                         service="kube-system/kube-dns")
    assert v is not None and v.verdict == "translation-partial" and v.translation_suspect
    assert v.sentence.startswith("only 1 of 17 attempts through 172.20.0.10:53 answered, though 2 of 2 ready endpoints")
    assert "the translation on node ip-10-0-0-11 works only for some flows (kube-proxy rules for kube-system/kube-dns)" \
        in v.sentence


def test_answers_in_line_with_the_live_backends_are_fine():
    _, one_dead, _ = _recorded("apiserver-one-dead-of-two")
    assert diagnose_partial("172.20.0.1", 443, _answered_late(3, 17), one_dead) is None  # ~half expected
    _, both, _ = _recorded("kube-dns-udp-translation-missing")
    assert diagnose_partial("172.20.0.10", 53, _answered_late(16, 17), both) is None  # one lost attempt
    _, none_alive, _ = _recorded("kube-dns-udp-all-dead")
    assert diagnose_partial("172.20.0.10", 53, _answered_late(1, 17), none_alive) is None  # nothing to judge by


def test_the_sources_own_endpoint_is_not_expected_to_answer_through_the_clusterip():
    # recorded in the flannel lab before its bridge ports had hairpin on: from a web pod to its own
    # Service, the attempts kube-proxy sent back to the pod itself timed out (7 of 16 answered)
    through, direct, _ = _recorded("web-source-cut-off")
    alive = [(b, {**r, "ok": True}) for b, r in direct]  # every endpoint answers directly
    five = alive + alive[1:]  # the pod itself and four others
    me = five[0][0]
    few = _answered_late(7, 16)
    assert diagnose_partial("172.20.0.100", 80, few, five, self_ips=[me.ip]) is None
    assert diagnose_partial("172.20.0.100", 80, few, five) is not None  # without knowing "me"
    # far fewer than the four others make likely is still partial translation
    assert diagnose_partial("172.20.0.100", 80, _answered_late(1, 16), five, self_ips=[me.ip]) is not None


def test_chance_so_few_answered_is_a_binomial_tail():
    assert chance_so_few_answered(17, 17, 2, 2) == pytest.approx(1.0)
    assert chance_so_few_answered(0, 20, 2, 1) == pytest.approx(0.525 ** 20)
    assert chance_so_few_answered(3, 10, 4, 0) == 1.0


def test_phrases():
    assert failure_phrase({"error_kind": "http-status", "detail": "HTTP 500"}) == "answers HTTP 500"
    assert failure_phrase({"error_kind": "timeout"}, present=False) == "timed out"
    assert failure_phrase({"error_kind": "weird", "error": "boom"}) == "fails (weird: boom)"
    one = {"attempted": 1, "attempts": [{"ok": False, "error_kind": "refused"}]}
    assert attempts_summary("10.96.0.1:80", one) == "the attempt through 10.96.0.1:80 was refused"


# -- the probe on loopback -----------------------------------------------------------------------




@pytest.fixture
def silent_udp():
    """A UDP port that receives and never answers: every DNS attempt times out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_refusals_are_retried_in_waves_up_to_the_count(closed_port):
    r = vip.through("tcp", "127.0.0.1", closed_port, max_attempts=20, timeout=1.0, budget_s=60.0, wave=8)
    assert (r.ok, r.answered, r.attempted, r.waves) == (False, 0, 20, 3)  # (1 + 7) + 8 + 4
    assert r.failures == {"refused": 20} and r.last_failure["error_kind"] == "refused"


def test_first_answer_ends_the_run(listener):
    r = vip.through("tcp", "127.0.0.1", listener, max_attempts=20, timeout=1.0, budget_s=60.0)
    assert (r.ok, r.attempted, r.waves) == (True, 1, 1) and r.answer["ok"]


def test_a_wave_runs_its_attempts_together(silent_udp):
    r = vip.through("dns", "127.0.0.1", silent_udp, max_attempts=7, timeout=0.3, budget_s=60.0, wave=6,
                    name="kubernetes.default.svc.cluster.local.")
    assert (r.attempted, r.waves, r.failures) == (7, 2, {"timeout": 7})
    # the first attempt got no answer in time: the rest of its wave joined it, all at one moment
    assert r.attempts[0].started_ms == 0.0
    assert len({a.started_ms for a in r.attempts[1:6]}) == 1 and r.attempts[1].started_ms > 0
    assert r.attempts[6].started_ms > r.attempts[1].started_ms  # the second wave, later


def test_the_time_budget_stops_new_waves(silent_udp):
    r = vip.through("dns", "127.0.0.1", silent_udp, max_attempts=200, timeout=0.2, budget_s=0.0,
                    name="x.cluster.local.")
    assert (r.attempted, r.waves) == (16, 1)  # the first (hedged) wave only


def test_each_asks_every_target_in_order(listener, closed_port):
    out = vip.each("tcp", [["127.0.0.1", closed_port], ["127.0.0.1", listener]], timeout=1.0)
    assert [(a.port, a.ok, a.error_kind) for a in out] == [(closed_port, False, "refused"), (listener, True, None)]
    assert vip.each("tcp", [], timeout=1.0) == []


@pytest.fixture
def refusing_dns():
    """A DNS server on loopback that answers every query with rcode REFUSED."""
    import threading

    import dns.message
    import dns.rcode

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(4096)
            except OSError:
                continue
            reply = dns.message.make_response(dns.message.from_wire(data))
            reply.set_rcode(dns.rcode.REFUSED)
            s.sendto(reply.to_wire(), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname()[1]
    stop.set()
    t.join(2)
    s.close()


def test_any_rcode_counts_as_an_answer_only_when_asked(refusing_dns):
    name = "kubernetes.default.svc.cluster.local."
    strict = vip.through("dns", "127.0.0.1", refusing_dns, max_attempts=3, timeout=1.0, budget_s=60.0, name=name)
    assert (strict.ok, strict.failures) == (False, {"query-refused": 3})
    assert strict.attempts[0].detail == "REFUSED"
    loose = vip.through("dns", "127.0.0.1", refusing_dns, max_attempts=3, timeout=1.0, budget_s=60.0, name=name,
                        any_rcode=True)
    assert (loose.ok, loose.attempted) == (True, 1)


def test_bad_requests_are_the_callers_bug(closed_port):
    with pytest.raises(ValueError, match="unknown attempt kind"):
        vip.through("icmp", "127.0.0.1", closed_port, max_attempts=1)
    with pytest.raises(ValueError, match="max_attempts"):
        vip.through("tcp", "127.0.0.1", closed_port, max_attempts=0)
