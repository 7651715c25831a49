"""The vpc.amazonaws.com/pod-eni annotation parser, against the CNI's own acceptance rules."""
from __future__ import annotations

import json

import pytest

from netconform.analysis.podeni import ANNOTATION, BranchEni, parse_pod_eni
from netconform.errors import InvalidAnnotation, NetconformError

# As the resource controller writes it (shape of shared/reference/eks-networking.md §1.4).
RC_WRITTEN = ('[{"eniId":"eni-0123456789abcdef0","ifAddress":"0a:1b:2c:3d:4e:5f","privateIp":"10.0.12.34",'
              '"ipv6Addr":"","vlanId":3,"subnetCidr":"10.0.0.0/19","subnetV6Cidr":"",'
              '"associationID":"trunk-assoc-0123456789abcdef0"}]')


def _one(**fields) -> str:
    base = {"eniId": "eni-0123456789abcdef0", "ifAddress": "0a:1b:2c:3d:4e:5f", "privateIp": "10.0.12.34",
            "ipv6Addr": "", "vlanId": 3, "subnetCidr": "10.0.0.0/19", "subnetV6Cidr": "",
            "associationID": "trunk-assoc-0123456789abcdef0"}
    base.update(fields)
    return json.dumps([{k: v for k, v in base.items() if v is not ...}])


def test_resource_controller_shape():
    (eni,) = parse_pod_eni(RC_WRITTEN)
    assert eni == BranchEni(eni_id="eni-0123456789abcdef0", if_address="0a:1b:2c:3d:4e:5f", private_ip="10.0.12.34",
                            ipv6_addr="", vlan_id=3, subnet_cidr="10.0.0.0/19", subnet_v6_cidr="",
                            association_id="trunk-assoc-0123456789abcdef0")
    assert (eni.vlan_link, eni.route_table, eni.gateway_ipv4) == ("vlan.eth.3", 103, "10.0.0.1")


@pytest.mark.parametrize("vlan_key", ["vlanId", "vlanID", "VLANID", "vlanid"])
@pytest.mark.parametrize("assoc_key", ["associationID", "AssociationId", "associationId"])
def test_keys_are_case_insensitive(vlan_key, assoc_key):
    value = json.dumps([{"ifAddress": "0a:1b:2c:3d:4e:5f", "privateIp": "10.0.12.34", vlan_key: 7,
                         assoc_key: "trunk-assoc-1", "EniID": "eni-1", "SubnetCIDR": "10.0.32.0/19"}])
    (eni,) = parse_pod_eni(value)
    assert (eni.vlan_id, eni.association_id, eni.eni_id, eni.gateway_ipv4) == (7, "trunk-assoc-1", "eni-1", "10.0.32.1")


def test_last_duplicate_wins_and_null_keeps_zero_value():
    (eni,) = parse_pod_eni('[{"ifAddress":"a","privateIp":"10.0.0.5","vlanId":3,"vlanID":9,"eniId":null}]')
    assert eni.vlan_id == 9 and eni.eni_id == ""
    (eni,) = parse_pod_eni('[{"ifAddress":"a","privateIp":"10.0.0.5","vlanId":4,"vlanID":null}]')
    assert eni.vlan_id == 4


def test_unknown_keys_ignored_and_ipv6_only_accepted():
    (eni,) = parse_pod_eni(_one(privateIp="", ipv6Addr="2600:1f14::5", subnetV6Cidr="2600:1f14::/64", extra={"x": 1}))
    assert eni.ipv6_addr == "2600:1f14::5" and eni.private_ip == ""


def test_only_the_first_element_is_checked():
    value = json.dumps([json.loads(_one())[0], {"vlanId": 0}])
    enis = parse_pod_eni(value)
    assert len(enis) == 2 and enis[1].vlan_id == 0


