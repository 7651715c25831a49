"""A pod's default gateway, its neighbour entry, and the node-side interface behind it.

Inputs are what the netinfo probe returns (`netinfo.routes/neighbours/links`, as dicts after the
runner) or the JSON of `ip -j route` / `ip -j -6 route` / `ip -j neigh` / `ip -j [-d] link`;
both shapes are accepted, so recorded `ip` output from a real node can be replayed.

The gateway always comes from the pod's own routing table (k8snetlook pinged the node's
gateway instead). The usual shapes:

- VPC CNI: `default via 169.254.1.1 dev eth0` + `169.254.1.1 dev eth0 scope link`, a PERMANENT
  neighbour entry whose MAC is the host-side veth (`eni…`); IPv6: `fe80::1` the same way;
- flannel / bridge CNIs: `default via 10.244.1.1 dev eth0`, gateway on the pod's /24, learned
  (REACHABLE/STALE) neighbour whose MAC is the node's `cni0` bridge;
- Calico and others: `169.254.1.1` with an `onlink` default route, or an IPv6 link-local router.

>>> gw = default_gateway(pod_routes, "inet")
>>> gw.address, gw.dev, gw.reachable_via
('169.254.1.1', 'eth0', '169.254.1.1/32 dev eth0')
>>> n = gateway_neighbour(pod_neighbours, gw)
>>> n.lladdr, n.state, n.usable
('f2:8e:1b:4c:70:9d', ['permanent'], True)
>>> link = link_by_mac(node_links, n.lladdr)
>>> link.name, link.up
('eni3a5e2f0c1d7', True)
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Gateway", "GatewayNeighbour", "NodeLink", "default_gateway", "default_gateways",
           "gateway_neighbour", "link_by_mac"]

MAIN_TABLE = 254
_BAD_NEIGH_STATES = {"failed", "incomplete", "none"}


@dataclass
class Gateway:
    """The next hop of a namespace's default route for one family."""

    family: str  # "inet" | "inet6"
    address: str | None  # None for a device-only default route ("default dev eth0")
    dev: str | None
    onlink: bool
    metric: int | None
    link_local: bool  # 169.254.0.0/16 or fe80::/10 (VPC CNI, Calico, IPv6 routers)
    reachable_via: str | None  # what makes the gateway directly reachable; None: nothing does
    route: str  # the default route, `ip route` style, for the report
    nexthops: list[dict[str, Any]] = field(default_factory=list)  # multipath: every path
    alternatives: int = 0  # other default routes of this family (higher metric)


@dataclass
class GatewayNeighbour:
    """The ARP / NDP entry for the gateway on its device."""

    address: str
    dev: str | None
    lladdr: str | None
    state: list[str]  # lower case: ["permanent"], ["reachable"], ["stale"], ["failed"], ...
    router: bool
    usable: bool  # has a MAC and is not failed / incomplete


@dataclass
class NodeLink:
    """A node-side interface matched by MAC (the far end of the pod's gateway)."""

    name: str
    index: int | None
    mac: str
    kind: str | None  # "veth", "bridge", ...; None when `ip link` was run without -d
    admin_up: bool
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    up: bool  # administratively up and operstate UP (or UNKNOWN, as for lo and some virtual links)
    mtu: int | None
    master: str | None  # the bridge it is enslaved to (name, or index from netinfo)
    same_mac: list[str] = field(default_factory=list)  # other links with this MAC


# -- normalising both input shapes ------------------------------------------------------------

def _family_of(*addresses: str | None) -> str | None:
    for a in addresses:
        if a and a != "default":
            try:
                net = ipaddress.ip_network(a.split("%")[0], strict=False)
            except ValueError:
                continue
            return "inet6" if net.version == 6 else "inet"
    return None


