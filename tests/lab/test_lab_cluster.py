"""The lab as a cluster: its Kubernetes API (official client and real kubectl), pods created
through it, its AWS (plain boto3), the pod processes the product resolves, and the pods' DNS
configuration — one shared lab per flavour.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from netconform.runners.local import runner_for
from tests.conftest import requires_root
from tests.lab.conftest import API_TIMEOUT, CLI_TIMEOUT, FLAVORS, RunningLab, netns_inode, netns_path, run_probe

pytestmark = [requires_root, pytest.mark.lab]

requires_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                      reason="kubectl is not installed (the API is still tested with the official client)")
NO_CRICTL = "/nonexistent/crictl"  # force the cgroup method even on a machine that has crictl
DEBUG_LABELS = {"app.kubernetes.io/name": "netconform-lab-test"}


@pytest.fixture(scope="module", params=FLAVORS)
def flab(request, lab) -> RunningLab:
    return lab(request.param)


@pytest.fixture(scope="module")
def vpc_lab(lab) -> RunningLab:
    return lab("vpc-cni")


def key(p) -> str:
    """ns/name of a pod from the API (model) or from status (dict)."""
    if isinstance(p, dict):
        return f"{p['namespace']}/{p['name']}"
    return f"{p.metadata.namespace}/{p.metadata.name}"


def pod_identity(pid: int) -> tuple[int, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else (pid, int(fields[19]))


def gone(identity: tuple[int, int], within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while pod_identity(identity[0]) == identity:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- label selectors, evaluated independently of the lab's implementation -----------------------
def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            k, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = labels.get(k) in values if op == "in" else labels.get(k) not in values
        elif m := re.fullmatch(r"([\w./-]+)\s*!=\s*([\w./-]*)", term):
            ok = labels.get(m.group(1)) != m.group(2)
        elif m := re.fullmatch(r"([\w./-]+)\s*==?\s*([\w./-]*)", term):
            ok = labels.get(m.group(1)) == m.group(2)
        elif m := re.fullmatch(r"!([\w./-]+)", term):
            ok = m.group(1) not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


SELECTORS = ["app=web", "app==web", "k8s-app=kube-dns", "app in (web,db)", "app notin (web)", "app!=web",
             "app", "!app", "app=web,pod-template-hash", "app=no-such-app"]


def test_client_lists_pods_by_label_selector(flab):
    core = flab.core()
    labels = {p.key: p.labels for p in flab.spec().pods}
    assert set(labels) == {key(p) for p in flab.status["pods"]}
    sizes = {}
    for sel in SELECTORS:
        want = {k for k, lab_labels in labels.items() if selector_matches(sel, lab_labels)}
        got = {key(p) for p in core.list_pod_for_all_namespaces(label_selector=sel, _request_timeout=API_TIMEOUT).items}
        assert got == want, f"label selector {sel!r}"
        sizes[sel] = len(want)
    # the selectors really select: none is "everything", the impossible one is nothing
    assert 0 < sizes["app=web"] < len(labels) and sizes["app=no-such-app"] == 0
    assert sizes["!app"] + sizes["app"] == len(labels)
    in_ns = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns",
                                     _request_timeout=API_TIMEOUT).items
    assert {key(p) for p in in_ns} == {key(p) for p in flab.coredns_pods} and len(in_ns) == 2


def test_client_lists_pods_by_node_field_selector(flab):
    core = flab.core()
    everything = {key(p) for p in flab.status["pods"]}
    for node in flab.status["nodes"]:
        want = {key(p) for p in flab.status["pods"] if p["node"] == node["name"]}
        assert want and want != everything
        got = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node['name']}",
                                               _request_timeout=API_TIMEOUT)
        assert {key(p) for p in got.items} == want, node["name"]
        assert all(p.spec.node_name == node["name"] for p in got.items)
        both = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node['name']}",
                                                label_selector="app=web", _request_timeout=API_TIMEOUT).items
        assert {key(p) for p in both} == {key(p) for p in flab.web_pods if p["node"] == node["name"]}
        other = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName!={node['name']}",
                                                 _request_timeout=API_TIMEOUT).items
        assert {key(p) for p in other} == everything - want
    none = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=no-such-node", _request_timeout=API_TIMEOUT)
    assert none.items == []


# -- kubectl ---------------------------------------------------------------------------------------
def _table(text: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, sliced by the header's column positions."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[s:e].strip() for s, e in zip(starts, starts[1:] + [None], strict=True)]
    return [{n: ln[s:e].strip() for n, s, e in zip(names, starts, starts[1:] + [None], strict=True)} for ln in lines[1:]]


@requires_kubectl
def test_kubectl_get_wide_labels_and_field_selectors(flab):
    r = flab.kubectl("get", "pods", "-A", "-o", "wide")
    assert r.returncode == 0, r.stderr
    rows = {f"{row['NAMESPACE']}/{row['NAME']}": row for row in _table(r.stdout)}
    assert set(rows) == {key(p) for p in flab.status["pods"]}
    for p in flab.status["pods"]:
        row = rows[key(p)]
        assert (row["IP"], row["NODE"], row["STATUS"], row["READY"]) == (p["ip"], p["node"], "Running", "1/1")
        assert re.fullmatch(r"\d+[smhd]\S*", row["AGE"]), f"AGE {row['AGE']!r}: creation time in the future?"

    r = flab.kubectl("get", "pods", "-n", "default", "-l", "app=web", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(f"pod/{p['name']}" for p in flab.web_pods)

    node = flab.status["nodes"][-1]["name"]
    r = flab.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", "-o", "json")
    assert r.returncode == 0, r.stderr
    got = {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in json.loads(r.stdout)["items"]}
    assert got == {key(p) for p in flab.status["pods"] if p["node"] == node}


@requires_kubectl
def test_kubectl_describe_pod(flab):
    pod = flab.pod("shop/db-0")
    node = flab.node(pod["node"])
    r = flab.kubectl("describe", "pod", "-n", "shop", "db-0")
    assert r.returncode == 0, r.stderr
    fields = dict(re.findall(r"^([A-Z][\w ]*?):\s+(.*)$", r.stdout, re.M))
    assert fields["Name"] == "db-0" and fields["Namespace"] == "shop"
    assert fields["Node"] == f"{node['name']}/{node['ip']}"
    assert fields["IP"] == pod["ip"] and fields["Status"] == "Running"
    assert re.search(r"^Events:\n(.*\n)*.*Scheduled\s.*Successfully assigned shop/db-0", r.stdout, re.M), r.stdout


@requires_kubectl
@pytest.mark.parametrize("which", ["first-node", "last-node"])
def test_kubectl_exec_runs_in_the_pods_netns(flab, which):
    pods = flab.pods()
    pod = pods[0] if which == "first-node" else next(p for p in reversed(pods) if p["node"] == flab.node(-1)["name"])
    node = flab.node(pod["node"])
    ns, name = pod["namespace"], pod["name"]
    r = flab.kubectl("exec", "-n", ns, name, "--", "ip", "-br", "addr")
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^eth0\S*\s+UP\s+{re.escape(pod['ip'])}/", r.stdout, re.M), r.stdout
    assert node["ip"] not in r.stdout  # not the node's namespace
    r = flab.kubectl("exec", "-n", ns, name, "--", "readlink", "/proc/self/ns/net")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"net:[{netns_inode(pod['netns'])}]"
    r = flab.kubectl("exec", "-n", ns, name, "--", "sh", "-c", "echo to-stderr >&2; exit 7")
    assert r.returncode == 7, (r.returncode, r.stderr)
    assert "to-stderr" in r.stderr


# -- pods created through the API -----------------------------------------------------------------
def _debug_pod(name: str, *, node: str | None, host_network: bool) -> dict:
    spec = {"containers": [{"name": "debug", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                            "command": ["sleep", "3600"]}],
            "hostNetwork": host_network, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}], "activeDeadlineSeconds": 600}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                           "labels": dict(DEBUG_LABELS)}, "spec": spec}


def _wait_running(core, name: str) -> object:
    deadline = time.monotonic() + CLI_TIMEOUT
    while True:
        pod = core.read_namespaced_pod(name, "default", _request_timeout=API_TIMEOUT)
        if pod.status.phase == "Running":
            return pod
        assert time.monotonic() < deadline, f"pod {name} stuck in {pod.status.phase}"
        time.sleep(0.2)


def _delete_and_wait(core, name: str) -> None:
    from kubernetes.client.rest import ApiException

    try:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0, _request_timeout=API_TIMEOUT)
    except ApiException as e:
        if e.status != 404:
            raise
    deadline = time.monotonic() + CLI_TIMEOUT
    while True:
        try:
            core.read_namespaced_pod(name, "default", _request_timeout=API_TIMEOUT)
        except ApiException as e:
            assert e.status == 404
            return
        assert time.monotonic() < deadline, f"pod {name} not gone {CLI_TIMEOUT:.0f} s after delete"
        time.sleep(0.2)


def _status_pod(lab: RunningLab, name: str) -> dict | None:
    return next((p for p in lab.read_status()["pods"] if (p["namespace"], p["name"]) == ("default", name)), None)


def _exec(core, name: str, command: list[str]) -> tuple[int, str]:
    from kubernetes.stream import stream

    resp = stream(core.connect_get_namespaced_pod_exec, name, "default", command=command, stdout=True,
                  stderr=True, stdin=False, tty=False, _preload_content=False)
    resp.run_forever(timeout=API_TIMEOUT)
    out = resp.read_stdout() if resp.peek_stdout() else ""
    code = resp.returncode
    resp.close()
    return code, out


def test_hostnetwork_debug_pod_lives_in_the_node_netns_and_goes_away(flab):
    from kubernetes.client import ApiClient

    from netconform.pids import PodRef, resolve_pod_pid

    core = flab.core()
    node = flab.node(-1)
    name = f"nc-debug-{os.getpid()}"
    ident = pod = None
    try:
        core.create_namespaced_pod("default", _debug_pod(name, node=node["name"], host_network=True),
                                   _request_timeout=API_TIMEOUT)
        pod = _wait_running(core, name)
        assert (pod.spec.node_name, pod.status.pod_ip, pod.status.host_ip) == (node["name"], node["ip"], node["ip"])
        st = _status_pod(flab, name)
        assert st and st["host_network"] and st["pid"] and st["netns"] == node["netns"]
        ident = pod_identity(st["pid"])
        assert ident is not None
        assert os.stat(f"/proc/{st['pid']}/ns/net").st_ino == netns_inode(node["netns"])
        res = resolve_pod_pid(PodRef.from_api(ApiClient().sanitize_for_serialization(pod)), crictl=NO_CRICTL)
        assert (res.method, res.pid) == ("cgroup", st["pid"]), res.evidence
        listed = core.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/name=netconform-lab-test",
                                                  field_selector=f"spec.nodeName={node['name']}").items
        assert [p.metadata.name for p in listed] == [name]

        code, out = _exec(core, name, ["readlink", "/proc/self/ns/net"])
        assert (code, out.strip()) == (0, f"net:[{netns_inode(node['netns'])}]")
        code, out = _exec(core, name, ["ip", "-br", "addr", "show", "eth0"])
        assert code == 0 and f"{node['ip']}/" in out, out
        code, _ = _exec(core, name, ["sh", "-c", "exit 4"])
        assert code == 4
    finally:
        _delete_and_wait(core, name)
    assert gone(ident), f"the debug pod's process {ident[0]} outlived its deletion"
    assert _status_pod(flab, name) is None
    uid = pod.metadata.uid
    leftover = [str(d) for h in ("pids", "systemd", "unified") for pattern in (f"*{uid}*", f"*{uid.replace('-', '_')}*")
                for d in Path("/sys/fs/cgroup", h).glob(f"nc-{flab.name}*/**/{pattern}")]
    assert leftover == []


def test_pod_created_through_the_api_gets_an_ip_and_pings_pods(flab):
    core = flab.core()
    name = f"nc-net-{os.getpid()}"
    path = ident = None
    try:
        core.create_namespaced_pod("default", _debug_pod(name, node=None, host_network=False),
                                   _request_timeout=API_TIMEOUT)
        pod = _wait_running(core, name)
        node = flab.node(pod.spec.node_name)
        ip = pod.status.pod_ip
        others = {p["ip"] for p in flab.status["pods"]}
        assert ip and ip not in others and ip != node["ip"]
        if flab.flavor == "flannel":
            cidr = core.read_node(node["name"]).spec.pod_cidr
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(cidr), (ip, cidr)
        else:
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(flab.spec().node_subnet)
        st = _status_pod(flab, name)
        assert st and not st["host_network"] and st["ip"] == ip
        ident = pod_identity(st["pid"])
        assert ident and os.stat(f"/proc/{st['pid']}/ns/net").st_ino == netns_inode(st["netns"])
        path = netns_path(st["netns"])

        addrs = run_probe(path, "netinfo:addresses", family="inet")
        assert ip in {a["address"] for a in addrs}
        same = next(p for p in flab.pods() if p["node"] == node["name"])
        far = next(p for p in flab.pods() if p["node"] != node["name"])
        for target in (same, far):
            r = run_probe(path, "icmp:ping", dst=target["ip"], count=2, timeout=10.0)
            assert r["ok"] and r["received"] >= 1, f"new pod {ip} -> {key(target)} {target['ip']}: {r}"
        back = run_probe(far["netns"], "icmp:ping", dst=ip, count=2, timeout=10.0)
        assert back["ok"], f"{key(far)} -> new pod {ip}: {back}"
    finally:
        if path is not None:
            runner_for(path).close()  # our worker must not keep the pod's namespace alive
        _delete_and_wait(core, name)
    assert gone(ident)
    assert not Path(path).exists(), f"{path} outlived the pod"
    assert _status_pod(flab, name) is None


# -- AWS ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ec2(vpc_lab):
    """A plain boto3 EC2 client configured by nothing but the lab's environment."""
    import boto3

    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL_EC2"):
            mp.delenv(k, raising=False)
        for k, v in vpc_lab.env.items():
            mp.setenv(k, v)
        assert os.environ["AWS_ENDPOINT_URL"] == vpc_lab.status["aws_endpoint_url"]
        yield boto3.session.Session().client("ec2")


