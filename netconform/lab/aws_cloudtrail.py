"""CloudTrail for the lab: ENI event history and a `LookupEvents` that moto lacks.

moto 5.2 answers `LookupEvents` with HTTP 500, so the lab holds its own event list and
`netconform.lab.aws` routes moto's LookupEvents action to `lookup_events` below. Product code
calls plain boto3 (`cloudtrail.get_paginator("lookup_events")`) and cannot tell the difference.

Events are stored in the LookupEvents output shape (eks-networking.md §3.3): `EventId`,
`EventName`, `ReadOnly` ("true"/"false"), `AccessKeyId`, `EventTime` (aware datetime),
`EventSource`, `Username`, `Resources`, and `CloudTrailEvent` (the full record as a JSON string,
carrying `errorCode`, `errorMessage`, `userAgent`, `requestParameters`, `responseElements`,
`userIdentity`). Build them with `cloudtrail_event`; faults reuse it, e.g. an ENI API throttle:

>>> ev = cloudtrail_event("AssignPrivateIpAddresses", time=now, actor=aws_node_actor(spec, node),
...                       error_code="Client.RequestLimitExceeded")
>>> add_cloudtrail_events([ev])

The store is process-global (the LookupEvents handler is patched onto moto's response class),
so events must be added from the process that runs the moto server: the lab daemon.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from netconform.lab.topology import LabSpec, NodeSpec

LAB_ACCOUNT_ID = "123456789012"  # moto's default account: what the lab's dummy keys map to
EC2_SOURCE = "ec2.amazonaws.com"
ENI_RESOURCE = "AWS::EC2::NetworkInterface"
INSTANCE_RESOURCE = "AWS::EC2::Instance"
RC_SESSION_NAME = "amazon-vpc-resource-controller-k8s"  # RC pkg/aws/ec2/api/wrapper.go
RC_USER_AGENT = (
    "aws-sdk-go/1.55.5 (go1.23.4; linux; amd64) amazon-vpc-resource-controller-k8s/v1.7.1"
)
# The CNI sets no user agent of its own (eks-networking.md §3.1): a plain SDK v2 one.
AWS_NODE_USER_AGENT = (
    "aws-sdk-go-v2/1.32.7 os/linux lang/go#1.23.4 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.198.1"
)
OPERATOR_USER_AGENT = (
    "aws-cli/2.22.21 md/awscrt#0.23.4 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.12.6 "
    "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe prompt/off"
)
DEFAULT_ERROR_MESSAGES = {
    "Client.DryRunOperation": "Request would have succeeded, but DryRun flag is set.",
    "Client.RequestLimitExceeded": "Request limit exceeded.",
    "Client.UnauthorizedOperation": "You are not authorized to perform this operation.",
    "Client.InsufficientFreeAddressesInSubnet": (
        "The specified subnet does not have enough free addresses to satisfy the request."
    ),
}
LOOKUP_ATTRIBUTE_KEYS = (
    "EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName",
    "EventSource", "AccessKeyId",
)
MAX_RESULTS = 50
RETENTION = timedelta(days=90)
_READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Lookup")


@dataclass(frozen=True)
class Actor:
    """Who made a call, as CloudTrail records it (`userIdentity`, `userAgent`, source IP)."""

    identity_type: str  # "AssumedRole" | "IAMUser"
    arn: str
    principal_id: str
    account_id: str
    access_key_id: str
    username: str  # LookupEvents `Username`: the session name for assumed roles
    user_agent: str
    source_ip: str
    role_arn: str = ""  # the session issuer of an assumed role

    def user_identity(self, time: datetime) -> dict[str, Any]:
        ident: dict[str, Any] = {
            "type": self.identity_type,
            "principalId": self.principal_id,
            "arn": self.arn,
            "accountId": self.account_id,
            "accessKeyId": self.access_key_id,
        }
        if self.identity_type == "IAMUser":
            ident["userName"] = self.username
        if self.role_arn:
            ident["sessionContext"] = {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": self.principal_id.split(":", 1)[0],
                    "arn": self.role_arn,
                    "accountId": self.account_id,
                    "userName": self.role_arn.rsplit("/", 1)[-1],
                },
                "attributes": {
                    "creationDate": _iso(time - timedelta(minutes=7)),
                    "mfaAuthenticated": "false",
                },
            }
        return ident


def _key_id(prefix: str, *seed: str) -> str:
    """A stable AWS-looking id (`ASIA…`, `AROA…`) derived from `seed`."""
    digest = hashlib.sha1("/".join(seed).encode()).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return prefix + "".join(alphabet[b % 32] for b in digest[:16])


def cluster_role_name(spec: LabSpec) -> str:
    return f"{spec.cluster_name}-cluster-role"


def node_role_name(spec: LabSpec) -> str:
    return f"{spec.cluster_name}-node-role"


def resource_controller_actor(spec: LabSpec, account_id: str = LAB_ACCOUNT_ID) -> Actor:
    """The VPC resource controller: the cluster role assumed with its fixed session name."""
    role = cluster_role_name(spec)
    role_id = _key_id("AROA", account_id, role)
    return Actor(
        identity_type="AssumedRole",
        arn=f"arn:aws:sts::{account_id}:assumed-role/{role}/{RC_SESSION_NAME}",
        principal_id=f"{role_id}:{RC_SESSION_NAME}",
        account_id=account_id,
        access_key_id=_key_id("ASIA", account_id, role, RC_SESSION_NAME),
        username=RC_SESSION_NAME,
        user_agent=RC_USER_AGENT,
        source_ip="203.0.113.25",  # the EKS control plane's egress (TEST-NET-3 in the lab)
        role_arn=f"arn:aws:iam::{account_id}:role/{role}",
    )


def aws_node_actor(spec: LabSpec, node: NodeSpec, account_id: str = LAB_ACCOUNT_ID) -> Actor:
    """aws-node (ipamd) on `node`: the node instance role, session named by the instance id."""
    role = node_role_name(spec)
    session = node.instance_id or node.name
    return Actor(
        identity_type="AssumedRole",
        arn=f"arn:aws:sts::{account_id}:assumed-role/{role}/{session}",
        principal_id=f"{_key_id('AROA', account_id, role)}:{session}",
        account_id=account_id,
        access_key_id=_key_id("ASIA", account_id, role, session),
        username=session,
        user_agent=AWS_NODE_USER_AGENT,
        source_ip=node.ip,  # through the VPC's EC2 endpoint, so the node's private IP
        role_arn=f"arn:aws:iam::{account_id}:role/{role}",
    )


def operator_actor(account_id: str = LAB_ACCOUNT_ID, user: str = "sre-oncall") -> Actor:
    """A human with the AWS CLI: the kind of actor that sends DryRun probes."""
    return Actor(
        identity_type="IAMUser",
        arn=f"arn:aws:iam::{account_id}:user/{user}",
        principal_id=_key_id("AIDA", account_id, user),
        account_id=account_id,
        access_key_id=_key_id("AKIA", account_id, user),
        username=user,
        user_agent=OPERATOR_USER_AGENT,
        source_ip="198.51.100.77",
    )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"event time {t!r} must be timezone-aware")
    return t.astimezone(UTC)


def cloudtrail_event(
    name: str,
    *,
    time: datetime,
    actor: Actor,
    error_code: str | None = None,
    error_message: str | None = None,
    user_agent: str | None = None,
    request_parameters: Mapping[str, Any] | None = None,
    response_elements: Mapping[str, Any] | None = None,
    resources: Iterable[tuple[str, str]] = (),
    read_only: bool | None = None,
    region: str = "us-west-2",
    event_source: str = EC2_SOURCE,
) -> dict[str, Any]:
    """One management event in the LookupEvents output shape.

    `resources` are (ResourceType, ResourceName) pairs, e.g. (ENI_RESOURCE, "eni-…").
    `error_code` uses CloudTrail's EC2 form (`Client.RequestLimitExceeded`,
    `Client.DryRunOperation`); the message defaults to EC2's text for known codes. A failed call
    has no `responseElements`. `read_only` defaults from the name (Describe*/Get*/List*).
    """
    time = _aware(time).replace(microsecond=0)
    if read_only is None:
        read_only = name.startswith(_READ_ONLY_PREFIXES)
    event_id = str(uuid.uuid4())
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": actor.user_identity(time),
        "eventTime": _iso(time),
        "eventSource": event_source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": actor.source_ip,
        "userAgent": user_agent or actor.user_agent,
    }
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message or DEFAULT_ERROR_MESSAGES.get(error_code, error_code)
    record["requestParameters"] = dict(request_parameters) if request_parameters is not None else None
    record["responseElements"] = (
        dict(response_elements) if response_elements is not None and not error_code else None
    )
    service_host = f"{event_source.split('.', 1)[0]}.{region}.amazonaws.com"
    record.update({
        "requestID": str(uuid.uuid4()),
        "eventID": event_id,
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": actor.account_id,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": service_host,
        },
    })
    return {
        "EventId": event_id,
        "EventName": name,
        "ReadOnly": "true" if read_only else "false",
        "AccessKeyId": actor.access_key_id,
        "EventTime": time,
        "EventSource": event_source,
        "Username": actor.username,
        "Resources": [{"ResourceType": rt, "ResourceName": rn} for rt, rn in resources],
        "CloudTrailEvent": json.dumps(record, separators=(",", ":")),
    }


# -- the store -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Stored:
    time: datetime
    region: str
    event: dict[str, Any]


_lock = threading.Lock()
_events: list[_Stored] = []


def add_cloudtrail_events(events: Iterable[Mapping[str, Any]]) -> None:
    """Make `events` (from `cloudtrail_event`) visible to LookupEvents in their region."""
    stored = []
    for ev in events:
        missing = {"EventId", "EventName", "EventTime", "EventSource", "CloudTrailEvent"} - set(ev)
        if missing:
            raise ValueError(f"CloudTrail event lacks {sorted(missing)}: {ev!r}")
        region = json.loads(ev["CloudTrailEvent"]).get("awsRegion", "")
        stored.append(_Stored(_aware(ev["EventTime"]), region, dict(ev)))
    with _lock:
        _events.extend(stored)


def clear_cloudtrail_events(predicate: Callable[[dict[str, Any]], bool] | None = None) -> int:
    """Remove the events `predicate` selects (all when None); returns how many went."""
    with _lock:
        keep = [s for s in _events if predicate is not None and not predicate(s.event)]
        removed = len(_events) - len(keep)
        _events[:] = keep
    return removed


def cloudtrail_events() -> list[dict[str, Any]]:
    """A snapshot of every held event, newest first (for status output and bundles)."""
    with _lock:
        stored = list(_events)
    return [dict(s.event) for s in sorted(stored, key=_order)]


# -- LookupEvents ----------------------------------------------------------------------------

class LookupEventsError(Exception):
    """A LookupEvents client error; `code` is the CloudTrail exception name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _order(s: _Stored) -> tuple[float, str]:
    # newest first, as CloudTrail answers; the event id breaks ties so pages are stable
    return (-s.time.timestamp(), s.event["EventId"])


