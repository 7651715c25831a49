"""kube-proxy rule rendering: chain names, rule shapes and the apply planner, without root."""
from __future__ import annotations

import base64
import hashlib
import shlex

import pytest

from netconform.lab import kubeproxy as kp
from netconform.lab.topology import LabSpec, PortSpec, ServiceSpec, build_spec


def tables(text: str) -> dict[str, list[str]]:
    """Restore text -> {table: [lines without comments]} (sections of one table merged)."""
    out: dict[str, list[str]] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            out.setdefault(table, [])
        elif line and not line.startswith("#") and line != "COMMIT":
            out[table].append(line)
    return out


def chain_rules(lines: list[str], chain: str) -> list[str]:
    return [ln for ln in lines if ln.startswith(f"-A {chain} ")]


def declared(lines: list[str]) -> list[str]:
    return [ln[1:].split()[0] for ln in lines if ln.startswith(":")]


def jump_target(line: str) -> str:
    tokens = shlex.split(line)
    return tokens[tokens.index("-j") + 1]


@pytest.fixture(scope="module")
def flannel() -> LabSpec:
    return build_spec("u", "flannel", nodes=3, pods_per_node=3)


@pytest.fixture(scope="module")
def vpc() -> LabSpec:
    return build_spec("v", "vpc-cni", nodes=2, pods_per_node=3)


# -- chain names -----------------------------------------------------------------------------

