"""kube-proxy (iptables mode) rules for a lab node, rendered from the LabSpec and loaded for real.

`render_rules` writes the `iptables-restore` input kube-proxy's iptables proxier writes on a full
sync (kubernetes `pkg/proxy/iptables/proxier.go`, `syncProxyRules`): the same chain names
(`KUBE-SVC-`/`KUBE-SEP-` + 16 chars of base32(sha256(...))), rule order, comments, probabilities
and mark values. On top of that it adds what kube-proxy sets up outside that restore: the
`KUBE-PROXY-CANARY` chains its iptables monitor creates in mangle, nat and filter, and the jump
rules kubelet and kube-proxy `EnsureRule(Prepend)` into the built-in chains, as `-I <chain>`
lines in the order they run them.
`render_aws_node_rules` adds the VPC CNI's `AWS-SNAT-CHAIN-0` / `AWS-CONNMARK-CHAIN-0` rules
(amazon-vpc-cni-k8s `pkg/networkutils/network.go`).

`apply_rules` loads such text into a node's namespace in one `iptables-restore --noflush` run:
every chain the text declares is replaced, stale `KUBE-SVC-`/`KUBE-SEP-`… chains are deleted (as
kube-proxy does), and rules in built-in chains are ensured: one already there stays put, a missing
one is added, duplicates go, so applying any number of times leaves each jump exactly once.

>>> text = render_node_rules(spec, "lab-worker-0")
>>> apply_rules("nc-lab-node0", text)
>>> apply_rules("nc-lab-node0", render_node_rules(spec, "lab-worker-0",
...                                               skip_services=frozenset({"kube-system/kube-dns"})))
>>> "KUBE-SVC-TCOU7JCQXEZGVUNU" in dump_rules("nc-lab-node0")
False
"""
from __future__ import annotations

import base64
import hashlib
import re
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

from .topology import LabSpec, NodeSpec, ServiceSpec

# Chain names (proxier.go constants)
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's chain; kube-proxy keeps a duplicate of its rule
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")

MASQUERADE_BIT = 14  # --iptables-masquerade-bit default
# Go's fmt.Sprintf("%#08x", 1<<14): the 0x prefix does not count towards the width, so
# kube-proxy writes 0x00004000 (iptables-save prints it back as 0x4000).
MASQUERADE_MARK = f"0x{1 << MASQUERADE_BIT:08x}"
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # above it kube-proxy drops per-endpoint comments

AWS_SNAT_CHAIN = "AWS-SNAT-CHAIN-0"
AWS_CONNMARK_CHAIN = "AWS-CONNMARK-CHAIN-0"
AWS_CONNMARK = 0x80  # AWS_VPC_K8S_CNI_CONNMARK default
AWS_VETH_PREFIX = "eni"  # AWS_VPC_K8S_CNI_VETHPREFIX default

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})

# (table, source chain, target chain, comment, extra args): kube-proxy's iptablesJumpChains
_CTSTATE_NEW = ("-m", "conntrack", "--ctstate", "NEW")
_KUBE_PROXY_JUMPS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _CTSTATE_NEW),
    ("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _CTSTATE_NEW),
    ("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports", ()),
    ("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _CTSTATE_NEW),
    ("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _CTSTATE_NEW),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules", ()),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _CTSTATE_NEW),
    ("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _CTSTATE_NEW),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _CTSTATE_NEW),
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules", ()),
)
# iptablesKubeletJumpChains: kubelet made these first on a real node, so kube-proxy's prepends
# end up above them.
_KUBELET_JUMPS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("filter", "INPUT", KUBE_FIREWALL, "", ()),
    ("filter", "OUTPUT", KUBE_FIREWALL, "", ()),
)


class KubeProxyApplyError(RuntimeError):
    """iptables-restore (or iptables-save) failed in a lab node's namespace."""


# -- chain names ---------------------------------------------------------------------------

def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_port_name(namespace: str, name: str, port_name: str = "") -> str:
    """kube-proxy's ServicePortName.String(): `ns/name:port`, or `ns/name` for an unnamed port."""
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "")


