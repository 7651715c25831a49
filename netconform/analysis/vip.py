"""Why a Service ClusterIP did not answer: its attempts, compared with each backend asked directly.

Pure: the inputs are the JSON of `probes.vip.through` (attempts through the ClusterIP) and of
`probes.vip.each` (one attempt at every ready endpoint), so the sentence can be unit-tested on
recorded results. Whatever kube-proxy happened to pick, the verdict names the broken part:

=====================  ======================================================================
verdict                what the direct answers show
=====================  ======================================================================
no-endpoints           the Service has no ready endpoint: kube-proxy rejects the ClusterIP
dead-backends          some endpoints answer, others do not: the Service still balances onto
                       dead backends that are Ready (and, when so many attempts missing the
                       live ones cannot be chance, the translation does not reach them either)
translation-broken     every endpoint answers directly: the ClusterIP translation here is broken
translation-partial    some attempts answered, but far fewer than the live endpoints make
                       likely: only some flows are translated (e.g. the rules are gone and
                       old connection-tracking entries still carry a few)
all-backends-down      no endpoint answers directly either: every backend is down or
                       unreachable from here
=====================  ======================================================================

>>> b = [Backend("default/web-x", "10.0.1.5", 80), Backend("default/web-y", "10.0.2.7", 80)]
>>> thr = {"ok": False, "attempted": 3, "answered": 0, "attempts": [{"ok": False, "error_kind": "timeout"}] * 3}
>>> v = diagnose("10.96.0.100", 80, thr, list(zip(b, [{"ok": False, "error_kind": "timeout"}, {"ok": True}])))
>>> v.verdict, [d.name for d, _ in v.dead]
('dead-backends', ['default/web-x'])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any, Literal

from netconform.retry import P_CHANCE, chance_all_missed, chance_so_few_answered

__all__ = ["Backend", "VipVerdict", "attempts_summary", "diagnose", "diagnose_partial", "failure_phrase"]

Verdict = Literal["answered", "no-endpoints", "dead-backends", "translation-broken", "all-backends-down",
                  "translation-partial"]


@dataclass(frozen=True)
class Backend:
    """A ready endpoint of the Service: `name` is "ns/pod" for pod endpoints, else its IP."""

    name: str
    ip: str
    port: int
    node: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.ip}:{self.port})" if self.name != self.ip else f"{self.ip}:{self.port}"


@dataclass
class VipVerdict:
    """The diagnosis of one ClusterIP: the parts it blames are `dead` (backend, how it fails)."""

    vip: str
    verdict: Verdict
    sentence: str
    dead: list[tuple[Backend, str]] = field(default_factory=list)
    alive: list[Backend] = field(default_factory=list)
    attempted: int = 0
    answered: int = 0
    chance: float | None = None  # probability that kube-proxy alone missed every live backend
    translation_suspect: bool = False


# How one failed attempt reads, by error kind: (past tense for attempts, present for a backend).
_PHRASES = {
    "timeout": ("timed out", "times out"),
    "refused": ("were refused", "refuses connections"),
    "unreachable": ("were unreachable", "is unreachable"),
    "reset": ("were reset", "resets connections"),
    "permission": ("were blocked locally", "is blocked locally"),
    "tls-verify-failed": ("failed TLS verification", "fails TLS verification against the cluster CA"),
    "tls-handshake-timeout": ("stalled in the TLS handshake", "stalls in the TLS handshake"),
    "tls-error": ("failed the TLS handshake", "fails the TLS handshake"),
    "http-timeout": ("got no HTTP answer", "gives no HTTP answer"),
    "http-error": ("got a broken HTTP answer", "gives a broken HTTP answer"),
    "servfail": ("answered SERVFAIL", "answers SERVFAIL"),
    "query-refused": ("answered REFUSED", "answers REFUSED"),
    "truncated": ("came back truncated", "answers truncated"),
}


def failure_phrase(attempt: dict[str, Any], *, present: bool = True) -> str:
    """ "times out", "answers HTTP 500", ... for one failed attempt (probes.vip.Attempt as JSON)."""
    kind = attempt.get("error_kind") or "error"
    if kind == "http-status" or (attempt.get("detail") and kind not in _PHRASES):
        detail = attempt.get("detail") or kind
        return f"answers {detail}" if present else f"answered {detail}"
    if kind in _PHRASES:
        return _PHRASES[kind][1 if present else 0]
    text = f"{kind}: {attempt.get('error')}" if attempt.get("error") else kind
    return f"fails ({text})" if present else f"failed ({text})"


def attempts_summary(vip: str, through: dict[str, Any]) -> str:
    """ "20 of 20 attempts through 172.20.0.1:443 were refused", "3 of 3 ... failed (2 timeout, 1 refused)"."""
    failed = [a for a in through.get("attempts") or [] if not a.get("ok")]
    n = through.get("attempted") or len(through.get("attempts") or [])
    phrases: dict[str, int] = {}
    for a in failed:
        p = failure_phrase(a, present=False)
        phrases[p] = phrases.get(p, 0) + 1
    if len(phrases) == 1:
        how = next(iter(phrases))
    else:
        how = "failed (" + ", ".join(f"{c} {p}" for p, c in sorted(phrases.items(), key=lambda kv: -kv[1])) + ")"
    if n == 1:
        return f"the attempt through {vip} {how.replace('were ', 'was ')}"
    return f"{len(failed)} of {n} attempts through {vip} {how}"


def _chance_text(p: float) -> str:
    if p >= 0.01:
        return f"{p:.0%}"
    return f"{p:.0e}".replace("e-0", "e-")


def diagnose(vip_ip: str, vip_port: int, through: dict[str, Any], direct: list[tuple[Backend, dict[str, Any]]],
             *, source: str = "", node: str = "", service: str = "", self_ips: Collection[str] = ()) -> VipVerdict:
    """The verdict and its one sentence for a ClusterIP, from its attempts and the direct answers.

    `direct` pairs every ready endpoint with its direct attempt; `source` says where the attempts
    left from ("pod default/web-0"), `node` whose kube-proxy translates them, `service` names the
    Service ("default/web") whose rules those are. An endpoint at one of `self_ips` is the source
    itself: its direct answer never leaves the pod, so it proves nothing about the network and
    only counts when it is the Service's only endpoint.
    """
    vip = f"{vip_ip}:{vip_port}"
    attempted, answered = int(through.get("attempted") or 0), int(through.get("answered") or 0)
    base = VipVerdict(vip=vip, verdict="answered", sentence="", attempted=attempted, answered=answered)
    if through.get("ok"):
        base.sentence = f"{answered} of {attempted} attempts through {vip} answered"
        return base
    summary = attempts_summary(vip, through)
    on = f" on node {node}" if node else ""
    rules = f" (kube-proxy rules for {service})" if service else ""
    if not direct:
        base.verdict = "no-endpoints"
        base.sentence = (f"{summary}; the Service has no ready endpoints, so kube-proxy rejects its ClusterIP"
                         " — the backends are all gone or not Ready")
        return base
    others = [(b, r) for b, r in direct if b.ip not in self_ips]
    itself = [b for b, r in direct if b.ip in self_ips and r.get("ok")] if others else []
    considered = others or direct
    alive = [b for b, r in considered if r.get("ok")]
    dead = [(b, failure_phrase(r)) for b, r in considered if not r.get("ok")]
    base.alive, base.dead = alive, dead
    if not dead:
        base.verdict = "translation-broken"
        names = ", ".join(b.label for b in alive)
        base.sentence = (f"{summary}; every ready endpoint ({names}) answers directly — the ClusterIP "
                         f"translation{on} is broken{rules}")
        return base
    if not alive:
        base.verdict = "all-backends-down"
        names = "; ".join(f"{b.label} {how}" for b, how in dead)
        also = (f", only {itself[0].label} — {source or 'the source'} itself — answers" if itself else "")
        base.sentence = (f"{summary}; no {'other ' if itself else ''}ready endpoint answers directly either "
                         f"({names}){also} — every backend of the Service is down or unreachable from "
                         f"{source or 'here'}")
        return base
    base.verdict = "dead-backends"
    base.chance = chance_all_missed(len(considered), len(alive), attempted)
    bad = ", ".join(f"endpoint {b.label} {how} directly" for b, how in dead)
    good = ", ".join(b.label for b in alive)
    plural = len(dead) > 1
    sentence = (f"{summary}; {bad}, {good} {'answer' if len(alive) > 1 else 'answers'} — the Service still "
                f"balances onto {'dead backends that are' if plural else 'a dead backend that is'} Ready")
    if base.chance < P_CHANCE:
        base.translation_suspect = True
        sentence += (f", and {attempted} attempts all missing the live {'ones' if len(alive) > 1 else 'one'} "
                     f"is not chance (p = {_chance_text(base.chance)}): the translation{on} does not lead to "
                     f"{'them' if len(alive) > 1 else 'it'} either{rules}")
    else:
        sentence += (f" ({attempted} attempts all land on the dead {'ones' if plural else 'one'} by chance with "
                     f"p = {_chance_text(base.chance)})")
    base.sentence = sentence
    return base


def diagnose_partial(vip_ip: str, vip_port: int, through: dict[str, Any], direct: list[tuple[Backend, dict[str, Any]]],
                     *, node: str = "", service: str = "", self_ips: Collection[str] = ()) -> VipVerdict | None:
    """None when a ClusterIP that answered did so about as often as its live endpoints make
    likely; else the verdict that its translation works only for some flows.

    Asked only after the first attempt failed (then a whole wave was sampled). A flow that reuses
    a source port of a flow translated earlier keeps that translation in conntrack (UDP: 30 s
    and more), so a node whose rules are gone still answers now and then; a uniform pick among
    the live endpoints would answer most attempts.
    """
    attempted, answered = int(through.get("attempted") or 0), int(through.get("answered") or 0)
    alive = [b for b, r in direct if r.get("ok")]
    # The source's own endpoint answering directly says nothing about reaching it through the
    # ClusterIP: that goes out and back in through its own port (hairpin), which may be off.
    # Expect nothing of it.
    expected = [b for b in alive if b.ip not in self_ips]
    chance = chance_so_few_answered(answered, attempted, len(direct), len(expected))
    if not through.get("ok") or not expected or chance >= P_CHANCE:
        return None
    vip = f"{vip_ip}:{vip_port}"
    on = f" on node {node}" if node else ""
    rules = f" (kube-proxy rules for {service})" if service else ""
    expect = round(attempted * len(expected) / len(direct))
    sentence = (f"only {answered} of {attempted} attempts through {vip} answered, though {len(alive)} of "
                f"{len(direct)} ready endpoints ({', '.join(b.label for b in alive)}) answer directly and about "
                f"{expect} should have (p = {_chance_text(chance)}) — the translation{on} works only for some "
                f"flows{rules}: missing rules whose old connection-tracking entries still carry a few")
    dead = [(b, failure_phrase(r)) for b, r in direct if not r.get("ok")]
    return VipVerdict(vip=vip, verdict="translation-partial", sentence=sentence, dead=dead, alive=alive,
                      attempted=attempted, answered=answered, chance=chance, translation_suspect=True)