def test_boto3_finds_trunk_and_branch_enis(vpc_lab, ec2):
    spec = vpc_lab.spec()
    trunks = {n.trunk_eni_id: n for n in spec.nodes if n.trunk}
    assert len(trunks) == len(spec.nodes) >= 2 and all(trunks)
    found = ec2.describe_network_interfaces(Filters=[{"Name": "interface-type", "Values": ["trunk"]}])
    assert {e["NetworkInterfaceId"]: e["Attachment"]["InstanceId"] for e in found["NetworkInterfaces"]} == \
        {eni: n.instance_id for eni, n in trunks.items()}
    assert all(e["InterfaceType"] == "trunk" for e in found["NetworkInterfaces"])

    sgfp = [p for p in spec.pods if p.sgfp]
    assert len(sgfp) >= 2 and {p.node for p in sgfp} == {n.name for n in spec.nodes}
    branch = ec2.describe_network_interfaces(Filters=[{"Name": "interface-type", "Values": ["branch"]}])
    assert {e["NetworkInterfaceId"] for e in branch["NetworkInterfaces"]} == {p.branch_eni_id for p in sgfp}
    assert {vpc_lab.pod(p.key)["branch_eni_id"] for p in sgfp} == {p.branch_eni_id for p in sgfp}

    for trunk, node in trunks.items():
        on_node = ec2.describe_network_interfaces(Filters=[
            {"Name": "tag:vpcresources.k8s.aws/trunk-eni-id", "Values": [trunk]}])["NetworkInterfaces"]
        assert {e["NetworkInterfaceId"] for e in on_node} == {p.branch_eni_id for p in sgfp if p.node == node.name}
    for p in sgfp:
        by_ip = ec2.describe_network_interfaces(Filters=[
            {"Name": "addresses.private-ip-address", "Values": [p.ip]}])["NetworkInterfaces"]
        assert [(e["NetworkInterfaceId"], e["InterfaceType"]) for e in by_ip] == [(p.branch_eni_id, "branch")]
        assert p.ip in {a["PrivateIpAddress"] for a in by_ip[0]["PrivateIpAddresses"]}
    nothing = ec2.describe_network_interfaces(Filters=[
        {"Name": "addresses.private-ip-address", "Values": ["10.0.9.9"]}])["NetworkInterfaces"]
    assert nothing == []