def port_proto_hash(svc_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: base32(sha256(servicePortName + protocol))[:16].

    `protocol` is lower case, as kube-proxy passes it ("tcp", "udp").
    """
    return _hash16(svc_port_name + protocol.lower())


def service_chain_name(svc_port_name: str, protocol: str) -> str:
    """The KUBE-SVC-<hash> chain of a service port (`servicePortPolicyClusterChain`).

    >>> service_chain_name("kube-system/kube-dns:dns", "udp")
    'KUBE-SVC-TCOU7JCQXEZGVUNU'
    """
    return "KUBE-SVC-" + port_proto_hash(svc_port_name, protocol)


def endpoint_chain_name(svc_port_name: str, protocol: str, endpoint: str) -> str:
    """The KUBE-SEP-<hash> chain of one endpoint `ip:port` of a service port
    (`servicePortEndpointChainName`)."""
    return "KUBE-SEP-" + _hash16(svc_port_name + protocol.lower() + endpoint)


def _probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"  # computeProbability: fmt.Sprintf("%0.10f", 1.0/float64(n))


# -- what kube-proxy would see -------------------------------------------------------------

@dataclass(frozen=True)
class ServicePortRules:
    """One ClusterIP service port as kube-proxy sees it: name, VIP, protocol, ready endpoints."""
    name: str  # ServicePortName.String()
    cluster_ip: str
    port: int
    protocol: str  # lower case
    endpoints: tuple[str, ...]  # "ip:port", sorted like kube-proxy's byEndpoint

    @property
    def chain(self) -> str:
        return service_chain_name(self.name, self.protocol)

    def endpoint_chain(self, endpoint: str) -> str:
        return endpoint_chain_name(self.name, self.protocol, endpoint)


def service_ports(spec: LabSpec, *, skip_services: Iterable[str] = ()) -> list[ServicePortRules]:
    """Every ClusterIP service port of `spec` (headless ones and `skip_services` left out),
    sorted by service port name so the rendered rules are stable."""
    skip = set(skip_services)
    out = []
    for svc in spec.services:
        if svc.headless or not svc.cluster_ip or svc.key in skip:
            continue
        ips = _endpoint_ips(spec, svc)
        for port in svc.ports:
            target = port.target_port or port.port
            # endpointsMapFromEndpointInfo: one entry per ip:port, sorted by String()
            eps = tuple(sorted({f"{ip}:{target}" for ip in ips}))
            out.append(ServicePortRules(
                name=service_port_name(svc.namespace, svc.name, port.name),
                cluster_ip=svc.cluster_ip, port=port.port, protocol=port.protocol.lower(),
                endpoints=eps))
    return sorted(out, key=lambda sp: (sp.name, sp.protocol))


def _endpoint_ips(spec: LabSpec, svc: ServiceSpec) -> list[str]:
    # pod keys ("ns/name") resolve to pod IPs; default/kubernetes lists apiserver IPs directly
    return [spec.pod(ep).ip if "/" in ep else ep for ep in svc.endpoints]


# -- rendering -----------------------------------------------------------------------------

@dataclass
class _Table:
    name: str
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    jumps: list[str] = field(default_factory=list)  # rules in built-in chains

    def chain(self, name: str) -> None:
        self.chains.append(f":{name} - [0:0]")

    def rule(self, *args: str) -> None:
        self.rules.append(" ".join(args))

    def text(self) -> str:
        lines = [f"*{self.name}", *self.chains, *self.rules]
        if self.jumps:
            lines.append("# rules in built-in chains: ensured (apply_rules adds only missing ones, once each)")
            lines += self.jumps
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"


def _node(spec: LabSpec, node_name: str) -> NodeSpec:
    try:
        return spec.node(node_name)
    except KeyError:
        names = ", ".join(n.name for n in spec.nodes)
        raise ValueError(f"node {node_name!r} is not in lab {spec.name!r} (nodes: {names})") from None


def _comment(text: str) -> str:
    # kube-proxy quotes comments containing spaces itself (`"%s cluster IP"`); restore parses them
    return f'"{text}"' if " " in text else text


def render_rules(spec: LabSpec, node_name: str, *, skip_services: frozenset[str] = frozenset(),
                 cluster_cidr: str | None = None) -> str:
    """`iptables-restore` input (mangle, filter, nat) for kube-proxy on `node_name`.

    `skip_services` (keys `ns/name`) leaves those services out entirely, as if kube-proxy had
    never seen them. `cluster_cidr` is kube-proxy's `--cluster-cidr` (default `spec.pod_cidr`;
    `""` = unknown, which drops the "masquerade off-cluster traffic to a ClusterIP" rules).
    Every endpoint in the spec is treated as ready; traffic policies are `Cluster`.
    """
    _node(spec, node_name)
    cidr = spec.pod_cidr if cluster_cidr is None else cluster_cidr
    ports = service_ports(spec, skip_services=skip_services)
    large_cluster = sum(len(sp.endpoints) for sp in ports) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    mark = MASQUERADE_MARK

    def svc_comment(args: list[str], text: str) -> list[str]:
        # appendServiceCommentLocked: large clusters lose these comments to keep restores small
        return args if large_cluster else args + ["-m", "comment", "--comment", text]

    mangle, filt, nat = _Table("mangle"), _Table("filter"), _Table("nat")
    for t in (mangle, filt, nat):
        t.chain(KUBE_PROXY_CANARY)  # iptables Monitor's canary: flushed table => full resync
    for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL):
        filt.chain(chain)
    for chain in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
        nat.chain(chain)

    nat.rule("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")
    nat.rule("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark)
    nat.rule("-A", KUBE_POSTROUTING, "-m", "comment", "--comment",
             _comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE", "--random-fully")
    nat.rule("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)

    # localhostNodePorts (default true) => kube-proxy keeps kubelet's anti-martian rule too
    filt.chain(KUBE_FIREWALL)
    filt.rule("-A", KUBE_FIREWALL, "-m", "comment", "--comment", _comment("block incoming localnet connections"),
              "-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate",
              "RELATED,ESTABLISHED,DNAT", "-j", "DROP")

    for sp in ports:
        proto, vip, port = sp.protocol, sp.cluster_ip, str(sp.port)
        match = ["-m", proto, "-p", proto, "-d", vip, "--dport", port]
        if not sp.endpoints:
            # no nat chains at all; the filter table rejects new connections to the VIP
            filt.rule("-A", KUBE_SERVICES, "-m", "comment", "--comment", _comment(f"{sp.name} has no endpoints"),
                      *match, "-j", "REJECT")
            continue
        cluster_ip_comment = ["-m", "comment", "--comment", _comment(f"{sp.name} cluster IP")]
        nat.rule("-A", KUBE_SERVICES, *cluster_ip_comment, *match, "-j", sp.chain)
        nat.chain(sp.chain)
        if cidr:
            # off-cluster clients routed to a node for a ClusterIP are masqueraded (LocalDetector)
            nat.rule("-A", sp.chain, *cluster_ip_comment, *match, "!", "-s", cidr, "-j", KUBE_MARK_MASQ)
        n = len(sp.endpoints)
        for i, ep in enumerate(sp.endpoints):
            args = svc_comment(["-A", sp.chain], _comment(f"{sp.name} -> {ep}"))
            if i < n - 1:
                args += ["-m", "statistic", "--mode", "random", "--probability", _probability(n - i)]
            nat.rule(*args, "-j", sp.endpoint_chain(ep))
        for ep in sp.endpoints:
            sep = sp.endpoint_chain(ep)
            nat.chain(sep)
            args = svc_comment(["-A", sep], sp.name)
            nat.rule(*args, "-s", ep.rsplit(":", 1)[0], "-j", KUBE_MARK_MASQ)  # hairpin
            nat.rule(*args, "-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", ep)

    nat.rule("-A", KUBE_SERVICES, "-m", "comment", "--comment",
             _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
             "-m", "addrtype", "--dst-type", "LOCAL", "-j", KUBE_NODEPORTS)

    filt.rule("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    filt.rule("-A", KUBE_FORWARD, "-m", "comment", "--comment", _comment("kubernetes forwarding rules"),
              "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT")
    filt.rule("-A", KUBE_FORWARD, "-m", "comment", "--comment", _comment("kubernetes forwarding conntrack rule"),
              "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")

    # kube-proxy EnsureRule(Prepend)s these jumps outside its restore. Kubelet's come first: on a
    # real node kubelet ran before kube-proxy, so kube-proxy's jumps end up above them.
    tables = {"filter": filt, "nat": nat}
    for table, src, dst, comment, extra in _KUBELET_JUMPS + _KUBE_PROXY_JUMPS:
        args = ["-I", src, *extra]
        if comment:
            args += ["-m", "comment", "--comment", _comment(comment)]
        tables[table].jumps.append(" ".join([*args, "-j", dst]))
    return mangle.text() + filt.text() + nat.text()


def render_aws_node_rules(spec: LabSpec, node_name: str, *, primary_interface: str = "eth0") -> str:
    """`iptables-restore` input for the VPC CNI's (aws-node) host rules on `node_name`.

    Pod traffic to anything outside the VPC CIDR leaves SNATed to the node's primary IP
    (`AWS-SNAT-CHAIN-0`, jumped from nat POSTROUTING); connections entering through the primary
    ENI get connmark 0x80 so replies are routed back out of it (`AWS-CONNMARK-CHAIN-0` and the
    mangle PREROUTING CONNMARK rules). Defaults: external SNAT off, NodePort support on,
    `AWS_VPC_K8S_CNI_RANDOMIZESNAT=prng`.
    """
    if spec.flavor != "vpc-cni":
        raise ValueError(f"aws-node rules exist only in the vpc-cni flavour, not {spec.flavor!r}")
    node = _node(spec, node_name)
    m = f"{AWS_CONNMARK:#x}"
    veths = f"{AWS_VETH_PREFIX}+"
    mangle, nat = _Table("mangle"), _Table("nat")
    mangle.jumps += [
        (f'-A PREROUTING -m comment --comment "AWS, primary ENI" -i {primary_interface} -m addrtype '
         f"--dst-type LOCAL --limit-iface-in -j CONNMARK --set-mark {m}/{m}"),
        f'-A PREROUTING -m comment --comment "AWS, primary ENI" -i {veths} -j CONNMARK --restore-mark --mask {m}',
        f'-A PREROUTING -m comment --comment "AWS, primary ENI" -i vlan+ -j CONNMARK --restore-mark --mask {m}',
    ]
    nat.chain(AWS_SNAT_CHAIN)
    nat.chain(AWS_CONNMARK_CHAIN)
    nat.rule("-A", AWS_SNAT_CHAIN, "-d", spec.vpc_cidr, "-m", "comment", "--comment", '"AWS SNAT CHAIN"',
             "-j", "RETURN")
    nat.rule("-A", AWS_SNAT_CHAIN, "!", "-o", "vlan+", "-m", "comment", "--comment", '"AWS, SNAT"',
             "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "SNAT", "--to-source", node.ip, "--random-fully")
    nat.rule("-A", AWS_CONNMARK_CHAIN, "-d", spec.vpc_cidr, "-m", "comment", "--comment",
             '"AWS CONNMARK CHAIN, VPC CIDR"', "-j", "RETURN")
    nat.rule("-A", AWS_CONNMARK_CHAIN, "-m", "comment", "--comment", '"AWS, CONNMARK"', "-j", "CONNMARK",
             "--set-xmark", f"{m}/{m}")
    nat.jumps += [
        f'-A PREROUTING -i {veths} -m comment --comment "AWS, outbound connections" -j {AWS_CONNMARK_CHAIN}',
        f'-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --mask {m}',
        f'-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j {AWS_SNAT_CHAIN}',
    ]
    return mangle.text() + nat.text()


def render_node_rules(spec: LabSpec, node_name: str, *, skip_services: frozenset[str] = frozenset()) -> str:
    """Everything a lab node's iptables holds: kube-proxy's rules, plus aws-node's in vpc-cni."""
    text = render_rules(spec, node_name, skip_services=skip_services)
    if spec.flavor == "vpc-cni":
        text += render_aws_node_rules(spec, node_name)
    return text


