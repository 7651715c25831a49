"""The lab's AWS: a moto server on loopback, seeded to match the lab cluster.

The lab daemon starts one server and seeds it once the spec is built::

    moto = start_moto()                      # ThreadedMotoServer on 127.0.0.1:<free port>
    seed(spec, moto.url)                     # VPC, subnet, SGs, instances, trunk/branch ENIs,
                                             # CloudTrail history; fills the ids into `spec`
    env = aws_env(moto.url, spec.region)     # what the suite's boto3 needs (AWS_ENDPOINT_URL…)
    ...
    moto.stop()

Product code stays plain boto3. Everything moto 5.2 lacks is filled here, in the daemon's
process, on moto's own classes and models (see `install_gap_fills`): trunk/branch
`InterfaceType`, AssociateTrunkInterface, ENI/instance filters that answer 500 or match only
the primary IP, and CloudTrail LookupEvents (held in `netconform.lab.aws_cloudtrail`). That is
why `seed` must run in the process that called `start_moto`.
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import ipaddress
import json
import logging
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3

from netconform.lab.aws_cloudtrail import (
    ENI_RESOURCE,
    INSTANCE_RESOURCE,
    LAB_ACCOUNT_ID,
    Actor,
    LookupEventsError,
    add_cloudtrail_events,
    aws_node_actor,
    clear_cloudtrail_events,
    cloudtrail_event,
    cloudtrail_events,
    lab_history,
    lookup_events,
    operator_actor,
    resource_controller_actor,
)
from netconform.lab.topology import LabSpec, NodeSpec, PodSpec

__all__ = [
    "ENI_RESOURCE",
    "INSTANCE_RESOURCE",
    "LAB_ACCOUNT_ID",
    "Actor",
    "MotoHandle",
    "add_cloudtrail_events",
    "association_id",
    "aws_env",
    "aws_node_actor",
    "clear_cloudtrail_events",
    "cloudtrail_event",
    "cloudtrail_events",
    "cluster_security_group_name",
    "install_gap_fills",
    "node_group_name",
    "node_image_id",
    "node_security_group_names",
    "operator_actor",
    "resource_controller_actor",
    "seed",
    "start_moto",
]

# Dummy credentials: moto maps any key it did not issue to its default account (LAB_ACCOUNT_ID).
LAB_ACCESS_KEY_ID = "AKIANETCONFORMLAB001"
LAB_SECRET_ACCESS_KEY = "netconform-lab-not-a-secret"
TRUNK_DESCRIPTION = "aws-k8s-trunk-eni"
BRANCH_DESCRIPTION = "aws-k8s-branch-eni"
RC_OWNER = "eks-vpc-resource-controller"
TAG_TRUNK_ID = "vpcresources.k8s.aws/trunk-eni-id"
TAG_VLAN_ID = "vpcresources.k8s.aws/vlan-id"
TAG_NODE_ID = "node.k8s.amazonaws.com/instance_id"
TAG_ENI_OWNER = "eks:eni:owner"
CLUSTER_SG_DESCRIPTION = (
    "EKS created security group applied to ENI that is attached to EKS Control Plane master "
    "nodes, as well as any managed workloads."
)
# Pod security groups the topology uses; any other name gets a generic description.
POD_SG_RULES: dict[str, tuple[str, list[tuple[str, int, int]]]] = {
    "payments-sg": ("shop/payments pods: HTTPS from inside the VPC", [("tcp", 8443, 8443)]),
    "db-clients-sg": ("pods allowed to reach shop/db (PostgreSQL)", []),
}

# -- the server ------------------------------------------------------------------------------

@dataclass
class MotoHandle:
    """A running moto server; `url` is what AWS_ENDPOINT_URL should say."""

    url: str
    host: str
    port: int
    _server: Any = field(repr=False)

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        self._server.stop()


def start_moto(host: str = "127.0.0.1") -> MotoHandle:
    """Start a ThreadedMotoServer on `host`, on a free port, with the lab's gap fills.

    The server thread lives in this process, sharing moto's global backends with `seed` and
    the CloudTrail store; call it from the long-lived lab daemon.
    """
    from moto.server import ThreadedMotoServer

    install_gap_fills()
    # werkzeug logs one INFO line per request; keep only its errors (tracebacks of lab bugs)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    bound_host, port = server.get_host_and_port()
    return MotoHandle(url=f"http://{bound_host}:{port}", host=bound_host, port=port, _server=server)


def aws_env(url: str, region: str) -> dict[str, str]:
    """The environment a boto3 client needs to talk to the lab's AWS at `url`.

    AWS_EC2_METADATA_DISABLED stops botocore from probing IMDS (169.254.169.254), which does not
    exist in the lab and would cost a timeout whenever a credential or region lookup falls
    through.
    """
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ACCESS_KEY_ID": LAB_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LAB_SECRET_ACCESS_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# -- moto's gaps -----------------------------------------------------------------------------

_patch_lock = threading.Lock()
_patched = False
_INTERFACE_TYPES = ("efa", "efa-only", "branch", "trunk")  # EC2 NetworkInterfaceCreationType


def install_gap_fills() -> None:
    """Teach this process's moto what the lab needs (idempotent).

    - CreateNetworkInterface keeps `InterfaceType` (moto stores "interface" for everything, so
      the `interface-type` filter finds no trunk or branch).
    - AssociateTrunkInterface / DisassociateTrunkInterface / DescribeTrunkInterfaceAssociations
      exist; associating marks the branch `in-use`, as EC2 reports it.
    - DescribeNetworkInterfaces filters: `addresses.private-ip-address` / `private-ip-address`
      match secondary IPs too (moto: primary only), `attachment.status`,
      `attachment.device-index`, `attachment.delete-on-termination`, `group-name`, `owner-id`
      work (moto: HTTP 500), and several values of a list-valued filter are ORed as in EC2.
    - DescribeInstances `network-interface.*` filters work (moto: HTTP 500).
    - CloudTrail LookupEvents answers from the lab's event store (moto: HTTP 500).
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        _patch_interface_type()
        _patch_trunk_associations()
        _patch_eni_filters()
        _patch_instance_filters()
        _patch_lookup_events()
        _patched = True


