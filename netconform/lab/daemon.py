"""The lab process: builds a lab, keeps its servers running, applies faults, tears it down.

Started by `netconform-lab up` as `python -m netconform.lab.daemon --state-dir DIR` in its own
session. It owns the Kubernetes API server and the moto server (127.0.0.1), the servers inside
the lab's namespaces and the pods' processes. SIGTERM/SIGINT (or a build error) tears
everything down; `cleanup.sweep` then removes whatever a crash may have left.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from . import aws, kubeproxy
from .apiserver import ApiError, ApiServer, ObjectStore, write_kubeconfig
from .dataplane import Dataplane
from .dnsserver import cluster_records
from .faults import FAULTS, FaultError
from .k8s_objects import objects_from_spec, pod_object
from .netservers import NetServers
from .pki import CertificateAuthority
from .podproc import PodProcesses
from .state import LabPaths, write_json
from .topology import KUBE_PROXY_HEALTHZ_PORT, LabSpec, PodSpec, build_spec, pod_netns_name, wire_pod

log = logging.getLogger("netconform.lab")


class BuildInterrupted(Exception):
    """SIGTERM/SIGINT arrived while the lab was being built: stop building, tear down."""


class Lab:
    """One running lab. Implements the `faults.LabRuntime` protocol."""

    def __init__(self, paths: LabPaths, spec: LabSpec):
        self.paths = paths
        self.spec = spec
        self.dataplane = Dataplane(spec)
        self.pods = PodProcesses(spec, paths.root)
        self.servers: NetServers | None = None
        self.api: ApiServer | None = None
        self.store: ObjectStore | None = None
        self.moto = None
        self.ca: CertificateAuthority | None = None
        self.token = secrets.token_urlsafe(32)
        self.faults: list[dict] = []
        self.lock = threading.RLock()
        self.started = dt.datetime.now(dt.timezone.utc)
        self.api_url = ""
        self.aws_url = ""

    # -- build -------------------------------------------------------------------------------
    def build(self, stop: threading.Event | None = None) -> None:
        """Build everything; between steps, give up (BuildInterrupted) once `stop` is set, so an
        interrupted `up` does not first wait for the whole build (slow on a loaded machine)."""
        def check() -> None:
            if stop is not None and stop.is_set():
                raise BuildInterrupted("stopped by a signal while building")

        t0 = time.monotonic()
        self.ca = CertificateAuthority.create(self.paths.pki)
        check()
        self.moto = aws.start_moto()
        self.aws_url = self.moto.url
        check()
        aws.seed(self.spec, self.aws_url)
        t_aws = time.monotonic()
        check()
        self.dataplane.build()
        for node in self.spec.nodes:
            check()
            self.apply_kube_proxy(node.name)
        for pod in self.spec.pods:
            check()
            self.pods.start(pod)
        self.pods.wait_ready()
        t_dp = time.monotonic()
        check()
        self._start_servers()
        check()
        self._start_api()
        self.paths.spec.write_text(json.dumps(self.spec.to_dict(), indent=1))
        self.write_status()
        log.info("lab %s up: aws %.2fs, dataplane+pods %.2fs, servers+api %.2fs", self.spec.name,
                 t_aws - t0, t_dp - t_aws, time.monotonic() - t_dp)

    def _start_servers(self) -> None:
        s = self.spec
        self.servers = NetServers()
        records = cluster_records(s)
        for pod in s.pods:
            if pod.role == "coredns":
                self.servers.start_dns(f"dns:{pod.key}", pod.netns, pod.ip, records)
            elif pod.role == "app":
                self.servers.start_app(f"app:{pod.key}", pod.netns, pod.ip,
                                       [(p.port, p.protocol, p.name) for p in pod.ports], pod.name)
        # The opt-in "external" host answers TCP/443, so --external-ip/--external-host pass on a
        # healthy lab (nothing is ever sent beyond the lab's own namespaces).
        self.servers.start_app("external:443", s.external_netns, s.external_ip, [(443, "TCP", "https")],
                               "external")
        for node in s.nodes:
            self.servers.start_healthz(f"healthz:{node.name}", node.netns, port=KUBE_PROXY_HEALTHZ_PORT)
        for ip in s.apiserver_ips:
            ctx = self.ca.server_context(self.paths.pki, f"apiserver-{ip}", ips=[ip, s.kubernetes_service_ip],
                                         dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                              f"kubernetes.default.svc.{s.cluster_domain}"])
            self.servers.start_https_endpoint(f"apiserver:{ip}", s.underlay_netns, ip, 443, ctx)

    def _start_api(self) -> None:
        self.store = ObjectStore()
        ctx = self.ca.server_context(self.paths.pki, "kube-apiserver-local", ips=["127.0.0.1"],
                                     dns=["localhost"])
        self.api = ApiServer(self.store, token=self.token, ssl_context=ctx, hooks=self)
        self.api.add_routes(control_routes(self))
        port = self.api.start("127.0.0.1", 0)
        self.api_url = f"https://127.0.0.1:{port}"
        for obj in objects_from_spec(self.spec, ca_pem=self.ca.pem.decode(), api_server_url=self.api_url,
                                     created=self.started):
            self.store.create(obj)
        self.paths.token.write_text(self.token)
        self.paths.token.chmod(0o600)
        write_kubeconfig(self.paths.kubeconfig, self.api_url, self.ca.pem.decode(), self.token,
                         cluster_name=self.spec.cluster_name, context_name=f"netconform-lab-{self.spec.name}",
                         user_name=f"netconform-lab-{self.spec.name}-admin")

    # -- LabRuntime --------------------------------------------------------------------------
    def stop_server(self, key: str) -> None:
        self.servers.stop(key)

    def start_server(self, key: str) -> None:
        self.servers.start(key)

    def apply_kube_proxy(self, node: str, skip_services: frozenset[str] = frozenset()) -> None:
        n = self.spec.node(node)
        kubeproxy.apply_rules(n.netns, kubeproxy.render_node_rules(self.spec, node, skip_services=skip_services))

    # -- faults ------------------------------------------------------------------------------
    def apply_fault(self, name: str, target: str = "") -> dict:
        fault = _fault(name)
        with self.lock:
            target = target or fault.default_target(self.spec)
            fault.apply(self, target)
            record = {"name": name, "target": target, "description": fault.describe(self.spec, target)}
            if record not in self.faults:
                self.faults.append(record)
            self.write_status()
            return record

    def heal_fault(self, name: str | None) -> list[dict]:
        with self.lock:
            healed = [f for f in self.faults if name is None or f["name"] == name]
            if name is not None and not healed:
                _fault(name)  # unknown names are an error; known but inactive is a no-op
            for rec in reversed(healed):
                FAULTS[rec["name"]].heal(self, rec["target"])
                self.faults.remove(rec)
            self.write_status()
            return healed

    # -- API hooks (pods created and deleted through the lab API) ----------------------------
    def on_pod_create(self, obj: dict) -> dict:
        with self.lock:
            pod = self._pod_from_request(obj)
            self.spec.pods.append(pod)
            try:
                if not pod.host_network:
                    self.dataplane.add_pod(pod)
                self.pods.start(pod)
                # Running only once the process is inside the pod's namespaces: until then its
                # netns is the lab process's (the root one), and an exec would run there.
                self.pods.wait_ready(keys={pod.key})
            except Exception:
                self.pods.stop(pod.key)
                if not pod.host_network:
                    self.dataplane.remove_pod(pod)
                self.spec.pods.remove(pod)
                raise
            self.write_status()
            return pod_object(self.spec, pod, base=obj, created=dt.datetime.now(dt.timezone.utc))

    def on_pod_delete(self, obj: dict) -> None:
        key = f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"
        with self.lock:
            try:
                pod = self.spec.pod(key)
            except KeyError:
                return
            self.pods.stop(key)
            if not pod.host_network:
                self.dataplane.remove_pod(pod)
            self.spec.pods.remove(pod)
            self.write_status()

    def exec_argv(self, obj: dict, container: str, command: list[str]) -> list[str]:
        key = f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"
        pid = self.pods.pid(key)
        if pid is None:
            raise ApiError(404, "NotFound", f"pod {key} has no running container process")
        # Enter the pod's network and mount namespaces, as a container exec would.
        return ["nsenter", "-t", str(pid), "-n", "-m", "--", *command]

    def _pod_from_request(self, obj: dict) -> PodSpec:
        meta, podspec = obj.get("metadata", {}), obj.get("spec", {})
        ns, name = meta.get("namespace", "default"), meta["name"]
        node_name = podspec.get("nodeName") or self.spec.nodes[0].name
        node = self.spec.node(node_name)
        host = bool(podspec.get("hostNetwork"))
        c0 = (podspec.get("containers") or [{}])[0]
        pod = PodSpec(
            namespace=ns, name=name, uid=meta.get("uid") or str(uuid.uuid4()),
            node=node.name, ip=node.ip if host else self._free_pod_ip(node.name),
            host_network=host, netns=node.netns if host else pod_netns_name(self.spec.name, ns, name),
            role="debug", labels=dict(meta.get("labels") or {}), owner_kind="", owner_name="",
            workload_kind="", workload_name="", container_name=c0.get("name", "debug"),
            container_id=secrets.token_hex(32), image=c0.get("image", ""), ports=[],
        )
        if not host:
            wire_pod(pod, self.spec.name, self.spec.flavor, self.spec.pod_mtu)
        return pod

    def _free_pod_ip(self, node: str) -> str:
        used = {p.ip for p in self.spec.pods}
        if self.spec.flavor == "vpc-cni":
            net = ipaddress.ip_network(self.spec.node_subnet)
            start = ipaddress.ip_address("10.0.1.10")
        else:
            net = ipaddress.ip_network(self.spec.node(node).pod_cidr)
            start = net.network_address + 2
        ip = start
        while ip in net:
            if str(ip) not in used and ip != net.broadcast_address:
                return str(ip)
            ip += 1
        raise RuntimeError(f"no free pod IP left for node {node}")

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict:
        s = self.spec
        return {
            "name": s.name, "flavor": s.flavor, "state": "running", "pid": os.getpid(),
            "kubeconfig": str(self.paths.kubeconfig), "api_server_url": self.api_url,
            "aws_endpoint_url": self.aws_url, "region": s.region, "cluster_domain": s.cluster_domain,
            "dns_service_ip": s.dns_service_ip, "kubernetes_service_ip": s.kubernetes_service_ip,
            "apiserver_endpoints": list(s.apiserver_ips), "external_ip": s.external_ip,
            "underlay_netns": s.underlay_netns, "external_netns": s.external_netns,
            "nodes": [{"name": n.name, "ip": n.ip, "netns": n.netns, "instance_id": n.instance_id,
                       "cgroup_driver": n.cgroup_driver} for n in s.nodes],
            "pods": [{"namespace": p.namespace, "name": p.name, "ip": p.ip, "node": p.node,
                      "netns": p.netns, "pid": self.pods.pid(p.key), "host_network": p.host_network,
                      "role": p.role, "uid": p.uid, "container_id": p.container_id,
                      "sgfp": p.sgfp, "branch_eni_id": p.branch_eni_id} for p in s.pods],
            "services": [{"namespace": v.namespace, "name": v.name, "cluster_ip": v.cluster_ip,
                          "ports": [{"name": pt.name, "port": pt.port, "protocol": pt.protocol,
                                     "target_port": pt.target_port or pt.port} for pt in v.ports],
                          "endpoints": [self._endpoint_ip(e) for e in v.endpoints]} for v in s.services],
            "faults": list(self.faults),
            "started": self.started.isoformat(),
        }

    def _endpoint_ip(self, ep: str) -> str:
        return self.spec.pod(ep).ip if "/" in ep else ep

    def write_status(self) -> None:
        write_json(self.paths.status, self.status())

    # -- teardown ----------------------------------------------------------------------------
    def teardown(self) -> None:
        for step in (lambda: self.api and self.api.stop(), lambda: self.servers and self.servers.close(),
                     lambda: self.moto and self.moto.stop(), self.pods.stop_all):
            try:
                step()
            except Exception:  # keep tearing down; the sweep after us removes the rest
                log.exception("teardown step failed")


def _fault(name: str):
    try:
        return FAULTS[name]
    except KeyError:
        raise FaultError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}") from None


def control_routes(lab: Lab):
    """Lab control endpoints under /_lab/ on the lab API server (same bearer token)."""
    import asyncio

    from aiohttp import web

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(lab.status())

    async def post_fault(request: web.Request) -> web.Response:
        body = await request.json()
        loop = asyncio.get_running_loop()
        try:
            if body.get("action") == "heal":
                result = await loop.run_in_executor(None, lab.heal_fault, body.get("name"))
            else:
                result = await loop.run_in_executor(None, lab.apply_fault, body["name"],
                                                    body.get("target") or "")
        except FaultError as e:
            return web.json_response({"error": str(e)}, status=400)
        except Exception as e:  # the CLI prints it as one line; the traceback goes to the log
            log.exception("fault %s failed", body)
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=500)
        return web.json_response({"result": result, "faults": lab.faults})

    return [web.get("/_lab/status", get_status), web.post("/_lab/faults", post_fault)]


LAB_NICE = -10


def _stand_in_for_other_machines() -> None:
    """Run ahead of the suite under test: the lab's servers stand in for CoreDNS, apiservers and
    pods on machines of their own, which a busy probe runner cannot starve. On a loaded 2-core
    machine an equal-priority lab stalled for a second now and then, and a suite with a 1 s probe
    timeout read that as a dead server."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, LAB_NICE)
    except OSError as e:  # not root: the lab still works, only less steadily under load
        log.warning("cannot raise the lab's priority (%s); verdicts under heavy load may flake", e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netconform.lab.daemon")
    ap.add_argument("--state-dir", required=True, type=Path)
    args = ap.parse_args(argv)
    paths = LabPaths(args.state_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    req = json.loads(paths.request.read_text())
    paths.pid.write_text(str(os.getpid()))
    _stand_in_for_other_machines()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    lab = None
    try:
        spec = build_spec(req["name"], req["flavor"], req["nodes"], req["pods_per_node"],
                          cluster_domain=req.get("cluster_domain", "cluster.local"))
        lab = Lab(paths, spec)
        lab.build(stop)
        paths.ready.write_text("ok")
    except BuildInterrupted as e:
        log.info("lab build interrupted: %s", e)
    except Exception as e:
        log.error("lab build failed: %s\n%s", e, traceback.format_exc())
        paths.error.write_text(f"{type(e).__name__}: {e}")
        stop.set()
    while not stop.wait(1.0):
        pass
    if lab is not None:
        lab.teardown()
    from .cleanup import delete_namespaces, lab_namespaces

    delete_namespaces(lab_namespaces(paths.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
