"""Cluster DNS from the pod's netns, with the pod's real resolv.conf, UDP and TCP separately, and
each CoreDNS replica directly — so a failure says *which* part is broken: a replica, UDP, or the
Service path on the pod's node. The cluster domain is read from the pod's search list, never assumed.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from fixtures.clusterip import ask_directly, ask_each_directly, reach_clusterip, through_args
from netconform import cases
from netconform.analysis.resolvconf import cluster_domain_from_search, parse_resolv_conf
from netconform.analysis.vip import attempts_summary, failure_phrase
from plugins.targets import targets

PROTOS = [pytest.param(False, id="udp"), pytest.param(True, id="tcp")]


@dataclass(frozen=True)
class Name:
    """A name the pod must resolve: `expect` is the exact answer set (None: any answer)."""

    label: str  # test id part
    name: str   # may be relative ("kubernetes.default"): resolved through the search list
    expect: tuple[str, ...] | None
    what: str


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plugin = targets(metafunc.config)
    if plugin is None or plugin.snapshot is None:
        return
    snap = plugin.snapshot
    if "name_case" in metafunc.fixturenames:
        params = [pytest.param("kubernetes.default", id="kubernetes.default"),
                  pytest.param("kubernetes.default.svc", id="kubernetes.default.svc"),
                  pytest.param("headless", id="headless")]
        params += [pytest.param(f"extra:{n}", id=n.split("=")[0]) for n in metafunc.config.option.dns_name]
        metafunc.parametrize("name_case", params)
    if "replica" in metafunc.fixturenames:
        reps = cases.dns_replicas(snap, "UDP")
        metafunc.parametrize("replica", [pytest.param(r, id=r.name.split("/")[-1]) for r in reps] or [
            pytest.param(None, id="no-replicas", marks=pytest.mark.skip(
                reason="kube-dns has no ready CoreDNS endpoints in its EndpointSlices"))])


@pytest.fixture
def dns_env(request, pod, resolv_conf, evidence):
    """(parsed resolv.conf, cluster domain, kube-dns ClusterIP, kubernetes ClusterIP)."""
    conf = parse_resolv_conf(resolv_conf)
    evidence.add("resolv.conf", resolv_conf, f"pod {pod.key}")
    domain = cluster_domain_from_search(conf, pod.namespace)
    if not domain:
        pytest.skip(f"pod {pod.key}'s resolv.conf has no '{pod.namespace}.svc.<domain>' search entry "
                    f"(dnsPolicy not ClusterFirst?), so the cluster domain cannot be discovered")
    snap = targets(request.config).snapshot
    k8s = cases.kubernetes_service(snap)
    return conf, domain, cases.dns_service_ip(snap), k8s.cluster_ip if k8s else ""


def _name(request, name_case: str, pod, domain: str, k8s_ip: str) -> Name:
    snap = targets(request.config).snapshot
    if name_case == "kubernetes.default":
        return Name(name_case, "kubernetes.default", (k8s_ip,), "the kubernetes Service (short name, via the search list)")
    if name_case == "kubernetes.default.svc":
        return Name(name_case, f"kubernetes.default.svc.{domain}.", (k8s_ip,), "the kubernetes Service")
    if name_case == "headless":
        found = cases.headless_service(snap, pod.namespace)
        if not found:
            pytest.skip("no headless Service with ready endpoints in the cluster")
        ns, svc, ips = found
        return Name(name_case, f"{svc}.{ns}.svc.{domain}.", tuple(sorted(ips)), f"headless Service {ns}/{svc}")
    name, _, ip = name_case.removeprefix("extra:").partition("=")
    return Name(name, name, (ip,) if ip else None, f"--dns-name {name}")


def _why_not(pod_probe, fqdn: str, servers: list[str], snap, tcp: bool, node: str) -> str:
    """Differential diagnosis: ask the replicas directly (all at once), and the other transport
    through the first nameserver — the very questions dns.replica and dns.clusterip ask, so they
    are asked once per run (fixtures/clusterip.py)."""
    proto, other_proto = ("TCP", "UDP") if tcp else ("UDP", "TCP")
    replicas = cases.dns_replicas(snap, proto)
    other = pod_probe("vip:through", **through_args(pod_probe, servers[0], 53, cases.dns_replicas(snap, other_proto),
                                                    "dns", name=fqdn, tcp=not tcp)) if servers else None
    direct = ask_each_directly(pod_probe, "dns", replicas, name=fqdn, tcp=tcp)
    good = [r.name for r, d in zip(replicas, direct) if d["ok"]]
    bad = [r.name for r, d in zip(replicas, direct) if not d["ok"]]
    if other and other["ok"] and not good:
        return f"{other_proto} to {servers[0]} answered — {proto}/53 is filtered on the way to CoreDNS"
    if direct and not bad:
        return (f"every CoreDNS replica ({', '.join(good)}) answered directly — the Service path to "
                f"{servers[0]} on node {node} is broken (kube-proxy rules for kube-dns)")
    if direct and not good:
        return f"no CoreDNS replica answered directly ({', '.join(bad)}) — cluster DNS itself is down"
    if bad:
        return f"replica(s) {', '.join(bad)} did not answer directly while {', '.join(good)} did"
    return "no CoreDNS replica is known to compare with"


def _answer_text(r: dict) -> str:
    if r.get("ok"):
        return f"answered {sorted(r['answers'])}" if r.get("answers") else f"answered {r.get('outcome')}"
    return f"{r.get('outcome') or r.get('error_kind')} ({r.get('error', '')})".strip()


@pytest.mark.check("dns.resolves")
@pytest.mark.parametrize("tcp", PROTOS)
def test_dns_resolves(request, pod, name_case, tcp, pod_probe, dns_env, resolv_conf):
    conf, domain, dns_ip, k8s_ip = dns_env
    n = _name(request, name_case, pod, domain, k8s_ip)
    r = pod_probe("dns:resolve_like_pod", resolv_conf=resolv_conf, name=n.name, tcp=tcp,
                  timeout=pod_probe.timeout, attempts=1)
    proto = "TCP" if tcp else "UDP"
    if r["ok"] and (n.expect is None or tuple(sorted(r["answers"])) == n.expect):
        return
    if r["ok"]:
        pytest.fail(f"pod {pod.key}: {n.name} ({n.what}) resolved to {sorted(r['answers'])} over {proto}, "
                    f"expected {list(n.expect)} — stale or wrong records", pytrace=False)
    fqdn = f"kubernetes.default.svc.{domain}."
    why = _why_not(pod_probe, fqdn, list(conf.nameservers), targets(request.config).snapshot, tcp, pod.node)
    pytest.fail(f"pod {pod.key}: {n.name} ({n.what}) did not resolve over {proto} through "
                f"{', '.join(conf.nameservers)}: {_answer_text(r)}; {why}", pytrace=False)


@pytest.mark.check("dns.nxdomain")
@pytest.mark.parametrize("tcp", PROTOS)
def test_dns_nxdomain(request, pod, tcp, pod_probe, dns_env):
    conf, domain, _, _ = dns_env
    if not conf.nameservers:
        pytest.skip(f"pod {pod.key}'s resolv.conf lists no nameserver")
    server = conf.nameservers[0]
    name = f"netconform-{secrets.token_hex(4)}.{pod.namespace}.svc.{domain}."
    replicas = cases.dns_replicas(targets(request.config).snapshot, "TCP" if tcp else "UDP")
    # The nameserver is normally the kube-dns ClusterIP: retried like one, so a dead replica
    # behind it cannot decide what this check is about (no wildcard answers).
    r = pod_probe("vip:through", **through_args(pod_probe, server, 53, replicas, "dns", name=name, tcp=tcp))
    proto = "TCP" if tcp else "UDP"
    if not r["ok"]:
        why = _why_not(pod_probe, f"kubernetes.default.svc.{domain}.", [server], targets(request.config).snapshot,
                       tcp, pod.node)
        pytest.fail(f"pod {pod.key}: {server} gave no answer over {proto} for {name} (cannot exist): "
                    f"{attempts_summary(server + ':53', r)}; {why}", pytrace=False)
    answer = r["answer"]
    assert answer["rcode"] == "NXDOMAIN", (
        f"pod {pod.key}: {name} (cannot exist) got "
        f"{'answers ' + str(answer['answers']) + ' (a wildcard)' if answer['answers'] else answer['rcode']} "
        f"from {server} over {proto} instead of NXDOMAIN")


@pytest.mark.check("dns.clusterip")
@pytest.mark.parametrize("tcp", PROTOS)
def test_dns_clusterip(request, pod, tcp, pod_probe, dns_env):
    conf, domain, dns_ip, k8s_ip = dns_env
    if not dns_ip or dns_ip == "None":
        pytest.skip("no kube-dns Service ClusterIP in the cluster")
    snap = targets(request.config).snapshot
    fqdn = f"kubernetes.default.svc.{domain}."
    proto, other_proto = ("TCP", "UDP") if tcp else ("UDP", "TCP")
    out = reach_clusterip(pod_probe, dns_ip, 53, cases.dns_replicas(snap, proto), "dns", node=pod.node,
                          service=cases.dns_service_key(snap), self_ips=pod.ips, name=fqdn, tcp=tcp)
    if out.ok:
        answer = out.answer
        assert answer["answers"] == [k8s_ip], (
            f"pod {pod.key}: kube-dns ClusterIP {dns_ip} answered {fqdn} with {answer['answers'] or answer['rcode']}, "
            f"expected [{k8s_ip}]")
        return
    why = out.sentence
    if out.verdict.verdict == "all-backends-down":
        other = pod_probe("vip:through", **through_args(pod_probe, dns_ip, 53, cases.dns_replicas(snap, other_proto),
                                                        "dns", name=fqdn, tcp=not tcp))
        why += (f"; {other_proto} to {dns_ip} answered — {proto}/53 is filtered on the way to CoreDNS" if other["ok"]
                else f"; {other_proto} gets no answer either — cluster DNS itself is down")
    pytest.fail(f"pod {pod.key}: kube-dns ClusterIP {dns_ip} gave no answer over {proto} on node {pod.node}: {why}",
                pytrace=False)


@pytest.mark.check("dns.replica")
@pytest.mark.parametrize("tcp", PROTOS)
def test_dns_replica(pod, replica, tcp, pod_probe, dns_env):
    conf, domain, _, k8s_ip = dns_env
    fqdn = f"kubernetes.default.svc.{domain}."
    r = ask_directly(pod_probe, "dns", replica.ip, replica.port, name=fqdn, tcp=tcp)
    proto = "TCP" if tcp else "UDP"
    assert r["ok"] and r["answers"] == [k8s_ip], (
        f"pod {pod.key}: CoreDNS replica {replica.name} ({replica.ip}, node {replica.node or '?'}) "
        f"did not answer {fqdn} over {proto}: "
        f"{(r['answers'] or r['detail']) if r['ok'] else failure_phrase(r) + (' (' + r['error'] + ')' if r['error'] else '')}")