def _patch_interface_type() -> None:
    from moto.ec2.exceptions import InvalidParameterValueError
    from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces

    original = ElasticNetworkInterfaces.create_network_interface

    def create_network_interface(self: Any) -> Any:
        interface_type = self._get_param("InterfaceType")
        if interface_type and interface_type not in _INTERFACE_TYPES:
            raise InvalidParameterValueError(interface_type)
        result = original(self)
        if interface_type:
            result.result["NetworkInterface"].interface_type = interface_type
        return result

    ElasticNetworkInterfaces.create_network_interface = create_network_interface


def _associations(backend: Any) -> dict[str, dict[str, Any]]:
    # held on the regional EC2 backend so it follows moto's account/region split
    if not hasattr(backend, "_lab_trunk_associations"):
        backend._lab_trunk_associations = {}
    return backend._lab_trunk_associations


def _patch_trunk_associations() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError, FilterNotImplementedError
    from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces

    def associate_trunk_interface(self: Any) -> Any:
        branch_id = self._get_param("BranchInterfaceId")
        trunk_id = self._get_param("TrunkInterfaceId")
        vlan_id = self._get_int_param("VlanId")
        gre_key = self._get_int_param("GreKey")
        self.error_on_dryrun()
        branch = self.ec2_backend.get_network_interface(branch_id)
        trunk = self.ec2_backend.get_network_interface(trunk_id)
        if branch.interface_type != "branch":
            raise EC2ClientError("InvalidParameterValue", f"{branch_id} is not a branch interface.")
        if trunk.interface_type != "trunk":
            raise EC2ClientError("InvalidParameterValue", f"{trunk_id} is not a trunk interface.")
        if (vlan_id is None) == (gre_key is None):
            raise EC2ClientError("InvalidParameterCombination", "Specify exactly one of VlanId and GreKey.")
        if vlan_id is not None and not 1 <= vlan_id <= 4094:
            raise EC2ClientError("InvalidParameterValue", f"VlanId {vlan_id} is out of range 1-4094.")
        assocs = _associations(self.ec2_backend)
        for a in assocs.values():
            if a["BranchInterfaceId"] == branch_id:
                raise EC2ClientError("InvalidParameterValue", f"{branch_id} is already associated.")
            if a["TrunkInterfaceId"] == trunk_id and vlan_id is not None and a.get("VlanId") == vlan_id:
                raise EC2ClientError("InvalidParameterValue", f"VlanId {vlan_id} is in use on {trunk_id}.")
        assoc: dict[str, Any] = {
            "AssociationId": association_id(branch_id),
            "BranchInterfaceId": branch_id,
            "TrunkInterfaceId": trunk_id,
            "InterfaceProtocol": "VLAN" if vlan_id is not None else "GRE",
            "Tags": [],
        }
        if vlan_id is not None:
            assoc["VlanId"] = vlan_id
        else:
            assoc["GreKey"] = gre_key
        assocs[assoc["AssociationId"]] = assoc
        branch.status = "in-use"
        return ActionResult({"InterfaceAssociation": assoc, "ClientToken": self._get_param("ClientToken")})

    def disassociate_trunk_interface(self: Any) -> Any:
        assoc_id = self._get_param("AssociationId")
        self.error_on_dryrun()
        assoc = _associations(self.ec2_backend).pop(assoc_id, None)
        if assoc is None:
            raise EC2ClientError("InvalidAssociationID.NotFound", f"The association ID '{assoc_id}' does not exist")
        branch = self.ec2_backend.enis.get(assoc["BranchInterfaceId"])
        if branch is not None:
            branch.status = "available"
        return ActionResult({"Return": True, "ClientToken": self._get_param("ClientToken")})

    def describe_trunk_interface_associations(self: Any) -> Any:
        ids = self._get_param("AssociationIds", [])
        filters = self._filters_from_querystring()
        max_results = self._get_int_param("MaxResults") or 255
        start = int(self._get_param("NextToken") or 0)
        self.error_on_dryrun()
        keys = {"interface-protocol": "InterfaceProtocol", "gre-key": "GreKey"}
        for name in filters:
            if name not in keys:
                raise FilterNotImplementedError(name, "DescribeTrunkInterfaceAssociations")
        enis = self.ec2_backend.enis
        found = [
            a for a in _associations(self.ec2_backend).values()
            # an association dies with either ENI (moto's DeleteNetworkInterface knows nothing of it)
            if a["BranchInterfaceId"] in enis and a["TrunkInterfaceId"] in enis
            and (not ids or a["AssociationId"] in ids)
            and all(str(a.get(keys[n])) in values for n, values in filters.items())
        ]
        page = found[start:start + max_results]
        result: dict[str, Any] = {"InterfaceAssociations": page}
        if start + max_results < len(found):
            result["NextToken"] = str(start + max_results)
        return ActionResult(result)

    ElasticNetworkInterfaces.associate_trunk_interface = associate_trunk_interface
    ElasticNetworkInterfaces.disassociate_trunk_interface = disassociate_trunk_interface
    ElasticNetworkInterfaces.describe_trunk_interface_associations = describe_trunk_interface_associations


