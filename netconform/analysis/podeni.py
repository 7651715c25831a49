"""The `vpc.amazonaws.com/pod-eni` annotation, parsed the way the VPC CNI parses it.

The resource controller writes it after it attaches a branch ENI to an SGFP pod; the CNI reads it
in AddNetwork (aws/amazon-vpc-cni-k8s `pkg/ipamd/rpc_handler.go`) with Go's `json.Unmarshal`
into `[]PodENIData`, then checks only the **first** element. So, like Go:

- the value is a JSON **list** of objects; keys match field names case-insensitively
  (`vlanId` / `vlanID`, `associationID` / `AssociationId`), the last duplicate wins, unknown keys
  are ignored, `null` leaves a field at its zero value;
- a wrong type anywhere (`"vlanId": "3"`, `3.0`, an object instead of a list) fails the whole
  unmarshal, and so does an empty list or `null`;
- the first element is rejected if `(privateIp == "" and ipv6Addr == "") or ifAddress == ""
  or vlanId == 0`; with `ip_family` the check is the one of that cluster mode, plus the subnet
  CIDR the CNI derives the gateway from.

>>> eni, = parse_pod_eni('[{"eniId":"eni-0a1b","ifAddress":"0a:1b:2c:3d:4e:5f","privateIp":"10.0.12.34",'
...                      '"ipv6Addr":"","vlanID":3,"subnetCidr":"10.0.0.0/19","AssociationId":"trunk-assoc-1"}]')
>>> eni.vlan_id, eni.vlan_link, eni.route_table, eni.gateway_ipv4, eni.association_id
(3, 'vlan.eth.3', 103, '10.0.0.1', 'trunk-assoc-1')
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal

from netconform.errors import InvalidAnnotation

__all__ = ["ANNOTATION", "BranchEni", "parse_pod_eni"]

ANNOTATION = "vpc.amazonaws.com/pod-eni"
# Log lines the CNI writes when it rejects the annotation (quoted so reports can point at them).
LOG_UNMARSHAL = "Failed to unmarshal PodENIData JSON"
LOG_INVALID = "Failed to parse pod-ENI annotation"
LOG_V4_CIDR = "Failed to parse V4 subnet CIDR"
LOG_V6_CIDR = "Failed to parse V6 subnet CIDR"
_INT64 = 2**63


@dataclass(frozen=True)
class BranchEni:
    """One element of the annotation: a branch ENI on the node's trunk ENI."""

    eni_id: str = ""
    if_address: str = ""  # the branch ENI's MAC
    private_ip: str = ""  # the pod's IPv4 ("" in IPv6 clusters)
    ipv6_addr: str = ""
    vlan_id: int = 0  # 1..120 on the trunk
    subnet_cidr: str = ""
    subnet_v6_cidr: str = ""
    association_id: str = ""  # trunk-assoc-…

    @property
    def vlan_link(self) -> str:
        """Name of the host VLAN link the CNI creates for it."""
        return f"vlan.eth.{self.vlan_id}"

    @property
    def route_table(self) -> int:
        """The host route table the CNI uses for the pod (vlanId + 100)."""
        return self.vlan_id + 100

    @property
    def gateway_ipv4(self) -> str | None:
        """The subnet's first address, which the CNI uses as the pod's IPv4 gateway."""
        try:
            net = ipaddress.IPv4Network(self.subnet_cidr, strict=False)
        except ValueError:
            return None
        return str(net.network_address + 1)


# lower-cased JSON key -> (field, Go type); Go's decoder folds case when it matches keys to fields
_FIELDS: dict[str, tuple[str, type]] = {
    "eniid": ("eni_id", str),
    "ifaddress": ("if_address", str),
    "privateip": ("private_ip", str),
    "ipv6addr": ("ipv6_addr", str),
    "vlanid": ("vlan_id", int),
    "subnetcidr": ("subnet_cidr", str),
    "subnetv6cidr": ("subnet_v6_cidr", str),
    "associationid": ("association_id", str),
}
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number",
              type(None): "null"}


