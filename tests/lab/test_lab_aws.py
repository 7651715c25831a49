"""The lab's AWS: moto seeded like the lab cluster, read back the way product code reads it.

No root needed. Everything goes through plain boto3 clients configured only by the environment
that `aws_env` returns (AWS_ENDPOINT_URL), as the suite's fixtures will be.
"""
from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError

from netconform.lab import aws
from netconform.lab.topology import LabSpec, build_spec

REGION = "us-west-2"


@pytest.fixture(scope="module")
def moto_url():
    handle = aws.start_moto()
    yield handle.url
    handle.stop()


@pytest.fixture(scope="module")
def clients(moto_url):
    """EC2 and CloudTrail clients built from the environment alone."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(key, raising=False)
        for key, value in aws.aws_env(moto_url, REGION).items():
            mp.setenv(key, value)
        session = boto3.session.Session()
        yield SimpleNamespace(
            ec2=session.client("ec2"),
            cloudtrail=session.client("cloudtrail"),
            cloudtrail_east=session.client("cloudtrail", region_name="us-east-1"),
        )


@pytest.fixture(scope="module")
def cni_lab(moto_url) -> LabSpec:
    spec = build_spec("awst", "vpc-cni", 2, 3)
    aws.seed(spec, moto_url)
    return spec


@pytest.fixture(scope="module")
def flannel_lab(moto_url) -> LabSpec:
    spec = build_spec("awsf", "flannel", 2, 3)
    aws.seed(spec, moto_url)
    return spec


def describe_eni(ec2, eni_id: str) -> dict:
    return ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]


def eni_filter(ec2, *pairs: tuple[str, str | list[str]]) -> list[dict]:
    flt = [{"Name": name, "Values": v if isinstance(v, list) else [v]} for name, v in pairs]
    return ec2.describe_network_interfaces(Filters=flt)["NetworkInterfaces"]


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("TagSet", resource.get("Tags", []))}


def pod_ips(spec: LabSpec) -> list[str]:
    return [p.ip for p in spec.pods if not p.host_network]


# -- environment and seed ----------------------------------------------------------------------

def test_aws_env_points_boto3_at_the_lab(clients, moto_url):
    env = aws.aws_env(moto_url, REGION)
    assert env["AWS_ENDPOINT_URL"] == moto_url
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == REGION
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    assert clients.ec2.meta.endpoint_url == moto_url
    assert moto_url.startswith("http://127.0.0.1:") and not moto_url.endswith(":0")


def test_seed_writes_every_id_into_the_spec(cni_lab):
    assert cni_lab.vpc_id.startswith("vpc-") and cni_lab.subnet_id.startswith("subnet-")
    for node in cni_lab.nodes:
        assert node.instance_id.startswith("i-")
        assert node.primary_eni_id.startswith("eni-") and node.trunk_eni_id.startswith("eni-")
    sgfp = [p for p in cni_lab.pods if p.sgfp]
    assert len(sgfp) == len(cni_lab.nodes)
    assert all(p.branch_eni_id.startswith("eni-") for p in sgfp)
    assert not any(p.branch_eni_id for p in cni_lab.pods if not p.sgfp)
    cluster_sg = aws.cluster_security_group_name(cni_lab)
    assert cluster_sg.startswith("eks-cluster-sg-netconform-awst-")
    assert set(cni_lab.sg_ids) == {cluster_sg, "netconform-awst-node", "payments-sg", "db-clients-sg"}
    assert all(v.startswith("sg-") for v in cni_lab.sg_ids.values())


def test_security_groups_have_names_and_descriptions(clients, cni_lab):
    groups = clients.ec2.describe_security_groups(GroupIds=list(cni_lab.sg_ids.values()))["SecurityGroups"]
    by_name = {g["GroupName"]: g for g in groups}
    assert {n: g["GroupId"] for n, g in by_name.items()} == cni_lab.sg_ids
    assert all(g["VpcId"] == cni_lab.vpc_id and g["Description"] for g in groups)
    cluster_sg = by_name[aws.cluster_security_group_name(cni_lab)]
    assert cluster_sg["Description"].startswith("EKS created security group")
    assert tags(cluster_sg)["kubernetes.io/cluster/netconform-awst"] == "owned"
    ports = [(p["IpProtocol"], p.get("FromPort")) for p in by_name["payments-sg"]["IpPermissions"]]
    assert ("tcp", 8443) in ports


def test_instances_sit_at_the_node_ips(clients, cni_lab):
    reservations = clients.ec2.describe_instances(
        Filters=[{"Name": "vpc-id", "Values": [cni_lab.vpc_id]}])["Reservations"]
    instances = {i["InstanceId"]: i for r in reservations for i in r["Instances"]}
    assert {i: x["PrivateIpAddress"] for i, x in instances.items()} == {
        n.instance_id: n.ip for n in cni_lab.nodes}
    for node in cni_lab.nodes:
        inst = instances[node.instance_id]
        assert inst["Placement"]["AvailabilityZone"] == "us-west-2a"
        t = tags(inst)
        assert t["kubernetes.io/cluster/netconform-awst"] == "owned"
        assert t["eks:cluster-name"] == "netconform-awst" and t["Name"]
        assert t["eks:nodegroup-name"] == aws.node_group_name(cni_lab) == "netconform-awst-ng"
        assert inst["ImageId"] == aws.node_image_id(cni_lab)
        primary = next(n for n in inst["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
        assert primary["NetworkInterfaceId"] == node.primary_eni_id
        assert primary["MacAddress"] == node.eth0_mac
        assert {g["GroupId"] for g in inst["SecurityGroups"]} == {
            cni_lab.sg_ids[n] for n in aws.node_security_group_names(cni_lab)}


def test_instance_found_by_a_pod_ip_on_its_enis(clients, cni_lab):
    """moto answered `network-interface.*` instance filters with HTTP 500."""
    pod = next(p for p in cni_lab.pods if not p.host_network and not p.sgfp)
    reservations = clients.ec2.describe_instances(Filters=[
        {"Name": "network-interface.addresses.private-ip-address", "Values": [pod.ip]},
        {"Name": "vpc-id", "Values": [cni_lab.vpc_id]},
    ])["Reservations"]
    found = [i["InstanceId"] for r in reservations for i in r["Instances"]]
    assert found == [cni_lab.node(pod.node).instance_id]


def test_pod_ips_are_secondary_ips_of_the_primary_eni(clients, cni_lab):
    for node in cni_lab.nodes:
        expected = {p.ip for p in cni_lab.pods_on(node.name) if not p.host_network and not p.sgfp}
        eni = describe_eni(clients.ec2, node.primary_eni_id)
        addresses = {a["PrivateIpAddress"]: a["Primary"] for a in eni["PrivateIpAddresses"]}
        assert addresses == {node.ip: True, **{ip: False for ip in expected}}
    # one batched call for every pod IP (the suite's O(1) pattern): values are ORed
    found = eni_filter(clients.ec2, ("addresses.private-ip-address", pod_ips(cni_lab)),
                       ("vpc-id", cni_lab.vpc_id))
    assert {e["NetworkInterfaceId"] for e in found} == (
        {n.primary_eni_id for n in cni_lab.nodes} | {p.branch_eni_id for p in cni_lab.pods if p.sgfp})


def test_subnet_counts_the_ips_in_use(clients, cni_lab, flannel_lab):
    sub = clients.ec2.describe_subnets(SubnetIds=[cni_lab.subnet_id])["Subnets"][0]
    assert sub["CidrBlock"] == cni_lab.node_subnet and sub["AvailabilityZone"] == "us-west-2a"
    size = ipaddress.ip_network(cni_lab.node_subnet).num_addresses
    in_use = 2 * len(cni_lab.nodes) + len(pod_ips(cni_lab))  # primary + trunk per node, pods
    assert sub["AvailableIpAddressCount"] == size - 5 - in_use
    sub = clients.ec2.describe_subnets(SubnetIds=[flannel_lab.subnet_id])["Subnets"][0]
    assert sub["AvailableIpAddressCount"] == 256 - 5 - len(flannel_lab.nodes)


# -- trunk and branch ENIs ---------------------------------------------------------------------

def test_trunk_found_by_interface_type_and_instance(clients, cni_lab):
    for node in cni_lab.nodes:
        found = eni_filter(clients.ec2, ("interface-type", "trunk"),
                           ("attachment.instance-id", node.instance_id))
        assert [e["NetworkInterfaceId"] for e in found] == [node.trunk_eni_id]
        trunk = found[0]
        assert trunk["Description"] == "aws-k8s-trunk-eni" and trunk["Status"] == "in-use"
        assert trunk["Attachment"]["Status"] == "attached"
        assert trunk["MacAddress"] == node.trunk_mac
        assert tags(trunk) == {"eks:eni:owner": "eks-vpc-resource-controller",
                               "kubernetes.io/cluster/netconform-awst": "owned",
                               "node.k8s.amazonaws.com/instance_id": node.instance_id}
    attached = eni_filter(clients.ec2, ("interface-type", "trunk"), ("attachment.status", "attached"),
                          ("vpc-id", cni_lab.vpc_id))
    assert {e["NetworkInterfaceId"] for e in attached} == {n.trunk_eni_id for n in cni_lab.nodes}


def test_branches_found_by_type_by_trunk_tag_and_by_pod_ip(clients, cni_lab):
    sgfp = [p for p in cni_lab.pods if p.sgfp]
    by_type = eni_filter(clients.ec2, ("interface-type", "branch"), ("vpc-id", cni_lab.vpc_id))
    assert {e["NetworkInterfaceId"] for e in by_type} == {p.branch_eni_id for p in sgfp}
    for node in cni_lab.nodes:
        by_tag = eni_filter(clients.ec2, ("tag:vpcresources.k8s.aws/trunk-eni-id", node.trunk_eni_id))
        assert {e["NetworkInterfaceId"] for e in by_tag} == {
            p.branch_eni_id for p in sgfp if p.node == node.name}
    for pod in sgfp:
        node = cni_lab.node(pod.node)
        found = eni_filter(clients.ec2, ("addresses.private-ip-address", pod.ip),
                           ("vpc-id", cni_lab.vpc_id))
        assert [e["NetworkInterfaceId"] for e in found] == [pod.branch_eni_id]
        branch = found[0]
        assert branch["InterfaceType"] == "branch" and branch["Status"] == "in-use"
        assert "Attachment" not in branch
        assert branch["Description"] == "aws-k8s-branch-eni"
        assert branch["PrivateIpAddress"] == pod.ip and branch["MacAddress"] == pod.branch_mac
        assert sorted(g["GroupId"] for g in branch["Groups"]) == sorted(
            cni_lab.sg_ids[name] for name in pod.security_groups)
        assert tags(branch) == {
            "vpcresources.k8s.aws/trunk-eni-id": node.trunk_eni_id,
            "vpcresources.k8s.aws/vlan-id": str(pod.vlan_id),
            "node.k8s.amazonaws.com/instance_id": node.instance_id,
            "eks:eni:owner": "eks-vpc-resource-controller",
            "kubernetes.io/cluster/netconform-awst": "owned",
        }


def test_branches_are_associated_with_their_vlan(clients, cni_lab):
    assocs = {a["BranchInterfaceId"]: a for a in
              clients.ec2.describe_trunk_interface_associations()["InterfaceAssociations"]}
    for pod in (p for p in cni_lab.pods if p.sgfp):
        a = assocs[pod.branch_eni_id]
        assert a["TrunkInterfaceId"] == cni_lab.node(pod.node).trunk_eni_id
        assert a["VlanId"] == pod.vlan_id and a["InterfaceProtocol"] == "VLAN"
        assert a["AssociationId"] == aws.association_id(pod.branch_eni_id)
        assert len(a["AssociationId"]) == len("trunk-assoc-") + 17
        with pytest.raises(ClientError) as exc:
            clients.ec2.associate_trunk_interface(BranchInterfaceId=pod.branch_eni_id,
                                                  TrunkInterfaceId=a["TrunkInterfaceId"], VlanId=99)
        assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_interface_type_is_kept_and_disassociation_frees_a_branch(clients, flannel_lab):
    ec2 = clients.ec2
    trunk = ec2.create_network_interface(SubnetId=flannel_lab.subnet_id, InterfaceType="trunk")
    branch = ec2.create_network_interface(SubnetId=flannel_lab.subnet_id, InterfaceType="branch")
    trunk_id = trunk["NetworkInterface"]["NetworkInterfaceId"]
    branch_id = branch["NetworkInterface"]["NetworkInterfaceId"]
    try:
        assert trunk["NetworkInterface"]["InterfaceType"] == "trunk"
        assoc = ec2.associate_trunk_interface(BranchInterfaceId=branch_id, TrunkInterfaceId=trunk_id,
                                              VlanId=7)["InterfaceAssociation"]
        assert describe_eni(ec2, branch_id)["Status"] == "in-use"
        assert ec2.disassociate_trunk_interface(AssociationId=assoc["AssociationId"])["Return"]
        left = eni_filter(ec2, ("status", "available"), ("interface-type", "branch"),
                          ("vpc-id", flannel_lab.vpc_id))
        assert [e["NetworkInterfaceId"] for e in left] == [branch_id]
    finally:
        ec2.delete_network_interface(NetworkInterfaceId=branch_id)
        ec2.delete_network_interface(NetworkInterfaceId=trunk_id)


def test_flannel_gets_vpc_subnet_sgs_and_instances_only(clients, flannel_lab):
    found = eni_filter(clients.ec2, ("vpc-id", flannel_lab.vpc_id))
    assert {e["NetworkInterfaceId"] for e in found} == {n.primary_eni_id for n in flannel_lab.nodes}
    assert {e["InterfaceType"] for e in found} == {"interface"}
    assert {e["PrivateIpAddress"] for e in found} == {n.ip for n in flannel_lab.nodes}
    assert all(len(e["PrivateIpAddresses"]) == 1 for e in found)  # overlay pod IPs are not VPC IPs
    assert list(flannel_lab.sg_ids) == ["netconform-awsf-node"]
    assert not any(n.trunk_eni_id for n in flannel_lab.nodes)
    reservations = clients.ec2.describe_instances(
        Filters=[{"Name": "vpc-id", "Values": [flannel_lab.vpc_id]}])["Reservations"]
    assert sorted(i["PrivateIpAddress"] for r in reservations for i in r["Instances"]) == sorted(
        n.ip for n in flannel_lab.nodes)


# -- CloudTrail --------------------------------------------------------------------------------

def lookup(ct, key: str | None = None, value: str | None = None, **kw) -> list[dict]:
    """Every event through the boto3 paginator (as product code reads it)."""
    if key:
        kw["LookupAttributes"] = [{"AttributeKey": key, "AttributeValue": value}]
    return [e for page in ct.get_paginator("lookup_events").paginate(**kw) for e in page["Events"]]


def record(event: dict) -> dict:
    return json.loads(event["CloudTrailEvent"])


def lab_eni_ids(spec: LabSpec) -> set[str]:
    return {n.trunk_eni_id for n in spec.nodes} | {p.branch_eni_id for p in spec.pods if p.sgfp}


def test_lookup_by_event_name_in_a_window_finds_the_rc_creating_enis(clients, cni_lab):
    now = datetime.now(UTC)
    events = lookup(clients.cloudtrail, "EventName", "CreateNetworkInterface",
                    StartTime=now - timedelta(hours=4), EndTime=now)
    assert all(e["EventName"] == "CreateNetworkInterface" for e in events)
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)
    assert all(now - timedelta(hours=4) <= t <= now for t in times)
    mine = {}
    for e in events:
        rec = record(e)
        eni = ((rec.get("responseElements") or {}).get("networkInterface") or {}).get("networkInterfaceId")
        if eni in lab_eni_ids(cni_lab):
            mine[eni] = (e, rec)
    assert set(mine) == lab_eni_ids(cni_lab)
    for node in cni_lab.nodes:
        e, rec = mine[node.trunk_eni_id]
        assert rec["requestParameters"]["description"] == "aws-k8s-trunk-eni"
        assert rec["requestParameters"]["interfaceType"] == "trunk"
    for eni_id, (e, rec) in mine.items():
        assert "amazon-vpc-resource-controller-k8s" in rec["userAgent"]
        assert rec["userIdentity"]["arn"].endswith(
            ":assumed-role/netconform-awst-cluster-role/amazon-vpc-resource-controller-k8s")
        assert e["Username"] == "amazon-vpc-resource-controller-k8s"
        assert e["ReadOnly"] == "false" and e["EventSource"] == "ec2.amazonaws.com"
        assert {"ResourceType": "AWS::EC2::NetworkInterface", "ResourceName": eni_id} in e["Resources"]
        assert "errorCode" not in rec
    # the window is inclusive at both ends
    t = mine[cni_lab.nodes[0].trunk_eni_id][0]["EventTime"]
    exact = lookup(clients.cloudtrail, "EventName", "CreateNetworkInterface", StartTime=t, EndTime=t)
    assert exact and all(e["EventTime"] == t for e in exact)
    assert not lookup(clients.cloudtrail, "EventName", "CreateNetworkInterface",
                      StartTime=t + timedelta(seconds=1), EndTime=t + timedelta(seconds=1))
    assert not lookup(clients.cloudtrail_east, "EventName", "CreateNetworkInterface")


def test_trunk_and_branch_history_is_complete(clients, cni_lab):
    node = cni_lab.nodes[0]
    names = sorted(e["EventName"] for e in lookup(clients.cloudtrail, "ResourceName", node.trunk_eni_id))
    branches = sum(1 for p in cni_lab.pods_on(node.name) if p.sgfp)
    assert names == sorted(["CreateNetworkInterface", "CreateNetworkInterfacePermission",
                            "AttachNetworkInterface", "CreateTags"]
                           + ["AssociateTrunkInterface"] * branches)
    attach = next(e for e in lookup(clients.cloudtrail, "ResourceName", node.trunk_eni_id)
                  if e["EventName"] == "AttachNetworkInterface")
    eni = describe_eni(clients.ec2, node.trunk_eni_id)
    assert record(attach)["responseElements"]["attachmentId"] == eni["Attachment"]["AttachmentId"]
    assert record(attach)["requestParameters"]["instanceId"] == node.instance_id
    assigns = [e for e in lookup(clients.cloudtrail, "Username", node.instance_id)
               if e["EventName"] == "AssignPrivateIpAddresses"]
    assert len(assigns) == 1
    assert record(assigns[0])["requestParameters"]["networkInterfaceId"] == node.primary_eni_id
    read_only = lookup(clients.cloudtrail, "ReadOnly", "true",
                       StartTime=datetime.now(UTC) - timedelta(hours=4))
    assert read_only and {e["EventName"] for e in read_only} == {"DescribeNetworkInterfaces"}


def test_dry_runs_are_recorded_as_client_dry_run_operation(clients, cni_lab):
    now = datetime.now(UTC)
    dry = [e for name in ("CreateNetworkInterface", "AttachNetworkInterface", "AssignPrivateIpAddresses")
           for e in lookup(clients.cloudtrail, "EventName", name, StartTime=now - timedelta(hours=1))
           if record(e).get("errorCode") == "Client.DryRunOperation"]
    assert len(dry) >= 3
    for e in dry:
        rec = record(e)
        assert rec["errorMessage"] == "Request would have succeeded, but DryRun flag is set."
        assert rec["responseElements"] is None
        assert rec["userIdentity"]["type"] == "IAMUser"
        assert "amazon-vpc-resource-controller-k8s" not in rec["userAgent"]


def test_more_than_fifty_events_paginate(clients, cni_lab):
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    node = cni_lab.nodes[1]
    actor = aws.aws_node_actor(cni_lab, node)
    batch = [aws.cloudtrail_event(
        "AssignPrivateIpAddresses", time=base + timedelta(seconds=i), actor=actor,
        error_code="Client.RequestLimitExceeded",
        request_parameters={"networkInterfaceId": node.primary_eni_id,
                            "secondaryPrivateIpAddressCount": 1}) for i in range(120)]
    aws.add_cloudtrail_events(batch)
    try:
        ct = clients.cloudtrail
        window = {"StartTime": base, "EndTime": base + timedelta(seconds=119)}
        pages = list(ct.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "AssignPrivateIpAddresses"}],
            **window))
        assert [len(p["Events"]) for p in pages] == [50, 50, 20]
        got = [e for p in pages for e in p["Events"]]
        assert [e["EventId"] for e in got] == [e["EventId"] for e in reversed(batch)]
        rec = record(got[0])
        assert rec["errorCode"] == "Client.RequestLimitExceeded" and rec["responseElements"] is None
        assert got[0]["Username"] == node.instance_id
        small = list(ct.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": node.instance_id}],
            PaginationConfig={"PageSize": 7}, **window))
        assert len(small) == 18 and all(len(p["Events"]) <= 7 for p in small)
        first = ct.lookup_events(MaxResults=5, **window)
        with pytest.raises(ClientError) as exc:  # a token only fits the query it came from
            ct.lookup_events(MaxResults=5, NextToken=first["NextToken"],
                             StartTime=base, EndTime=base + timedelta(seconds=60))
        assert exc.value.response["Error"]["Code"] == "InvalidNextTokenException"
    finally:
        batch_ids = {e["EventId"] for e in batch}
        assert aws.clear_cloudtrail_events(lambda e: e["EventId"] in batch_ids) == 120
    assert not lookup(clients.cloudtrail, **window)


def test_lookup_rejects_what_aws_rejects(clients):
    ct = clients.cloudtrail
    two = [{"AttributeKey": "EventName", "AttributeValue": "CreateTags"},
           {"AttributeKey": "Username", "AttributeValue": "amazon-vpc-resource-controller-k8s"}]
    with pytest.raises(ct.exceptions.InvalidLookupAttributesException):
        ct.lookup_events(LookupAttributes=two)
    now = datetime.now(UTC)
    cases = [
        ({"LookupAttributes": [{"AttributeKey": "Color", "AttributeValue": "x"}]},
         "InvalidLookupAttributesException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"StartTime": now, "EndTime": now - timedelta(hours=1)}, "InvalidTimeRangeException"),
        ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
        ({"EventCategory": "data"}, "InvalidEventCategoryException"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as exc:
            ct.lookup_events(**kwargs)
        assert exc.value.response["Error"]["Code"] == code, kwargs
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_events_older_than_ninety_days_are_gone(clients, cni_lab):
    old = aws.cloudtrail_event("CreateTags", time=datetime.now(UTC) - timedelta(days=91),
                               actor=aws.operator_actor())
    aws.add_cloudtrail_events([old])
    try:
        assert old["EventId"] not in {e["EventId"] for e in lookup(clients.cloudtrail, "EventId", old["EventId"])}
    finally:
        aws.clear_cloudtrail_events(lambda e: e["EventId"] == old["EventId"])


def test_cloudtrail_event_shape():
    t = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    spec = build_spec("awsu", "vpc-cni", 1, 1)
    ev = aws.cloudtrail_event("DescribeNetworkInterfaces", time=t,
                              actor=aws.resource_controller_actor(spec),
                              resources=[("AWS::EC2::NetworkInterface", "eni-1")])
    assert set(ev) == {"EventId", "EventName", "ReadOnly", "AccessKeyId", "EventTime", "EventSource",
                       "Username", "Resources", "CloudTrailEvent"}
    assert ev["ReadOnly"] == "true" and ev["EventTime"] == t.replace(microsecond=0)
    rec = record(ev)
    assert rec["eventTime"] == "2026-01-02T03:04:05Z" and rec["eventID"] == ev["EventId"]
    assert rec["awsRegion"] == "us-west-2" and "errorCode" not in rec
    assert rec["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"] == "netconform-awsu-cluster-role"
    with pytest.raises(ValueError):
        aws.cloudtrail_event("CreateTags", time=datetime(2026, 1, 1), actor=aws.operator_actor())
    with pytest.raises(ValueError):
        aws.add_cloudtrail_events([{"EventName": "CreateTags"}])