def _patch_eni_filters() -> None:
    import moto.ec2.utils as ec2_utils
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    original_value = NetworkInterface.get_filter_value

    def get_filter_value(self: Any, filter_name: str, method_name: str | None = None) -> Any:
        attached = self.attachment_id is not None
        if filter_name in ("addresses.private-ip-address", "private-ip-address"):
            # EC2 matches every private IP of the ENI: how a pod IP finds its node's ENI
            return [a["PrivateIpAddress"] for a in self.private_ip_addresses] or [self.private_ip_address]
        if filter_name == "attachment.status":
            return "attached" if attached else None
        if filter_name == "attachment.device-index":
            return str(self.device_index) if attached else None
        if filter_name == "attachment.delete-on-termination":
            return bool(self.delete_on_termination) if attached else None
        if filter_name == "attachment.instance-owner-id":
            return self.owner_id if attached else None
        if filter_name == "group-name":
            return [g.name for g in self._group_set]
        if filter_name == "owner-id":
            return self.owner_id
        return original_value(self, filter_name, method_name)

    original_match = ec2_utils.is_filter_matching

    def is_filter_matching(obj: Any, filter_name: str, filter_values: Any) -> bool:
        if isinstance(obj, NetworkInterface):
            value = obj.get_filter_value(filter_name)
            if isinstance(value, (list, set, tuple)):
                # EC2 ORs the values of one filter; moto wants a subset/superset instead
                patterns = filter_values if isinstance(filter_values, list) else [filter_values]
                return any(fnmatch.fnmatchcase(str(v), str(p)) for v in value for p in patterns)
        return original_match(obj, filter_name, filter_values)

    NetworkInterface.get_filter_value = get_filter_value
    ec2_utils.is_filter_matching = is_filter_matching  # generic_filter looks it up at call time