def test_chain_names_match_kube_proxy_examples():
    # expected values from kube-proxy's own proxier tests and from any real cluster's kube-dns
    assert kp.service_chain_name("ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert kp.endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert kp.service_chain_name("kube-system/kube-dns:dns", "udp") == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert kp.service_chain_name("kube-system/kube-dns:dns-tcp", "tcp") == "KUBE-SVC-ERIFXISQEP7F7OF4"
    assert kp.service_chain_name("kube-system/kube-dns:metrics", "tcp") == "KUBE-SVC-JD5MR3NA4I4DYORP"
    assert kp.service_chain_name("default/kubernetes:https", "tcp") == "KUBE-SVC-NPX46M4PTMTKRN6Y"


def test_chain_name_is_base32_sha256_of_name_and_lowercase_protocol():
    expected = base64.b32encode(hashlib.sha256(b"default/web:httptcp10.244.1.7:8080").digest())[:16]
    assert kp.endpoint_chain_name("default/web:http", "TCP", "10.244.1.7:8080") == "KUBE-SEP-" + expected.decode()
    assert kp.service_chain_name("a/b:p", "TCP") == kp.service_chain_name("a/b:p", "tcp")
    assert kp.service_chain_name("a/b:p", "udp") != kp.service_chain_name("a/b:p", "tcp")
    assert all(len(c) <= 28 for c in (kp.service_chain_name("x" * 300, "sctp"),))  # iptables limit


def test_service_port_name_formats_like_kube_proxy():
    assert kp.service_port_name("default", "web", "http") == "default/web:http"
    assert kp.service_port_name("default", "web") == "default/web"  # unnamed port: no colon


def test_rendered_kube_dns_uses_the_well_known_chains(flannel):
    nat = tables(kp.render_rules(flannel, flannel.nodes[0].name))["nat"]
    for chain in ("KUBE-SVC-TCOU7JCQXEZGVUNU", "KUBE-SVC-ERIFXISQEP7F7OF4", "KUBE-SVC-JD5MR3NA4I4DYORP",
                  "KUBE-SVC-NPX46M4PTMTKRN6Y"):
        assert chain in declared(nat)


# -- per-service rules -----------------------------------------------------------------------

@pytest.mark.parametrize("flavor", ["flannel", "vpc-cni"])
def test_every_cluster_ip_port_has_service_rule_and_one_sep_per_endpoint(flavor):
    spec = build_spec("w", flavor, nodes=3, pods_per_node=4)
    nat = tables(kp.render_rules(spec, spec.nodes[1].name))["nat"]
    checked = 0
    for svc in spec.services:
        if svc.headless:
            continue
        ips = [spec.pod(e).ip if "/" in e else e for e in svc.endpoints]
        assert ips, f"{svc.key} has endpoints in build_spec"
        for port in svc.ports:
            name = kp.service_port_name(svc.namespace, svc.name, port.name)
            proto = port.protocol.lower()
            svc_chain = kp.service_chain_name(name, proto)
            entry = [ln for ln in chain_rules(nat, "KUBE-SERVICES") if jump_target(ln) == svc_chain]
            assert entry == [(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m {proto} -p {proto} '
                              f"-d {svc.cluster_ip} --dport {port.port} -j {svc_chain}")]
            target = port.target_port or port.port
            eps = sorted(f"{ip}:{target}" for ip in ips)
            seps = [jump_target(ln) for ln in chain_rules(nat, svc_chain) if "KUBE-SEP-" in ln]
            assert seps == [kp.endpoint_chain_name(name, proto, ep) for ep in eps]
            for ep, sep in zip(eps, seps, strict=True):
                ip = ep.rsplit(":", 1)[0]
                assert chain_rules(nat, sep) == [
                    f"-A {sep} -m comment --comment {name} -s {ip} -j KUBE-MARK-MASQ",
                    f"-A {sep} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {ep}",
                ]
            checked += 1
    assert checked >= 5


def test_both_protocols_rendered_for_kube_dns(flannel):
    nat = tables(kp.render_rules(flannel, flannel.nodes[0].name))["nat"]
    services = chain_rules(nat, "KUBE-SERVICES")
    assert any("-m udp -p udp -d 10.96.0.10 --dport 53 " in ln for ln in services)
    assert any("-m tcp -p tcp -d 10.96.0.10 --dport 53 " in ln for ln in services)


def _spec_with_endpoints(counts: dict[str, int]) -> LabSpec:
    spec = build_spec("p", "flannel", nodes=1, pods_per_node=1)
    spec.services = [
        ServiceSpec("t", name, f"10.96.1.{i}", [PortSpec(80, "TCP", "http", 8080)], {},
                    endpoints=[f"10.244.9.{j}" for j in range(1, n + 1)])
        for i, (name, n) in enumerate(counts.items(), 1)
    ]
    return spec


def test_probabilities_for_one_two_three_endpoints():
    spec = _spec_with_endpoints({"one": 1, "two": 2, "three": 3})
    nat = tables(kp.render_rules(spec, spec.nodes[0].name))["nat"]

    def probs(svc: str) -> list[str | None]:
        chain = kp.service_chain_name(f"t/{svc}:http", "tcp")
        out = []
        for ln in chain_rules(nat, chain):
            if "KUBE-SEP-" not in ln:
                continue
            t = shlex.split(ln)
            out.append(t[t.index("--probability") + 1] if "--probability" in t else None)
        return out

    assert probs("one") == [None]
    assert probs("two") == ["0.5000000000", None]
    assert probs("three") == ["0.3333333333", "0.5000000000", None]
    two = [ln for ln in nat if ln.startswith(f"-A {kp.service_chain_name('t/two:http', 'tcp')} ") and "SEP" in ln]
    assert "-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-" in two[0]


def test_cluster_cidr_masquerade_rule(flannel):
    nat = tables(kp.render_rules(flannel, flannel.nodes[0].name))["nat"]
    chain = kp.service_chain_name("default/web:http", "tcp")
    web = flannel.service("default/web")
    assert chain_rules(nat, chain)[0] == (
        f'-A {chain} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d {web.cluster_ip} '
        f"--dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    unknown = tables(kp.render_rules(flannel, flannel.nodes[0].name, cluster_cidr=""))["nat"]
    assert not any("! -s" in ln for ln in chain_rules(unknown, chain))


def test_headless_services_have_no_rules(flannel):
    db = flannel.service("shop/db")
    assert db.headless
    text = kp.render_rules(flannel, flannel.nodes[0].name)
    assert "shop/db" not in text
    assert kp.service_chain_name("shop/db:postgres", "tcp") not in text


def test_service_without_endpoints_is_rejected_in_filter_not_natted():
    spec = _spec_with_endpoints({"empty": 0, "two": 2})
    t = tables(kp.render_rules(spec, spec.nodes[0].name))
    chain = kp.service_chain_name("t/empty:http", "tcp")
    assert chain not in "\n".join(t["nat"])
    assert chain_rules(t["filter"], "KUBE-SERVICES") == [
        ('-A KUBE-SERVICES -m comment --comment "t/empty:http has no endpoints" -m tcp -p tcp '
         "-d 10.96.1.1 --dport 80 -j REJECT")]


def test_skip_services_removes_exactly_that_service(flannel):
    node = flannel.nodes[0].name
    full = kp.render_rules(flannel, node).splitlines()
    skipped = kp.render_rules(flannel, node, skip_services=frozenset({"kube-system/kube-dns"})).splitlines()
    assert set(skipped) <= set(full)
    removed = set(full) - set(skipped)
    dns = [sp for sp in kp.service_ports(flannel) if sp.name.startswith("kube-system/kube-dns:")]
    assert len(dns) == 3 and all(sp.endpoints for sp in dns)
    dns_chains = {sp.chain for sp in dns} | {sp.endpoint_chain(ep) for sp in dns for ep in sp.endpoints}
    assert removed and all(any(c in ln for c in dns_chains) for ln in removed)
    assert all(any(c in ln for ln in removed) for c in dns_chains)
    assert not any("kube-dns" in ln or "-d 10.96.0.10 " in ln for ln in skipped)
    # everything about the other services is untouched
    assert [ln for ln in full if "default/web" in ln] == [ln for ln in skipped if "default/web" in ln]


# -- fixed chains and jumps ------------------------------------------------------------------

def test_fixed_chains_marks_and_nodeports_last(flannel):
    t = tables(kp.render_rules(flannel, flannel.nodes[0].name))
    assert set(t) == {"mangle", "filter", "nat"}
    for table in t.values():
        assert kp.KUBE_PROXY_CANARY in declared(table)
    assert {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL"} <= set(declared(t["filter"]))
    nat = t["nat"]
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"} <= set(declared(nat))
    assert chain_rules(nat, "KUBE-SERVICES")[-1] == (
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    assert chain_rules(nat, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000"]
    assert chain_rules(nat, "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
        ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
         "--random-fully"),
    ]
    assert int(kp.MASQUERADE_MARK, 16) == 0x4000


def test_builtin_jumps_end_in_kube_proxy_order(flannel):
    """Replaying the `-I` lines gives the order seen on real nodes (kube-proxy above kubelet)."""
    t = tables(kp.render_rules(flannel, flannel.nodes[0].name))
    final: dict[str, list[str]] = {}
    for table in ("filter", "nat"):
        for ln in t[table]:
            tok = ln.split()
            if tok[0] == "-I":
                final.setdefault(f"{table}/{tok[1]}", []).insert(0, jump_target(ln))
    assert final == {
        "filter/INPUT": ["KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL"],
        "filter/FORWARD": ["KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"],
        "filter/OUTPUT": ["KUBE-PROXY-FIREWALL", "KUBE-SERVICES", "KUBE-FIREWALL"],
        "nat/OUTPUT": ["KUBE-SERVICES"],
        "nat/PREROUTING": ["KUBE-SERVICES"],
        "nat/POSTROUTING": ["KUBE-POSTROUTING"],
    }


def test_large_cluster_mode_drops_endpoint_comments():
    spec = _spec_with_endpoints({"big": 1001})
    spec.services[0].endpoints = [f"10.245.{i // 250}.{i % 250 + 1}" for i in range(1001)]
    nat = tables(kp.render_rules(spec, spec.nodes[0].name))["nat"]
    chain = kp.service_chain_name("t/big:http", "tcp")
    sep_jumps = [ln for ln in chain_rules(nat, chain) if "KUBE-SEP-" in ln]
    assert len(sep_jumps) == 1001 and not any("--comment" in ln for ln in sep_jumps)
    assert "--comment" in chain_rules(nat, "KUBE-SERVICES")[0]  # service-level comments stay
    small = tables(kp.render_rules(_spec_with_endpoints({"s": 2}), spec.nodes[0].name))["nat"]
    assert all("--comment" in ln for ln in small if ln.startswith("-A KUBE-SEP-"))


# -- flavours --------------------------------------------------------------------------------

def test_both_flavours_render(flannel, vpc):
    for spec in (flannel, vpc):
        for node in spec.nodes:
            text = kp.render_node_rules(spec, node.name)
            assert kp.service_chain_name("default/kubernetes:https", "tcp") in text
    assert "AWS-SNAT-CHAIN-0" not in kp.render_node_rules(flannel, flannel.nodes[0].name)
    with pytest.raises(ValueError, match="vpc-cni"):
        kp.render_aws_node_rules(flannel, flannel.nodes[0].name)


def test_aws_node_rules_snat_to_node_ip(vpc):
    node = vpc.nodes[1]
    t = tables(kp.render_aws_node_rules(vpc, node.name))
    nat = t["nat"]
    assert {"AWS-SNAT-CHAIN-0", "AWS-CONNMARK-CHAIN-0"} <= set(declared(nat))
    assert '-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0' in nat
    snat = chain_rules(nat, "AWS-SNAT-CHAIN-0")
    assert snat[0] == f'-A AWS-SNAT-CHAIN-0 -d {vpc.vpc_cidr} -m comment --comment "AWS SNAT CHAIN" -j RETURN'
    assert snat[1].endswith(f"-j SNAT --to-source {node.ip} --random-fully")
    assert any("CONNMARK --set-mark 0x80/0x80" in ln for ln in t["mangle"])


def test_unknown_node_is_a_clear_error(flannel):
    with pytest.raises(ValueError, match="not in lab"):
        kp.render_rules(flannel, "no-such-node")


# -- the apply planner (pure) ----------------------------------------------------------------

SAVED = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-OLDOLDOLDOLDOLDO
-A KUBE-SVC-OLDOLDOLDOLDOLDO -j KUBE-SEP-OLDOLDOLDOLDOLDO
COMMIT
"""


def test_planner_dedupes_jumps_deletes_stale_chains_keeps_foreign_rules(flannel):
    wanted = kp.render_rules(flannel, flannel.nodes[0].name)
    plan = tables(kp._restore_input(kp._parse(wanted), kp._parse(SAVED)))
    nat = plan["nat"]
    # the duplicated and the uncommented PREROUTING jumps all go, one comes back
    deletes = [ln for ln in nat if ln.startswith("-D ")]
    assert deletes == [
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-D PREROUTING -j KUBE-SERVICES",
    ]
    adds = [ln for ln in nat if ln.startswith("-I ")]
    # OUTPUT's jump is already there once: left alone; POSTROUTING's is missing
    assert adds == ['-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                    '-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
    assert "-X KUBE-SVC-OLDOLDOLDOLDOLDO" in nat and "-X KUBE-SEP-OLDOLDOLDOLDOLDO" in nat
    assert ":KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]" in nat  # flushed before deletion
    assert not any("FLANNEL" in ln or "flanneld" in ln for ln in nat)
    # filter has no rules yet: every jump is added
    assert len([ln for ln in plan["filter"] if ln.startswith("-I ")]) == 11


def test_planner_is_a_no_op_for_jumps_when_state_matches(flannel):
    wanted = kp.render_rules(flannel, flannel.nodes[0].name)
    # what iptables-save prints after a successful apply: -A lines in final order
    saved = []
    for table, lines in tables(wanted).items():
        saved.append(f"*{table}")
        saved += [ln for ln in lines if ln.startswith(":")]
        saved += ["-A" + ln[2:] for ln in lines if ln.startswith("-I ")]
        saved.append("COMMIT")
    plan = kp._restore_input(kp._parse(wanted), kp._parse("\n".join(saved) + "\n"))
    assert not any(ln.startswith(("-I ", "-D ", "-X ")) for ln in plan.splitlines())


def test_kube_proxy_only_apply_does_not_touch_aws_rules(vpc):
    node = vpc.nodes[0].name
    aws = tables(kp.render_aws_node_rules(vpc, node))
    saved = ["*nat", ":AWS-SNAT-CHAIN-0 - [0:0]"] + ["-A" + ln[2:] for ln in aws["nat"] if ln.startswith("-A ")]
    saved.append("COMMIT")
    plan = kp._restore_input(kp._parse(kp.render_rules(vpc, node)), kp._parse("\n".join(saved) + "\n"))
    assert "AWS" not in plan


def test_parse_rejects_unterminated_section():
    with pytest.raises(ValueError, match="COMMIT"):
        kp._parse("*nat\n:KUBE-SERVICES - [0:0]\n")