def _timestamp(value: Any, name: str) -> datetime:
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, UTC)
        return _aware(datetime.fromisoformat(str(value)))
    except (ValueError, OverflowError, OSError) as exc:
        raise LookupEventsError("InvalidTimeRangeException", f"Invalid {name}: {value!r}") from exc


def _matches(ev: Mapping[str, Any], key: str, value: str) -> bool:
    if key == "ResourceType":
        return any(r.get("ResourceType") == value for r in ev.get("Resources", []))
    if key == "ResourceName":
        return any(r.get("ResourceName") == value for r in ev.get("Resources", []))
    if key == "ReadOnly":
        return ev.get("ReadOnly", "false") == value.lower()
    return ev.get(key) == value


def _token(cursor: _Stored, query: str) -> str:
    raw = json.dumps({"t": cursor.time.timestamp(), "id": cursor.event["EventId"], "q": query})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _untoken(token: str, query: str) -> tuple[float, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["q"] != query:
            raise ValueError("token belongs to other parameters")
        return float(data["t"]), str(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        # AWS: "NextToken … must be used with the same parameters" (eks-networking.md §3.3)
        raise LookupEventsError("InvalidNextTokenException", "Invalid NextToken.") from exc


def lookup_events(params: Mapping[str, Any], region: str) -> dict[str, Any]:
    """Answer a LookupEvents request (`params` as the JSON body) for `region`.

    Honours one LookupAttribute (more, or an unknown key, is InvalidLookupAttributesException),
    inclusive StartTime/EndTime, the 90-day window, MaxResults 1..50 (default 50) and NextToken
    pagination. EventTime is returned as epoch seconds, as the JSON protocol carries timestamps.
    """
    attrs = params.get("LookupAttributes") or []
    if len(attrs) > 1:
        raise LookupEventsError(
            "InvalidLookupAttributesException", "You can specify only one lookup attribute."
        )
    category = params.get("EventCategory")
    if category is not None and category != "insight":
        raise LookupEventsError(
            "InvalidEventCategoryException", f"Invalid EventCategory {category!r}; only 'insight'."
        )
    for attr in attrs:
        key = attr.get("AttributeKey")
        if key not in LOOKUP_ATTRIBUTE_KEYS or not attr.get("AttributeValue"):
            raise LookupEventsError(
                "InvalidLookupAttributesException", f"Invalid lookup attribute {attr!r}."
            )
    max_results = params.get("MaxResults", MAX_RESULTS)
    if not isinstance(max_results, int) or not 1 <= max_results <= MAX_RESULTS:
        raise LookupEventsError(
            "InvalidMaxResultsException", f"MaxResults must be between 1 and {MAX_RESULTS}."
        )
    now = datetime.now(UTC)
    start = _timestamp(params["StartTime"], "StartTime") if params.get("StartTime") is not None else None
    end = _timestamp(params["EndTime"], "EndTime") if params.get("EndTime") is not None else None
    if start and end and start > end:
        raise LookupEventsError("InvalidTimeRangeException", "StartTime must be before EndTime.")
    query = hashlib.sha256(json.dumps(
        [attrs, params.get("StartTime"), params.get("EndTime"), category], sort_keys=True,
        default=str,
    ).encode()).hexdigest()[:16]
    after = _untoken(params["NextToken"], query) if params.get("NextToken") else None

    with _lock:
        stored = list(_events)
    if category == "insight":
        stored = []  # the lab holds management events only
    selected = sorted(
        (s for s in stored
         if s.region == region
         and s.time >= now - RETENTION
         and (start is None or s.time >= start)
         and (end is None or s.time <= end)
         and all(_matches(s.event, a["AttributeKey"], a["AttributeValue"]) for a in attrs)),
        key=_order,
    )
    if after is not None:
        selected = [s for s in selected if _order(s) > (-after[0], after[1])]
    page, rest = selected[:max_results], selected[max_results:]
    out: dict[str, Any] = {"Events": [_wire(s.event) for s in page]}
    if rest:
        out["NextToken"] = _token(page[-1], query)
    return out


def _wire(ev: Mapping[str, Any]) -> dict[str, Any]:
    wire = dict(ev)
    wire["EventTime"] = _aware(ev["EventTime"]).timestamp()
    return wire


# -- the lab's history -----------------------------------------------------------------------

def _items(values: Iterable[Any]) -> dict[str, list[Any]]:
    return {"items": list(values)}


def _tag_items(tags: Mapping[str, str]) -> dict[str, list[dict[str, str]]]:
    return _items({"key": k, "value": v} for k, v in tags.items())


def lab_history(
    spec: LabSpec,
    *,
    now: datetime,
    account_id: str = LAB_ACCOUNT_ID,
    enis: Mapping[str, Mapping[str, Any]] | None = None,
    associations: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The ENI history a healthy cluster like `spec` leaves in CloudTrail (vpc-cni only).

    Per node, ~3 h ago: aws-node's AssignPrivateIpAddresses for the pod IPs; the RC's trunk
    CreateNetworkInterface, CreateNetworkInterfacePermission, AttachNetworkInterface and
    CreateTags; per SGFP pod the RC's branch CreateNetworkInterface + AssociateTrunkInterface.
    The RC's leaked-ENI cleaner DescribeNetworkInterfaces every 30 min (read-only), and ~40 min
    ago an operator's DryRun probes that fail with `Client.DryRunOperation` (not errors).
    Ids come from `spec` (filled by the seed); tags, groups and attachment ids from `enis`
    (DescribeNetworkInterfaces records by id), association ids from `associations` (branch id ->
    trunk association id), so the history agrees with what EC2 describes.
    """
    if spec.flavor != "vpc-cni":
        return []
    enis = enis or {}
    associations = associations or {}

    def tags_of(eni_id: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in enis.get(eni_id, {}).get("TagSet", [])}

    def groups_of(eni_id: str) -> list[str]:
        return [g["GroupId"] for g in enis.get(eni_id, {}).get("Groups", [])]
    region = spec.region
    rc = resource_controller_actor(spec, account_id)
    events: list[dict[str, Any]] = []

    def add(name: str, t: datetime, actor: Actor, **kw: Any) -> None:
        events.append(cloudtrail_event(name, time=t, actor=actor, region=region, **kw))

    start = (now - timedelta(hours=3)).replace(microsecond=0)
    for node in spec.nodes:
        launched = start + timedelta(seconds=45 * node.index)
        node_actor = aws_node_actor(spec, node, account_id)
        secondary = [p.ip for p in spec.pods_on(node.name) if not p.host_network and not p.sgfp]
        if secondary and node.primary_eni_id:
            add("AssignPrivateIpAddresses", launched + timedelta(seconds=40), node_actor,
                request_parameters={"networkInterfaceId": node.primary_eni_id,
                                    "privateIpAddressesSet": {},
                                    "secondaryPrivateIpAddressCount": len(secondary)},
                response_elements={"requestId": str(uuid.uuid4()), "_return": True,
                                   "networkInterfaceId": node.primary_eni_id,
                                   "assignedPrivateIpAddressesSet": {
                                       "assignedPrivateIpAddressSetType": [
                                           {"privateIpAddress": ip} for ip in secondary]}},
                resources=[(ENI_RESOURCE, node.primary_eni_id)])
        if not (node.trunk and node.trunk_eni_id):
            continue
        trunk = node.trunk_eni_id
        tags = tags_of(trunk)
        node_tag = {k: v for k, v in tags.items() if k == "node.k8s.amazonaws.com/instance_id"}
        create_tags = {k: v for k, v in tags.items() if k not in node_tag}
        t = launched + timedelta(seconds=70)
        add("CreateNetworkInterface", t, rc,
            request_parameters={"subnetId": spec.subnet_id, "description": "aws-k8s-trunk-eni",
                                "groupSet": _items({"groupId": g} for g in groups_of(trunk)),
                                "privateIpAddressesSet": {}, "interfaceType": "trunk",
                                "tagSpecificationSet": _items([{
                                    "resourceType": "network-interface",
                                    "tags": [{"key": k, "value": v} for k, v in create_tags.items()],
                                }])},
            response_elements={"requestId": str(uuid.uuid4()), "networkInterface": {
                "networkInterfaceId": trunk, "subnetId": spec.subnet_id, "vpcId": spec.vpc_id,
                "description": "aws-k8s-trunk-eni", "ownerId": account_id, "status": "pending",
                "macAddress": node.trunk_mac, "interfaceType": "trunk",
                "requesterManaged": False, "sourceDestCheck": True}},
            resources=[(ENI_RESOURCE, trunk)])
        add("CreateNetworkInterfacePermission", t + timedelta(seconds=1), rc,
            request_parameters={"networkInterfaceId": trunk, "permission": "INSTANCE-ATTACH"},
            response_elements={"requestId": str(uuid.uuid4()), "networkInterfacePermission": {
                "networkInterfaceId": trunk, "permission": "INSTANCE-ATTACH",
                "permissionState": {"state": "GRANTED"}}},
            resources=[(ENI_RESOURCE, trunk)])
        add("AttachNetworkInterface", t + timedelta(seconds=2), rc,
            request_parameters={"networkInterfaceId": trunk, "instanceId": node.instance_id,
                                "deviceIndex": 1},
            response_elements={"requestId": str(uuid.uuid4()),
                               "attachmentId": enis.get(trunk, {}).get("Attachment", {})
                               .get("AttachmentId", ""),
                               "networkCardIndex": 0},
            resources=[(ENI_RESOURCE, trunk), (INSTANCE_RESOURCE, node.instance_id)])
        if node_tag:
            add("CreateTags", t + timedelta(seconds=3), rc,
                request_parameters={"resourcesSet": _items([{"resourceId": trunk}]),
                                    "tagSet": _tag_items(node_tag)},
                response_elements={"requestId": str(uuid.uuid4()), "_return": True},
                resources=[(ENI_RESOURCE, trunk)])
        branch_pods = [p for p in spec.pods_on(node.name) if p.sgfp and p.branch_eni_id]
        for k, pod in enumerate(branch_pods):
            tb = launched + timedelta(seconds=300 + 5 * k)
            add("CreateNetworkInterface", tb, rc,
                request_parameters={"subnetId": spec.subnet_id, "description": "aws-k8s-branch-eni",
                                    "groupSet": _items({"groupId": g}
                                                       for g in groups_of(pod.branch_eni_id)),
                                    "privateIpAddressesSet": {}, "interfaceType": "branch",
                                    "tagSpecificationSet": _items([{
                                        "resourceType": "network-interface",
                                        "tags": [{"key": k2, "value": v} for k2, v in
                                                 tags_of(pod.branch_eni_id).items()],
                                    }])},
                response_elements={"requestId": str(uuid.uuid4()), "networkInterface": {
                    "networkInterfaceId": pod.branch_eni_id, "subnetId": spec.subnet_id,
                    "vpcId": spec.vpc_id, "description": "aws-k8s-branch-eni",
                    "ownerId": account_id, "status": "pending", "macAddress": pod.branch_mac,
                    "privateIpAddress": pod.ip, "interfaceType": "branch",
                    "requesterManaged": False, "sourceDestCheck": True}},
                resources=[(ENI_RESOURCE, pod.branch_eni_id)])
            # Newer EC2 APIs log their parameters wrapped in "<Operation>Request" [inferred]
            assoc = {"AssociationId": associations.get(pod.branch_eni_id, ""),
                     "BranchInterfaceId": pod.branch_eni_id, "TrunkInterfaceId": trunk,
                     "InterfaceProtocol": "VLAN", "VlanId": pod.vlan_id}
            add("AssociateTrunkInterface", tb + timedelta(seconds=1), rc,
                request_parameters={"AssociateTrunkInterfaceRequest": {
                    "BranchInterfaceId": pod.branch_eni_id, "TrunkInterfaceId": trunk,
                    "VlanId": pod.vlan_id, "ClientToken": str(uuid.uuid4())}},
                response_elements={"AssociateTrunkInterfaceResponse": {
                    "interfaceAssociation": assoc, "requestId": str(uuid.uuid4())}},
                resources=[(ENI_RESOURCE, pod.branch_eni_id), (ENI_RESOURCE, trunk)])

    # the RC's cluster-wide leaked-ENI cleaner (eks-networking.md §1.7), every 30 min
    cleaner_filter = _items([
        {"name": "tag:eks:eni:owner",
         "valueSet": _items([{"value": "eks-vpc-resource-controller"}, {"value": "amazon-vpc-cni"}])},
        {"name": "status", "valueSet": _items([{"value": "available"}])},
        {"name": "vpc-id", "valueSet": _items([{"value": spec.vpc_id}])},
    ])
    t = start + timedelta(minutes=10)
    while t < now:
        add("DescribeNetworkInterfaces", t, rc,
            request_parameters={"filterSet": cleaner_filter, "maxResults": 1000})
        t += timedelta(minutes=30)

    # an operator checking permissions with DryRun: failures CloudTrail records, but no errors
    op = operator_actor(account_id)
    probe = (now - timedelta(minutes=40)).replace(microsecond=0)
    first = spec.nodes[0]
    add("CreateNetworkInterface", probe, op, error_code="Client.DryRunOperation",
        request_parameters={"subnetId": spec.subnet_id, "description": "permission check",
                            "dryRun": True})
    add("AttachNetworkInterface", probe + timedelta(seconds=20), op,
        error_code="Client.DryRunOperation",
        request_parameters={"networkInterfaceId": first.trunk_eni_id or first.primary_eni_id,
                            "instanceId": first.instance_id, "deviceIndex": 2, "dryRun": True})
    add("AssignPrivateIpAddresses", probe + timedelta(seconds=45), op,
        error_code="Client.DryRunOperation",
        request_parameters={"networkInterfaceId": first.primary_eni_id,
                            "secondaryPrivateIpAddressCount": 1, "dryRun": True})
    return events