def _patch_instance_filters() -> None:
    import moto.ec2.utils as ec2_utils

    original = ec2_utils.passes_filter_dict

    def passes_filter_dict(instance: Any, filter_dict: dict[str, Any]) -> bool:
        nic_filters = {
            k: v for k, v in filter_dict.items()
            if k.startswith("network-interface.") and k not in ec2_utils.filter_dict_attribute_mapping
        }
        rest = {k: v for k, v in filter_dict.items() if k not in nic_filters}
        if not original(instance, rest):
            return False
        nics = list(getattr(instance, "nics", {}).values())
        return all(
            any(ec2_utils.is_filter_matching(eni, name.removeprefix("network-interface."), values)
                for eni in nics)
            for name, values in nic_filters.items()
        )

    ec2_utils.passes_filter_dict = passes_filter_dict  # filter_reservations looks it up at call time


def _patch_lookup_events() -> None:
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.core.exceptions import JsonRESTError

    names = ("LookupAttributes", "StartTime", "EndTime", "EventCategory", "MaxResults", "NextToken")

    def lookup_events_action(self: Any) -> str:
        params = {n: self._get_param(n) for n in names if self._get_param(n) is not None}
        try:
            return json.dumps(lookup_events(params, self.region))
        except LookupEventsError as exc:
            raise JsonRESTError(exc.code, exc.message) from exc

    # moto dispatches an action to the response method of the same snake_case name
    CloudTrailResponse.lookup_events = lookup_events_action


# -- the seed --------------------------------------------------------------------------------

def association_id(branch_eni_id: str) -> str:
    """The trunk association id of a branch: derived from the branch id, as the lab's pod
    `vpc.amazonaws.com/pod-eni` annotation (k8s_objects.pod_eni_annotation) derives it, so
    that EC2 and the annotation agree."""
    return "trunk-assoc-0" + hashlib.sha256(f"{branch_eni_id}/assoc".encode()).hexdigest()[:16]


def node_image_id(spec: LabSpec) -> str:
    """The nodes' AMI, as the lab's Node label `eks.amazonaws.com/nodegroup-image` names it."""
    return "ami-0" + hashlib.sha256(f"{spec.name}/ami".encode()).hexdigest()[:16]


def node_group_name(spec: LabSpec) -> str:
    """The EKS managed node group, as the lab's Node label `eks.amazonaws.com/nodegroup` names it."""
    return f"{spec.cluster_name or spec.name}-ng"