@pytest.mark.parametrize("value,reason", [
    ("", "not valid JSON"),
    ("[{'vlanId': 3}]", "not valid JSON"),
    ('[{"vlanId": 3}', "not valid JSON"),
    ('[{"vlanId": NaN}]', "not valid JSON"),
    ("[]", "the list is empty"),
    ("null", "the list is empty"),
    ('{"eniId":"eni-1","ifAddress":"a","privateIp":"10.0.0.5","vlanId":3}', "a JSON object, not a list"),
    ('"eni-1"', "a JSON string, not a list"),
    ("[1]", "element 0 is a JSON number, not an object"),
    ('[{"vlanId": "3"}]', 'element 0: vlanId must be a 64-bit integer, got "3"'),
    ('[{"vlanId": 3.0}]', "element 0: vlanId must be a 64-bit integer, got 3.0"),
    ('[{"vlanId": true}]', "element 0: vlanId must be a 64-bit integer, got true"),
    ('[{"vlanId": 9223372036854775808}]', "element 0: vlanId must be a 64-bit integer, got 9223372036854775808"),
    ('[{"privateIp": 10}]', "element 0: privateIp must be a string"),
    (_one()[:-1] + ', {"vlanID": "x"}]', "element 1: vlanID must be a 64-bit integer"),  # any element fails unmarshal
])
def test_unmarshal_failures(value, reason):
    with pytest.raises(InvalidAnnotation) as exc:
        parse_pod_eni(value)
    assert exc.value.reason.startswith(reason), exc.value.reason
    assert "Failed to unmarshal PodENIData JSON" in exc.value.reason
    assert exc.value.key == ANNOTATION and exc.value.value == value


@pytest.mark.parametrize("fields,reason", [
    ({"privateIp": "", "ipv6Addr": ""}, "privateIp and ipv6Addr are both empty"),
    ({"privateIp": ..., "ipv6Addr": ...}, "privateIp and ipv6Addr are both empty"),
    ({"ifAddress": ""}, "ifAddress is empty"),
    ({"vlanId": 0}, "vlanId is 0"),
    ({"vlanId": ...}, "vlanId is 0"),
    ({"vlanId": None}, "vlanId is 0"),
])
def test_cni_rejections(fields, reason):
    with pytest.raises(InvalidAnnotation) as exc:
        parse_pod_eni(_one(**fields))
    assert exc.value.reason == f"{reason} (CNI: Failed to parse pod-ENI annotation)"
    assert str(exc.value) == f"annotation {ANNOTATION} is invalid: {exc.value.reason}"
    assert isinstance(exc.value, NetconformError)


def test_cluster_mode_checks():
    v6_only = _one(privateIp="", ipv6Addr="2600:1f14::5", subnetV6Cidr="2600:1f14::/64")
    with pytest.raises(InvalidAnnotation, match="privateIp is empty .IPv4 cluster."):
        parse_pod_eni(v6_only, ip_family="ipv4")
    assert parse_pod_eni(v6_only, ip_family="ipv6")[0].ipv6_addr == "2600:1f14::5"
    with pytest.raises(InvalidAnnotation, match="ipv6Addr is empty .IPv6 cluster."):
        parse_pod_eni(_one(), ip_family="ipv6")
    v4_cidr = "subnetCidr '10.0.0.0' is not a CIDR .CNI: Failed to parse V4 subnet CIDR."
    with pytest.raises(InvalidAnnotation, match=v4_cidr):
        parse_pod_eni(_one(subnetCidr="10.0.0.0"), ip_family="ipv4")
    with pytest.raises(InvalidAnnotation, match="subnetV6Cidr '' is not a CIDR"):
        parse_pod_eni(_one(privateIp="", ipv6Addr="2600:1f14::5"), ip_family="ipv6")
    # Go's ParseCIDR accepts host bits; the CNI then uses the network's first address
    (eni,) = parse_pod_eni(_one(subnetCidr="10.0.12.34/19"), ip_family="ipv4")
    assert eni.gateway_ipv4 == "10.0.0.1"
    with pytest.raises(ValueError):
        parse_pod_eni(_one(), ip_family="dual")


def test_gateway_of_unparseable_subnet_is_none():
    (eni,) = parse_pod_eni(_one(subnetCidr="garbage"))
    assert eni.gateway_ipv4 is None