# -- parsing restore / save text -------------------------------------------------------------

@dataclass
class _Parsed:
    chains: dict[str, list[str]]  # table -> declared chains, in order
    rules: dict[str, list[str]]  # table -> rules for declared chains
    builtin: dict[str, list[str]]  # table -> rules for built-in chains


def _parse(text: str) -> _Parsed:
    """Split restore/save text into declared chains, their rules and built-in chain rules, per
    table; several sections for one table (kube-proxy's + aws-node's) are merged."""
    p = _Parsed({}, {}, {})
    table = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            for d in (p.chains, p.rules, p.builtin):
                d.setdefault(table, [])
            continue
        if table is None:
            raise ValueError(f"line {lineno}: {line!r} is outside a *table section")
        if line == "COMMIT":
            table = None
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name not in BUILTIN_CHAINS and name not in p.chains[table]:
                p.chains[table].append(name)
        else:
            chain = line.split()[1] if len(line.split()) > 1 else ""
            (p.builtin if chain in BUILTIN_CHAINS else p.rules)[table].append(line)
    if table is not None:
        raise ValueError(f"section *{table} has no COMMIT")
    return p


def _rule_key(line: str) -> tuple[str, str, str]:
    """(chain, target, comment) of a rule line: how a rule in a built-in chain is recognised as
    ours whatever order iptables-save prints its matches in."""
    tokens = shlex.split(line)
    chain = tokens[1] if len(tokens) > 1 else ""
    target = comment = ""
    for i, tok in enumerate(tokens[:-1]):
        if tok in ("-j", "--jump", "-g", "--goto"):
            target = tokens[i + 1]
        elif tok == "--comment":
            comment = tokens[i + 1]
    return chain, target, comment