def cluster_security_group_name(spec: LabSpec) -> str:
    """EKS's cluster SG name: `eks-cluster-sg-<cluster>-<number>` (stable per cluster name)."""
    return f"eks-cluster-sg-{spec.cluster_name}-{zlib.crc32(spec.cluster_name.encode()) % 10**10}"


def node_security_group_names(spec: LabSpec) -> list[str]:
    """The SGs on every node's instance (and so on its trunk ENI), by name."""
    node_sg = f"{spec.cluster_name}-node"
    return [cluster_security_group_name(spec), node_sg] if spec.flavor == "vpc-cni" else [node_sg]


@functools.lru_cache(maxsize=8)
def _clients(url: str, region: str) -> tuple[Any, Any]:
    # building an EC2 client loads its ~5 MB model (~0.5 s); reuse it across seeds
    session = boto3.session.Session(
        aws_access_key_id=LAB_ACCESS_KEY_ID, aws_secret_access_key=LAB_SECRET_ACCESS_KEY,
        region_name=region,
    )
    return session.client("ec2", endpoint_url=url), session.client("sts", endpoint_url=url)


def _tag_spec(resource: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def _pod_sg_names(spec: LabSpec) -> list[str]:
    names = [g for p in spec.pods for g in p.security_groups]
    names += [g for sgp in spec.security_group_policies for g in sgp.group_names]
    return list(dict.fromkeys(names))


def _spare_ips(spec: LabSpec) -> Iterator[str]:
    """Free node-subnet IPs from the top down, for ENIs whose IP EC2 would pick (trunks)."""
    net = ipaddress.ip_network(spec.node_subnet)
    used = {n.ip for n in spec.nodes} | {p.ip for p in spec.pods} | {spec.gateway_ip}
    used |= set(spec.apiserver_ips)
    ip = net.broadcast_address - 1
    floor = net.network_address + 4  # EC2 reserves the first four and the last address
    while ip >= floor:
        if str(ip) not in used:
            yield str(ip)
        ip -= 1


def _model(backend: Any, eni_id: str) -> Any:
    eni = backend.enis.get(eni_id)
    if eni is None:
        raise RuntimeError(
            f"ENI {eni_id} exists on the server but not in this process's moto: seed() must run "
            "in the process that called start_moto(), because it fills moto's gaps in-process"
        )
    return eni


def seed(spec: LabSpec, url: str) -> None:
    """Create the AWS side of `spec` on the moto server at `url`; write the ids into `spec`.

    Both flavours: a VPC, the node subnet (us-west-2a style AZ), security groups (`spec.sg_ids`
    maps every name to its id), one instance per node at the node's IP (`instance_id`,
    `primary_eni_id`, primary ENI MAC = the node's eth0 MAC). vpc-cni adds pod IPs as
    secondary IPs of the primary ENI, a trunk ENI per trunk node (`trunk_eni_id`), a branch
    ENI per SGFP pod associated with its VLAN (`branch_eni_id`), and the CloudTrail history of
    all that (see `aws_cloudtrail.lab_history`). Must run in the `start_moto` process.
    """
    install_gap_fills()
    ec2, sts = _clients(url, spec.region)
    account = sts.get_caller_identity()["Account"]
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][spec.region]
    cluster = spec.cluster_name
    owned = {f"kubernetes.io/cluster/{cluster}": "owned"}
    shared = {f"kubernetes.io/cluster/{cluster}": "shared"}

    vpc = ec2.create_vpc(CidrBlock=spec.vpc_cidr,
                         TagSpecifications=_tag_spec("vpc", {"Name": f"{cluster}-vpc", **shared}))
    spec.vpc_id = vpc["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=spec.vpc_id, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=spec.vpc_id, EnableDnsHostnames={"Value": True})
    az = f"{spec.region}a"
    subnet = ec2.create_subnet(
        VpcId=spec.vpc_id, CidrBlock=spec.node_subnet, AvailabilityZone=az,
        TagSpecifications=_tag_spec("subnet", {"Name": f"{cluster}-private-{az}", **shared,
                                               "kubernetes.io/role/internal-elb": "1"}),
    )
    spec.subnet_id = subnet["Subnet"]["SubnetId"]

    spec.sg_ids = _create_security_groups(ec2, spec, owned)
    node_groups = [spec.sg_ids[n] for n in node_security_group_names(spec)]
    for node in spec.nodes:
        _launch_node(ec2, backend, spec, node, node_groups, owned)
    if spec.flavor != "vpc-cni":
        return

    spare = _spare_ips(spec)
    for node in spec.nodes:
        secondary = [p.ip for p in spec.pods_on(node.name) if not p.host_network and not p.sgfp]
        if secondary:
            ec2.assign_private_ip_addresses(NetworkInterfaceId=node.primary_eni_id,
                                            PrivateIpAddresses=secondary)
        if node.trunk:
            _create_trunk(ec2, backend, spec, node, node_groups, next(spare), owned)
            for pod in spec.pods_on(node.name):
                if pod.sgfp:
                    groups = [spec.sg_ids[g] for g in pod.security_groups] or node_groups
                    _create_branch(ec2, backend, spec, node, pod, groups, owned)

    enis = {e["NetworkInterfaceId"]: e for e in ec2.describe_network_interfaces(
        Filters=[{"Name": "vpc-id", "Values": [spec.vpc_id]}])["NetworkInterfaces"]}
    associations = {a["BranchInterfaceId"]: a["AssociationId"] for a in
                    ec2.describe_trunk_interface_associations()["InterfaceAssociations"]}
    add_cloudtrail_events(lab_history(spec, now=datetime.now(UTC), account_id=account,
                                      enis=enis, associations=associations))


def _create_security_groups(ec2: Any, spec: LabSpec, owned: Mapping[str, str]) -> dict[str, str]:
    cluster = spec.cluster_name
    ids: dict[str, str] = {}

    def create(name: str, description: str, tags: Mapping[str, str]) -> str:
        sg = ec2.create_security_group(
            GroupName=name, Description=description, VpcId=spec.vpc_id,
            TagSpecifications=_tag_spec("security-group", {"Name": name, **tags}))
        ids[name] = sg["GroupId"]
        return sg["GroupId"]

    def allow(group: str, proto: str, lo: int, hi: int, *, from_group: str = "", cidr: str = "",
              what: str) -> None:
        perm: dict[str, Any] = {"IpProtocol": proto}
        if proto != "-1":
            perm.update(FromPort=lo, ToPort=hi)
        if from_group:
            perm["UserIdGroupPairs"] = [{"GroupId": from_group, "Description": what}]
        else:
            perm["IpRanges"] = [{"CidrIp": cidr, "Description": what}]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[perm])

    node_sg_name = node_security_group_names(spec)[-1]
    if spec.flavor == "vpc-cni":
        cluster_sg = create(cluster_security_group_name(spec), CLUSTER_SG_DESCRIPTION,
                            {**owned, "aws:eks:cluster-name": cluster})
        allow(cluster_sg, "-1", 0, 0, from_group=cluster_sg, what="EKS: all traffic from itself")
        node_sg = create(node_sg_name, "EKS node shared security group", owned)
        allow(node_sg, "-1", 0, 0, from_group=node_sg, what="node to node, all ports")
        allow(node_sg, "tcp", 443, 443, from_group=cluster_sg, what="control plane to webhooks")
        allow(node_sg, "tcp", 10250, 10250, from_group=cluster_sg, what="control plane to kubelet")
    else:
        node_sg = create(node_sg_name, "kubeadm nodes: kubelet, apiserver and flannel VXLAN", owned)
        allow(node_sg, "udp", 8472, 8472, from_group=node_sg, what="flannel VXLAN between nodes")
        allow(node_sg, "tcp", 10250, 10250, from_group=node_sg, what="kubelet")
        allow(node_sg, "tcp", 6443, 6443, from_group=node_sg, what="kube-apiserver")
    for name in _pod_sg_names(spec):
        description, ports = POD_SG_RULES.get(
            name, (f"pods selected by a SecurityGroupPolicy ({name})", []))
        group = create(name, description, owned)
        for proto, lo, hi in ports:
            allow(group, proto, lo, hi, cidr=spec.vpc_cidr, what=description)
    return ids