def _route(r: dict[str, Any], family_hint: str | None) -> dict[str, Any]:
    flags = r.get("flags") or []
    nexthops = [{"gateway": nh.get("gateway"), "dev": nh.get("dev"),
                 "onlink": bool(nh.get("onlink")) or "onlink" in (nh.get("flags") or []),
                 "weight": nh.get("weight", 1)} for nh in r.get("nexthops") or []]
    dst = r.get("dst") or "default"
    if dst in ("0.0.0.0/0", "::/0"):
        dst = "default"
    table = r.get("table", MAIN_TABLE)
    return {
        "family": r.get("family") or _family_of(r.get("gateway"), dst,
                                                *(nh["gateway"] for nh in nexthops)) or family_hint,
        "dst": dst,
        "type": r.get("type") or "unicast",
        "gateway": r.get("gateway"),
        "dev": r.get("dev"),
        "onlink": bool(r.get("onlink")) or "onlink" in flags,
        "metric": r.get("metric"),
        "scope": r.get("scope") or ("link" if not r.get("gateway") and not nexthops else "global"),
        "table": MAIN_TABLE if table in ("main", None) else table,
        "nexthops": nexthops,
    }


def _text(r: dict[str, Any]) -> str:
    parts = [r["dst"]]
    if r["gateway"]:
        parts += ["via", r["gateway"]]
    if r["dev"]:
        parts += ["dev", r["dev"]]
    parts += [f"nexthop via {nh['gateway']} dev {nh['dev']}" for nh in r["nexthops"]]
    if r["onlink"]:
        parts.append("onlink")
    if r["metric"] is not None:
        parts += ["metric", str(r["metric"])]
    return " ".join(parts)


def default_gateway(routes: Iterable[dict[str, Any]], family: str = "inet") -> Gateway | None:
    """The default gateway of `family` from a main routing table, or None if there is no default.

    Routes whose family cannot be told from their addresses (`ip -j route` prints none; a
    device-only default route has no address at all) are taken to be of `family`: pass the
    output of `ip -j route` with "inet" and of `ip -j -6 route` with "inet6".

    >>> default_gateway([{"dst": "default", "gateway": "10.244.1.1", "dev": "eth0", "flags": []},
    ...                  {"dst": "10.244.1.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link",
    ...                   "prefsrc": "10.244.1.7", "flags": []}]).reachable_via
    '10.244.1.0/24 dev eth0'
    """
    table = [_route(r, family) for r in routes]
    table = [r for r in table if r["family"] == family and r["table"] == MAIN_TABLE]
    defaults = [r for r in table if r["dst"] == "default" and r["type"] == "unicast"]
    if not defaults:
        return None
    # The kernel uses the lowest metric; IPv4 routes without one have metric 0.
    defaults.sort(key=lambda r: r["metric"] or 0)
    best = defaults[0]
    gw = best["gateway"] or next((nh["gateway"] for nh in best["nexthops"] if nh["gateway"]), None)
    dev = best["dev"] or next((nh["dev"] for nh in best["nexthops"] if nh["dev"]), None)
    onlink = best["onlink"] or any(nh["onlink"] for nh in best["nexthops"])
    return Gateway(family=family, address=gw, dev=dev, onlink=onlink, metric=best["metric"],
                   link_local=_link_local(gw), reachable_via=_reachable_via(table, gw, dev, onlink),
                   route=_text(best), nexthops=best["nexthops"], alternatives=len(defaults) - 1)


def default_gateways(routes: Iterable[dict[str, Any]]) -> dict[str, Gateway]:
    """`{"inet": Gateway, "inet6": Gateway}` for the families that have a default route.

    Needs routes that carry their family (netinfo's) or can be told by address.
    """
    routes = list(routes)
    out = {}
    for family in ("inet", "inet6"):
        known = [r for r in routes if (r.get("family") or _family_of(r.get("gateway"), r.get("dst"))) == family]
        gw = default_gateway(known, family)
        if gw is not None:
            out[family] = gw
    return out