def test_branch_eni_security_groups_are_the_sgp_union(vpc_lab, ec2):
    from kubernetes import client

    api = vpc_lab.api()
    custom = client.CustomObjectsApi(api)
    core = vpc_lab.core()
    sgfp = [p for p in vpc_lab.spec().pods if p.sgfp]
    for p in sgfp:
        pod = core.read_namespaced_pod(p.name, p.namespace, _request_timeout=API_TIMEOUT)
        sgps = custom.list_namespaced_custom_object("vpcresources.k8s.aws", "v1beta1", p.namespace,
                                                    "securitygrouppolicies", _request_timeout=API_TIMEOUT)["items"]
        matching = [s for s in sgps if all((pod.metadata.labels or {}).get(k) == v for k, v in
                                           s["spec"]["podSelector"].get("matchLabels", {}).items())]
        union = {g for s in matching for g in s["spec"]["securityGroups"]["groupIds"]}
        assert len(matching) >= 2 and len(union) >= 2, "the lab should select SGFP pods with two policies"
        eni_annotation = json.loads(pod.metadata.annotations["vpc.amazonaws.com/pod-eni"])
        assert eni_annotation[0]["eniId"] == p.branch_eni_id
        eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[p.branch_eni_id])["NetworkInterfaces"][0]
        assert {g["GroupId"] for g in eni["Groups"]} == union, p.key
        groups = ec2.describe_security_groups(GroupIds=sorted(union))["SecurityGroups"]
        assert {g["GroupName"] for g in groups} == set(p.security_groups)


