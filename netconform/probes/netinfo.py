"""What the current network namespace looks like: addresses, main-table routes, neighbours, links.

Plain rtnetlink dumps through pyroute2's `IPRoute`, opened in whatever namespace the calling
process is in — run them through a runner to see a pod's or a node's namespace:

>>> from netconform.runners.local import runner_for
>>> [r["dst"] for r in runner_for("/run/netns/nc-lab-a-default-web-0").call("netinfo:routes").value]
['default', '169.254.1.1/32', 'default', 'fe80::/64']

Names follow `ip(8)`: families "inet"/"inet6", scopes "global"/"link"/"host", neighbour states
"permanent"/"reachable"/…, so evidence reads like the `ip` output an SRE would compare with.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Address", "Link", "Neighbour", "NextHop", "Route", "addresses", "links", "neighbours", "routes"]

FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
_FAMILY_BY_NAME = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "4": socket.AF_INET, "6": socket.AF_INET6}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
               7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
ROUTE_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 9: "ra", 11: "zebra",
                   12: "bird", 16: "dhcp", 42: "babel", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip"}
NUD_STATES = {0x01: "incomplete", 0x02: "reachable", 0x04: "stale", 0x08: "delay", 0x10: "probe",
              0x20: "failed", 0x40: "noarp", 0x80: "permanent"}
MAIN_TABLE = 254
RTNH_F_ONLINK = 0x4
IFF_UP = 0x1
NTF_ROUTER = 0x80


@dataclass
class Address:
    """One interface address (`ip addr`)."""

    ifname: str
    index: int
    family: str  # "inet" | "inet6"
    address: str
    prefixlen: int
    scope: str
    peer: str | None = None  # point-to-point peer, when it differs from the local address
    label: str | None = None
    flags: list[str] = field(default_factory=list)  # "permanent", "tentative", "dadfailed", "nodad"…

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass
class NextHop:
    """One path of a multipath route."""

    gateway: str | None
    dev: str | None
    ifindex: int | None
    onlink: bool
    weight: int = 1


@dataclass
class Route:
    """One route of the main table (`ip route` / `ip -6 route`)."""

    family: str
    dst: str  # "default" or "10.0.0.0/20"; host routes keep their /32 or /128
    type: str
    gateway: str | None
    dev: str | None
    ifindex: int | None
    onlink: bool
    protocol: str
    scope: str
    metric: int | None = None
    prefsrc: str | None = None
    mtu: int | None = None  # the route's "mtu" metric, when set (a PMTU clamp)
    table: int = MAIN_TABLE
    nexthops: list[NextHop] = field(default_factory=list)


@dataclass
class Neighbour:
    """One neighbour (ARP / NDP) entry (`ip neigh`)."""

    family: str
    address: str
    lladdr: str | None
    dev: str | None
    ifindex: int
    state: list[str]  # e.g. ["permanent"], ["reachable"], ["stale"]
    router: bool = False


@dataclass
class Link:
    """One network interface (`ip link`)."""

    name: str
    index: int
    state: str  # administrative: "up" | "down"
    operstate: str  # kernel operstate: "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN"…
    mtu: int
    mac: str | None
    kind: str | None  # "veth", "vlan", "vxlan", "bridge", "dummy"…; None for physical and lo
    carrier: bool | None
    parent_index: int | None = None  # IFLA_LINK: a vlan's lower device, a veth's peer index
    master_index: int | None = None  # IFLA_MASTER: the bridge / bond it is enslaved to
    vlan_id: int | None = None


def _ipr() -> Any:
    # Imported on first use: pyroute2 costs ~0.3 s of worker start-up otherwise.
    from pyroute2 import IPRoute

    return IPRoute()


def _family(family: str | None) -> int:
    if family is None:
        return socket.AF_UNSPEC
    try:
        return _FAMILY_BY_NAME[str(family)]
    except KeyError:
        raise ValueError(f"family must be 'inet' or 'inet6', got {family!r}") from None


def _names(ipr: Any) -> dict[int, str]:
    return {m["index"]: m.get("IFLA_IFNAME") for m in ipr.get_links()}


def addresses(ifname: str | None = None, family: str | None = None) -> list[Address]:
    """Every address in this namespace, optionally of one interface and/or family.

    >>> [a.cidr for a in addresses(ifname="lo", family="inet")]
    ['127.0.0.1/8']
    """
    fam = _family(family)
    with _ipr() as ipr:
        names = _names(ipr)
        out = []
        for m in ipr.get_addr(family=fam) if fam else ipr.get_addr():
            name = names.get(m["index"]) or m.get("IFA_LABEL") or ""
            if ifname is not None and name != ifname:
                continue
            local, addr = m.get("IFA_LOCAL"), m.get("IFA_ADDRESS")
            flags_value = m.get("IFA_FLAGS")
            flags_value = m["flags"] if flags_value is None else flags_value
            out.append(Address(
                ifname=name, index=m["index"], family=FAMILIES.get(m["family"], str(m["family"])),
                address=local or addr, prefixlen=m["prefixlen"], scope=SCOPES.get(m["scope"], str(m["scope"])),
                peer=addr if local and addr and addr != local else None, label=m.get("IFA_LABEL"),
                flags=_addr_flags(flags_value or 0),
            ))
        return out


_IFA_FLAGS = {0x01: "secondary", 0x02: "nodad", 0x04: "optimistic", 0x08: "dadfailed", 0x10: "homeaddress",
              0x20: "deprecated", 0x40: "tentative", 0x80: "permanent", 0x100: "managetempaddr",
              0x200: "noprefixroute", 0x400: "mcautojoin", 0x800: "stable-privacy"}


def _addr_flags(value: int) -> list[str]:
    return [name for bit, name in _IFA_FLAGS.items() if value & bit]


def routes(family: str | None = None) -> list[Route]:
    """Routes of the main table (IPv4 and IPv6 unless `family` is given), as `ip route` lists them.

    >>> [(r.dst, r.gateway, r.dev, r.onlink) for r in routes("inet")]   # in a vpc-cni pod
    [('default', '169.254.1.1', 'eth0', False), ('169.254.1.1/32', None, 'eth0', False)]
    """
    fams = [_family(family)] if family else [socket.AF_INET, socket.AF_INET6]
    out = []
    with _ipr() as ipr:
        names = _names(ipr)
        for fam in fams:
            for m in ipr.get_routes(family=fam, table=MAIN_TABLE):
                table = m.get("RTA_TABLE") or m["table"]
                if table != MAIN_TABLE:  # filter ourselves too: older kernels ignore the dump filter
                    continue
                out.append(_route(m, names, table))
    return out


def _route(m: Any, names: dict[int, str], table: int) -> Route:
    dst = m.get("RTA_DST")
    family = FAMILIES.get(m["family"], str(m["family"]))
    oif = m.get("RTA_OIF")
    gateway = m.get("RTA_GATEWAY")
    via = m.get("RTA_VIA")  # IPv4 routes via an IPv6 next hop (RFC 5549)
    if gateway is None and isinstance(via, dict):
        gateway = via.get("addr")
    metrics = m.get("RTA_METRICS")
    mtu = metrics.get("RTAX_MTU") if metrics is not None else None
    nexthops = []
    for nh in m.get("RTA_MULTIPATH") or []:
        nh_gw = nh.get("RTA_GATEWAY")
        nexthops.append(NextHop(gateway=nh_gw, dev=names.get(nh["oif"]), ifindex=nh["oif"],
                                onlink=bool(nh["flags"] & RTNH_F_ONLINK), weight=nh["hops"] + 1))
    return Route(
        family=family,
        dst=f"{dst}/{m['dst_len']}" if dst else ("default" if m["dst_len"] == 0 else f"?/{m['dst_len']}"),
        type=ROUTE_TYPES.get(m["type"], str(m["type"])),
        gateway=gateway, dev=names.get(oif) if oif else None, ifindex=oif,
        onlink=bool(m["flags"] & RTNH_F_ONLINK),
        protocol=ROUTE_PROTOCOLS.get(m["proto"], str(m["proto"])),
        scope=SCOPES.get(m["scope"], str(m["scope"])),
        metric=m.get("RTA_PRIORITY"), prefsrc=m.get("RTA_PREFSRC"), mtu=mtu, table=table, nexthops=nexthops,
    )


def neighbours(family: str | None = None, all_states: bool = False) -> list[Neighbour]:
    """Neighbour entries; like `ip neigh`, "noarp" and empty entries only with `all_states`.

    >>> [(n.address, n.lladdr, n.state) for n in neighbours("inet")]   # in a vpc-cni pod
    [('169.254.1.1', '1a:2b:3c:4d:5e:6f', ['permanent'])]
    """
    fam = _family(family)
    out = []
    with _ipr() as ipr:
        names = _names(ipr)
        for m in ipr.get_neighbours(family=fam) if fam else ipr.get_neighbours():
            if m["family"] not in FAMILIES:  # AF_BRIDGE fdb entries belong to `bridge fdb`
                continue
            state = m["state"]
            if not all_states and (state == 0 or state & 0x40):
                continue
            out.append(Neighbour(
                family=FAMILIES[m["family"]], address=m.get("NDA_DST"), lladdr=m.get("NDA_LLADDR"),
                dev=names.get(m["ifindex"]), ifindex=m["ifindex"],
                state=[name for bit, name in NUD_STATES.items() if state & bit] or ["none"],
                router=bool(m["flags"] & NTF_ROUTER),
            ))
    return out


def links() -> list[Link]:
    """Every interface in this namespace, sorted by index.

    >>> [(l.name, l.kind, l.state, l.mtu) for l in links()]   # in a flannel pod
    [('lo', None, 'up', 65536), ('eth0', 'veth', 'up', 1450)]
    """
    out = []
    with _ipr() as ipr:
        for m in ipr.get_links():
            kind = m.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            vlan_id = m.get(("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")) if kind == "vlan" else None
            carrier = m.get("IFLA_CARRIER")
            out.append(Link(
                name=m.get("IFLA_IFNAME"), index=m["index"], state="up" if m["flags"] & IFF_UP else "down",
                operstate=m.get("IFLA_OPERSTATE") or "UNKNOWN", mtu=m.get("IFLA_MTU"), mac=m.get("IFLA_ADDRESS"),
                kind=kind, carrier=None if carrier is None else bool(carrier),
                parent_index=m.get("IFLA_LINK"), master_index=m.get("IFLA_MASTER"), vlan_id=vlan_id,
            ))
    return sorted(out, key=lambda link: link.index)