def _launch_node(ec2: Any, backend: Any, spec: LabSpec, node: NodeSpec, groups: list[str],
                 owned: Mapping[str, str]) -> None:
    cluster = spec.cluster_name
    if spec.flavor == "vpc-cni":
        group = node_group_name(spec)
        tags = {"Name": f"{group}-Node", **owned, "eks:cluster-name": cluster,
                "eks:nodegroup-name": group, "k8s.io/cluster-autoscaler/enabled": "true",
                f"k8s.io/cluster-autoscaler/{cluster}": "owned"}
        instance_type = "m5.large"  # trunking compatible: 9 branch ENIs (RC limits.go)
    else:
        tags = {"Name": node.name, **owned}
        instance_type = "t3.medium"
    reservation = ec2.run_instances(
        ImageId=node_image_id(spec), InstanceType=instance_type, MinCount=1, MaxCount=1,
        SubnetId=spec.subnet_id, PrivateIpAddress=node.ip, SecurityGroupIds=groups,
        TagSpecifications=_tag_spec("instance", tags),
    )
    instance = reservation["Instances"][0]
    node.instance_id = instance["InstanceId"]
    node.primary_eni_id = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    # EC2 chooses MACs; the lab's node already has one, and the two must agree
    _model(backend, node.primary_eni_id).mac_address = node.eth0_mac