# -- pod processes and their resolver config ---------------------------------------------------------
def test_resolve_pod_pid_finds_every_pod_by_cgroup_on_both_layouts(flab):
    from kubernetes.client import ApiClient

    from netconform.pids import PodRef, resolve_pod_pid

    core = flab.core()
    api_pods = {key(p): ApiClient().sanitize_for_serialization(p)
                for p in core.list_pod_for_all_namespaces(_request_timeout=API_TIMEOUT).items}
    drivers = {n["name"]: n["cgroup_driver"] for n in flab.status["nodes"]}
    assert set(drivers.values()) == {"cgroupfs", "systemd"}
    seen = set()
    for p in flab.status["pods"]:
        ref = PodRef.from_api(api_pods[key(p)])
        assert ref.uid == p["uid"] and p["container_id"] in ref.container_ids
        res = resolve_pod_pid(ref, crictl=NO_CRICTL)
        assert (res.method, res.pid) == ("cgroup", p["pid"]), (key(p), res.evidence)
        assert os.stat(res.netns_path).st_ino == netns_inode(p["netns"]), key(p)
        cg = Path(f"/proc/{p['pid']}/cgroup").read_text()
        qos = api_pods[key(p)]["status"].get("qosClass", "BestEffort").lower()
        uid, cid = p["uid"], p["container_id"]
        if drivers[p["node"]] == "cgroupfs":
            layout = rf"/nc-{flab.name}/kubepods/{qos}/pod{uid}/{cid}$"
        else:
            u = uid.replace("-", "_")
            layout = (rf"/nc-{flab.name}\.slice/kubepods\.slice/kubepods-{qos}\.slice/kubepods-{qos}-pod{u}\.slice/"
                      rf"cri-containerd-{cid}\.scope$")
        assert re.search(layout, cg, re.M), f"{key(p)} on a {drivers[p['node']]} node:\n{cg}"
        assert any(cid[:13] in e and "cgroup:" in e for e in res.evidence), res.evidence
        seen.add(drivers[p["node"]])
    assert seen == {"cgroupfs", "systemd"}


def test_pod_resolv_conf_is_kubelets(flab):
    from netconform.analysis.resolvconf import parse_resolv_conf

    core = flab.core()
    dns_ip = core.read_namespaced_service("kube-dns", "kube-system", _request_timeout=API_TIMEOUT).spec.cluster_ip
    assert dns_ip == flab.status["dns_service_ip"]
    domain = flab.status["cluster_domain"]
    host_resolv = Path("/etc/resolv.conf").read_text()
    assert dns_ip not in host_resolv, "the lab changed this machine's own resolv.conf"
    for p in flab.pods():
        text = Path(f"/proc/{p['pid']}/root/etc/resolv.conf").read_text()
        conf = parse_resolv_conf(text)
        assert conf.nameservers == [dns_ip], (key(p), text)
        assert conf.search[:3] == [f"{p['namespace']}.svc.{domain}", f"svc.{domain}", domain], (key(p), text)
        assert conf.ndots == 5 and "ndots:5" in conf.options, (key(p), text)
        assert not conf.warnings, (key(p), conf.warnings)