def _restore_input(wanted: _Parsed, current: _Parsed) -> str:
    """The --noflush restore text that turns `current` into `wanted` for the tables it names.

    Declared chains are flushed and refilled. Built-in chain rules are *ensured*, as kube-proxy's
    EnsureRule and aws-node's Exists/Insert do: a rule already there (same chain, target and
    comment, as often as wanted) stays where it is; otherwise every copy goes and the wanted
    rules are added again. Other rules jumping to a declared chain are removed (duplicates).
    """
    out = []
    for table, declared in wanted.chains.items():
        stale: list[str] = []
        if KUBE_SERVICES in declared:
            # a kube-proxy sync: service chains it no longer writes are deleted (syncProxyRules)
            stale = [c for c in current.chains.get(table, [])
                     if c.startswith(SERVICE_CHAIN_PREFIXES) and c not in declared]
        wanted_by_key: dict[tuple[str, str, str], list[str]] = {}
        for r in wanted.builtin[table]:
            wanted_by_key.setdefault(_rule_key(r), []).append(r)
        have_by_key: dict[tuple[str, str, str], list[str]] = {}
        for r in current.builtin.get(table, []):
            have_by_key.setdefault(_rule_key(r), []).append(r)

        deletes: list[str] = []
        for key, have in have_by_key.items():
            want = wanted_by_key.get(key)
            if (want is None and key[1] in declared) or (want is not None and len(want) != len(have)):
                deletes += ["-D" + r[2:] for r in have]  # the saved spec deletes exactly that rule
        adds = [r for r in wanted.builtin[table]
                if len(have_by_key.get(_rule_key(r), [])) != len(wanted_by_key[_rule_key(r)])]

        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in declared + stale]  # declaring a chain flushes it
        out += wanted.rules[table]
        out += deletes
        out += adds
        out += [f"-X {c}" for c in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


# -- running in the node's namespace ---------------------------------------------------------

def _netns_argv(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def dump_rules(netns: str, timeout: float = 10) -> str:
    """`iptables-save` of `netns` (all tables), e.g. for evidence bundles and tests."""
    try:
        out = subprocess.run(_netns_argv(netns, ["iptables-save"]), check=False, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise KubeProxyApplyError(f"iptables-save in netns {netns} timed out after {timeout:g} s") from exc
    if out.returncode != 0:
        raise KubeProxyApplyError(f"iptables-save in netns {netns} failed (exit {out.returncode}): "
                                  f"{out.stderr.strip()}")
    return out.stdout


def apply_rules(netns: str, rules: str, timeout: float = 10) -> None:
    """Load `rules` (from the render functions) into `netns` atomically, idempotently.

    Chains declared in `rules` get exactly the given content; jump rules in built-in chains are
    deleted and re-added so they exist once; when `rules` is a kube-proxy sync, service chains
    it no longer contains are deleted. Other rules in the namespace (flannel's, a fault's) stay.
    Raises KubeProxyApplyError with iptables-restore's message and the offending line.
    """
    wanted = _parse(rules)
    current = _parse(dump_rules(netns, timeout))
    text = _restore_input(wanted, current)
    try:
        out = subprocess.run(_netns_argv(netns, ["iptables-restore", "--noflush"]), check=False, input=text,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise KubeProxyApplyError(f"iptables-restore in netns {netns} timed out after {timeout:g} s") from exc
    if out.returncode != 0:
        raise KubeProxyApplyError(f"iptables-restore in netns {netns} failed (exit {out.returncode}): "
                                  f"{out.stderr.strip()}{_failed_line(out.stderr, text)}")


def _failed_line(stderr: str, text: str) -> str:
    """iptables-restore names the failing line of its input; quote it with two lines of context
    (nft reports errors found at commit time on the COMMIT line)."""
    m = re.search(r"line:? (\d+)", stderr)
    lines = text.splitlines()
    if not m or not 0 < int(m.group(1)) <= len(lines):
        return ""
    n = int(m.group(1))
    return "".join(f"\n  input line {i}: {lines[i - 1]}" for i in range(max(1, n - 2), n + 1))