def _link_local(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_link_local
    except ValueError:
        return False


def _reachable_via(table: list[dict[str, Any]], gw: str | None, dev: str | None, onlink: bool) -> str | None:
    """Why the kernel can send to `gw` directly: onlink, link-local on `dev`, or a connected route."""
    if gw is None:
        return f"dev {dev}" if dev else None
    if onlink:
        return f"onlink dev {dev}"
    ip = ipaddress.ip_address(gw.split("%")[0])
    best, best_len = None, -1
    for r in table:
        if r["dst"] == "default" or r["gateway"] or r["nexthops"] or r["type"] != "unicast":
            continue
        if dev and r["dev"] and r["dev"] != dev:
            continue
        try:
            net = ipaddress.ip_network(r["dst"], strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net and net.prefixlen > best_len:
            best, best_len = f"{net} dev {r['dev']}", net.prefixlen
    if best is None and ip.version == 6 and ip.is_link_local and dev:
        return f"link-local dev {dev}"  # fe80::/64 exists on every IPv6 interface
    return best


def gateway_neighbour(neighbours: Iterable[dict[str, Any]], gateway: Gateway) -> GatewayNeighbour | None:
    """The neighbour entry of `gateway` on its device, or None when there is none.

    None is normal for a learned gateway no packet has gone to yet (flannel): send one (ping)
    and read the table again. The VPC CNI's entry is static ("permanent") from pod start.
    """
    if gateway.address is None:
        return None
    want = ipaddress.ip_address(gateway.address.split("%")[0])
    for n in neighbours:
        addr = n.get("address") or n.get("dst")
        try:
            if addr is None or ipaddress.ip_address(addr.split("%")[0]) != want:
                continue
        except ValueError:
            continue
        if gateway.dev and n.get("dev") and n["dev"] != gateway.dev:
            continue
        state = [s.lower() for s in n.get("state") or ["none"]]
        lladdr = n.get("lladdr")
        # netinfo has "router": bool; `ip -j neigh` prints "router": null only for routers
        router = bool(n["router"]) if "address" in n else "router" in n
        return GatewayNeighbour(address=addr, dev=n.get("dev"), lladdr=lladdr.lower() if lladdr else None,
                                state=state, router=router,
                                usable=bool(lladdr) and not _BAD_NEIGH_STATES.intersection(state))
    return None


def _link(raw: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    if "ifname" in raw:  # `ip -j link`
        flags = raw.get("flags") or []
        kind = (raw.get("linkinfo") or {}).get("info_kind")
        return {"name": raw["ifname"], "index": raw.get("ifindex"), "mac": raw.get("address"), "kind": kind,
                "admin_up": "UP" in flags, "operstate": raw.get("operstate") or "UNKNOWN",
                "mtu": raw.get("mtu"), "master": raw.get("master")}
    master = raw.get("master_index")
    return {"name": raw["name"], "index": raw.get("index"), "mac": raw.get("mac"), "kind": raw.get("kind"),
            "admin_up": raw.get("state") == "up", "operstate": raw.get("operstate") or "UNKNOWN",
            "mtu": raw.get("mtu"), "master": names.get(master, str(master)) if master else None}


def link_by_mac(links: Iterable[dict[str, Any]], mac: str) -> NodeLink | None:
    """The node-side interface that owns `mac` (the gateway's neighbour MAC), or None.

    When several links share the MAC (a Linux bridge takes a port's MAC unless one is set), the
    one not enslaved to another is chosen: the bridge, where a bridge CNI's gateway IP lives,
    not its port. The others are listed in `same_mac`.

    >>> link_by_mac(node_links, "0a:58:0a:f4:01:01").name   # flannel: the pod's gateway MAC
    'cni0'
    """
    raw = list(links)
    names = {r.get("index"): r["name"] for r in raw if "name" in r}
    want = mac.lower()
    matches = [link for link in (_link(r, names) for r in raw) if (link["mac"] or "").lower() == want]
    if not matches:
        return None
    matches.sort(key=lambda link: (link["master"] is not None, link["index"] or 0))
    best = matches[0]
    up = best["admin_up"] and best["operstate"].upper() in ("UP", "UNKNOWN")
    return NodeLink(name=best["name"], index=best["index"], mac=want, kind=best["kind"], admin_up=best["admin_up"],
                    operstate=best["operstate"], up=up, mtu=best["mtu"], master=best["master"],
                    same_mac=[m["name"] for m in matches[1:]])