def _create_trunk(ec2: Any, backend: Any, spec: LabSpec, node: NodeSpec, groups: list[str],
                  ip: str, owned: Mapping[str, str]) -> None:
    eni = ec2.create_network_interface(
        SubnetId=spec.subnet_id, Description=TRUNK_DESCRIPTION, Groups=groups,
        PrivateIpAddress=ip, InterfaceType="trunk",
        TagSpecifications=_tag_spec("network-interface", {TAG_ENI_OWNER: RC_OWNER, **owned}),
    )["NetworkInterface"]
    node.trunk_eni_id = eni["NetworkInterfaceId"]
    _model(backend, node.trunk_eni_id).mac_address = node.trunk_mac
    # device 0 is the primary ENI; the RC attaches the trunk at the next free index
    ec2.attach_network_interface(NetworkInterfaceId=node.trunk_eni_id, InstanceId=node.instance_id,
                                 DeviceIndex=1)
    ec2.create_tags(Resources=[node.trunk_eni_id],
                    Tags=[{"Key": TAG_NODE_ID, "Value": node.instance_id}])


def _create_branch(ec2: Any, backend: Any, spec: LabSpec, node: NodeSpec, pod: PodSpec,
                   groups: list[str], owned: Mapping[str, str]) -> None:
    tags = {TAG_TRUNK_ID: node.trunk_eni_id, TAG_VLAN_ID: str(pod.vlan_id),
            TAG_NODE_ID: node.instance_id, TAG_ENI_OWNER: RC_OWNER, **owned}
    eni = ec2.create_network_interface(
        SubnetId=spec.subnet_id, Description=BRANCH_DESCRIPTION, Groups=groups,
        PrivateIpAddress=pod.ip, InterfaceType="branch",
        TagSpecifications=_tag_spec("network-interface", tags),
    )["NetworkInterface"]
    pod.branch_eni_id = eni["NetworkInterfaceId"]
    _model(backend, pod.branch_eni_id).mac_address = pod.branch_mac
    ec2.associate_trunk_interface(BranchInterfaceId=pod.branch_eni_id,
                                  TrunkInterfaceId=node.trunk_eni_id, VlanId=pod.vlan_id)