def _reject(reason: str, value: str) -> InvalidAnnotation:
    return InvalidAnnotation(ANNOTATION, reason, value)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Go rejects NaN/Infinity, Python would accept them


def _element(index: int, obj: Any, value: str) -> BranchEni:
    if obj is None:  # Go: null into a struct is a no-op
        return BranchEni()
    if not isinstance(obj, dict):
        raise _reject(f"element {index} is a JSON {_JSON_TYPE.get(type(obj), '?')}, not an object "
                      f"(CNI: {LOG_UNMARSHAL})", value)
    fields: dict[str, Any] = {}
    for key, v in obj.items():  # in document order, so the last duplicate wins as in Go
        spec = _FIELDS.get(key.lower())
        if spec is None or v is None:
            continue
        name, go_type = spec
        ok = (isinstance(v, str) if go_type is str
              else isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64)
        if not ok:
            want = "a string" if go_type is str else "a 64-bit integer"
            raise _reject(f"element {index}: {key} must be {want}, got {json.dumps(v)} "
                          f"(CNI: {LOG_UNMARSHAL})", value)
        fields[name] = v
    return BranchEni(**fields)


def parse_pod_eni(value: str, ip_family: Literal["ipv4", "ipv6"] | None = None) -> list[BranchEni]:
    """Parse the annotation value; raise InvalidAnnotation (with `.reason`) where the CNI would fail.

    `ip_family` applies the CNI's check for that cluster mode ("ipv4": privateIp and subnetCidr
    required; "ipv6": ipv6Addr and subnetV6Cidr); None applies the mode-independent rule.

    >>> parse_pod_eni('[{"ifAddress":"0a:1b:2c:3d:4e:5f","privateIp":"10.0.0.9","vlanId":0}]')
    Traceback (most recent call last):
    netconform.errors.InvalidAnnotation: annotation vpc.amazonaws.com/pod-eni is invalid: vlanId is 0 (CNI: Failed to parse pod-ENI annotation)
    """
    if not isinstance(value, str):
        raise _reject(f"value is a {type(value).__name__}, not a string", str(value))
    try:
        data = json.loads(value, parse_constant=_no_constants)
    except ValueError as e:
        raise _reject(f"not valid JSON: {e} (CNI: {LOG_UNMARSHAL})", value) from None
    if data is None or data == []:
        raise _reject(f"the list is empty (CNI: {LOG_UNMARSHAL})", value)
    if not isinstance(data, list):
        raise _reject(f"a JSON {_JSON_TYPE.get(type(data), '?')}, not a list (CNI: {LOG_UNMARSHAL})", value)
    enis = [_element(i, obj, value) for i, obj in enumerate(data)]

    first = enis[0]  # the CNI uses and checks only the first element
    if ip_family == "ipv4":
        ip_missing = "privateIp is empty (IPv4 cluster)" if not first.private_ip else ""
    elif ip_family == "ipv6":
        ip_missing = "ipv6Addr is empty (IPv6 cluster)" if not first.ipv6_addr else ""
    elif ip_family is None:
        ip_missing = "privateIp and ipv6Addr are both empty" if not (first.private_ip or first.ipv6_addr) else ""
    else:
        raise ValueError(f"ip_family must be 'ipv4', 'ipv6' or None, got {ip_family!r}")
    for problem in (ip_missing, "ifAddress is empty" if not first.if_address else "",
                    "vlanId is 0" if first.vlan_id == 0 else ""):
        if problem:
            raise _reject(f"{problem} (CNI: {LOG_INVALID})", value)
    if ip_family is not None:
        cidr = first.subnet_cidr if ip_family == "ipv4" else first.subnet_v6_cidr
        key, log = ("subnetCidr", LOG_V4_CIDR) if ip_family == "ipv4" else ("subnetV6Cidr", LOG_V6_CIDR)
        if not _go_parse_cidr(cidr):
            raise _reject(f"{key} {cidr!r} is not a CIDR (CNI: {log})", value)
    return enis


def _go_parse_cidr(text: str) -> bool:
    # Go's net.ParseCIDR wants address/prefix and accepts host bits set (10.0.0.5/19).
    if "/" not in text:
        return False
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
