"""Ready and not-ready endpoints per service port, from EndpointSlices as the API returns them.

What kube-proxy and CoreDNS read is the EndpointSlices (discovery.k8s.io/v1), not the Service:
several slices per service (100 endpoints each by default, one per address family), merged by
the consumer. The rules below are the API's (EndpointSlice reference, `EndpointConditions`):

- `conditions.ready` absent (nil) means unknown, "consumers should interpret this unknown state
  as ready"; `serving` absent defers to `ready`; `terminating` absent means false;
- an endpoint can appear in two slices while the controller moves it: consumers deduplicate
  (here: by address and port per service port; a ready copy wins, every slice is kept);
- `ports` empty or absent means "no defined ports" (a headless service without ports), a port
  without `port` means "all ports": both give port None here; an unnamed port has name "";
- addressType IPv4, IPv6 and FQDN are separate groups: a dual-stack service has one of each
  family, and a check probes each family on its own.

>>> groups = service_ports(slices)          # items of `GET /apis/discovery.k8s.io/v1/endpointslices`
>>> g = next(g for g in groups if g.service == "kubernetes")
>>> g.port_name, g.protocol, g.address_type, [(e.address, e.port) for e in g.ready]
('https', 'TCP', 'IPv4', [('10.0.200.11', 443), ('10.0.200.12', 443)])
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Endpoint", "ServicePortEndpoints", "ready_addresses", "service_ports"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass
class Endpoint:
    """One address (and the port number its slice gives) of one service port."""

    address: str  # an IP, or a name for addressType FQDN
    port: int | None  # None: the slice defines no ports, or "all ports"
    ready: bool
    serving: bool
    terminating: bool
    node: str | None = None
    target: str | None = None  # "Pod shop/db-0"; None for the apiserver's own endpoints
    hostname: str | None = None
    zone: str | None = None
    slices: list[str] = field(default_factory=list)  # every slice that lists it


@dataclass
class ServicePortEndpoints:
    """The endpoints of one port of one service, for one address type."""

    namespace: str
    service: str
    port_name: str  # "" for an unnamed port (a single-port service)
    protocol: str | None  # "TCP" | "UDP" | "SCTP"; None when the slices define no ports
    address_type: str  # "IPv4" | "IPv6" | "FQDN"
    ready: list[Endpoint] = field(default_factory=list)
    not_ready: list[Endpoint] = field(default_factory=list)  # incl. terminating-but-serving ones


def _service_of(s: dict[str, Any]) -> str | None:
    meta = s.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if name:
        return name
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Service"), None)
    return owner.get("name") if owner else None


def _conditions(ep: dict[str, Any]) -> tuple[bool, bool, bool]:
    cond = ep.get("conditions") or {}
    ready = cond.get("ready")
    ready = True if ready is None else bool(ready)  # nil: unknown, to be taken as ready
    serving = cond.get("serving")
    serving = ready if serving is None else bool(serving)
    return ready, serving, bool(cond.get("terminating"))


def _target(ep: dict[str, Any]) -> str | None:
    ref = ep.get("targetRef")
    if not ref:
        return None
    where = f"{ref['namespace']}/{ref.get('name', '')}" if ref.get("namespace") else ref.get("name", "")
    return f"{ref.get('kind', '?')} {where}"


def _sort_key(e: Endpoint) -> tuple:
    try:
        ip = ipaddress.ip_address(e.address)
        return (0, ip.version, int(ip), e.port or 0)
    except ValueError:
        return (1, 0, e.address, e.port or 0)


def service_ports(slices: Iterable[dict[str, Any]]) -> list[ServicePortEndpoints]:
    """Group the endpoints of `slices` by (namespace, service, port name, protocol, address type).

    Slices that name no service (no `kubernetes.io/service-name` label, no Service owner) are
    skipped: nothing routes to them by a Service.

    >>> [(g.service, g.address_type, len(g.ready), len(g.not_ready)) for g in service_ports(web_slices)]
    [('web', 'IPv4', 2, 1), ('web', 'IPv6', 2, 1)]
    """
    groups: dict[tuple, ServicePortEndpoints] = {}
    members: dict[tuple, dict[tuple, Endpoint]] = {}
    for s in slices:
        service = _service_of(s)
        if not service:
            continue
        meta = s.get("metadata") or {}
        namespace, slice_name = meta.get("namespace", ""), meta.get("name", "")
        address_type = s.get("addressType", "IPv4")
        ports = s.get("ports") or [{}]  # no ports: one group with port None
        for p in ports:
            protocol = (p.get("protocol") or "TCP") if p else None
            key = (namespace, service, p.get("name") or "", protocol, address_type)
            if key not in groups:
                groups[key] = ServicePortEndpoints(namespace, service, key[2], protocol, address_type)
                members[key] = {}
            for ep in s.get("endpoints") or []:
                ready, serving, terminating = _conditions(ep)
                for address in ep.get("addresses") or []:
                    _merge(members[key], Endpoint(
                        address=address, port=p.get("port"), ready=ready, serving=serving,
                        terminating=terminating, node=ep.get("nodeName"), target=_target(ep),
                        hostname=ep.get("hostname"), zone=ep.get("zone"), slices=[slice_name]))
    for key, group in groups.items():
        for e in sorted(members[key].values(), key=_sort_key):
            (group.ready if e.ready else group.not_ready).append(e)
    return [groups[k] for k in sorted(groups, key=lambda k: tuple(x or "" for x in k))]


def _merge(seen: dict[tuple, Endpoint], e: Endpoint) -> None:
    key = (e.address, e.port)
    old = seen.get(key)
    if old is None:
        seen[key] = e
        return
    # The same endpoint in two slices (the controller is moving it): a ready copy wins, as
    # kube-proxy would still route to it through that slice.
    keep = e if e.ready and not old.ready else old
    keep.slices = sorted(set(old.slices) | set(e.slices))
    seen[key] = keep


def ready_addresses(slices: Iterable[dict[str, Any]], namespace: str, service: str,
                    address_type: str = "IPv4") -> list[str]:
    """The distinct ready addresses of one service, whatever the port: what a headless service's
    DNS name answers (CoreDNS publishes ready endpoints only; publishNotReadyAddresses makes the
    controller mark them ready).

    >>> ready_addresses(slices, "shop", "db")
    ['10.0.1.20', '10.0.2.31']
    """
    out: dict[str, Endpoint] = {}
    for g in service_ports(slices):
        if (g.namespace, g.service, g.address_type) == (namespace, service, address_type):
            for e in g.ready:
                out.setdefault(e.address, e)
    return [e.address for e in sorted(out.values(), key=_sort_key)]
