"""`netconform-lab`: build, inspect, break, heal and remove the built-in lab cluster.

    eval "$(netconform-lab up)"            # 2 nodes, vpc-cni flavour, prints shell exports
    netconform-lab status --json
    netconform-lab fault dns-udp-blocked
    netconform-lab heal --all
    netconform-lab down
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from .cleanup import lab_namespaces, stop_daemon, stop_process, sweep
from .state import LabPaths, daemon_pid, known_labs, lab_paths, read_json
from .topology import FLAVORS, build_spec, validate_lab_name

DEFAULT_NAME = "lab"
# How long `up` waits for a build: ~5 s on an idle 2-core machine, several times that on a loaded
# one (other labs building, test workers busy). Only a build that hangs ever waits this long.
UP_TIMEOUT = 300.0


class CliError(Exception):
    """One line for the user, no traceback."""


def _require_root() -> None:
    if os.geteuid() != 0:
        raise CliError("the lab needs root (it creates network namespaces); run it as root")


def _root_overlaps(spec) -> list[str]:
    """Lab ranges that collide with the root namespace's own addresses or routes."""
    lab_nets = [ipaddress.ip_network(n) for n in (spec.vpc_cidr, spec.node_subnet, spec.service_cidr,
                                                  spec.pod_cidr)] + [ipaddress.ip_network(f"{spec.external_ip}/24", strict=False)]
    lab_nets += [ipaddress.ip_network(f"{ip}/32") for ip in spec.apiserver_ips]
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True, timeout=10)
    found = []
    for route in json.loads(out.stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("local", "broadcast", "multicast"):
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.is_loopback or net.is_link_local:
            continue
        found += [f"{net} (root namespace route) overlaps lab range {n}" for n in lab_nets if net.overlaps(n)]
    return found


def start_lab(name: str, flavor: str = "vpc-cni", nodes: int = 2, pods_per_node: int = 3,
              cluster_domain: str = "cluster.local") -> LabPaths:
    """Build a lab (replacing a stale one of the same name) and wait until it serves.

    Raises CliError with one readable line on failure; nothing is left behind then.
    """
    _require_root()
    name = validate_lab_name(name)
    spec = build_spec(name, flavor, nodes, pods_per_node, cluster_domain=cluster_domain)
    overlaps = _root_overlaps(spec)
    if overlaps:
        raise CliError("refusing to build the lab: " + "; ".join(overlaps))
    paths = lab_paths(name)
    if paths.root.exists() or lab_namespaces(name):
        stop_daemon(paths)
        sweep(paths)
    paths.root.mkdir(parents=True, mode=0o700)
    paths.request.write_text(json.dumps({"name": name, "flavor": flavor, "nodes": nodes,
                                         "pods_per_node": pods_per_node,
                                         "cluster_domain": cluster_domain}))
    with open(paths.log, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "netconform.lab.daemon", "--state-dir", str(paths.root)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                close_fds=True)
    try:
        _wait_ready(paths, proc, name)
    except BaseException:  # Ctrl-C or a failed build: leave nothing half-built behind
        # Stop the daemon we started by its process, not its pid file: it may not have written
        # that yet. It aborts its build on SIGTERM and tears down what it made; the sweep removes
        # whatever is left (only once the daemon has really exited, so they cannot race).
        stop_process(proc.pid)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # unkillable (D state): the sweep still runs
            pass
        sweep(paths)
        raise
    return paths


def stop_lab(name: str) -> list[str]:
    """Stop the lab's process and remove every trace; returns what could not be removed."""
    paths = lab_paths(validate_lab_name(name))
    stop_daemon(paths)
    return sweep(paths)


def lab_fault(name: str, fault: str, target: str = "") -> dict:
    return _control(lab_paths(validate_lab_name(name)), {"action": "apply", "name": fault, "target": target})


def lab_heal(name: str, fault: str | None) -> dict:
    return _control(lab_paths(validate_lab_name(name)), {"action": "heal", "name": fault})


def cmd_up(args: argparse.Namespace) -> int:
    paths = start_lab(args.name, args.flavor, args.nodes, args.pods_per_node, args.cluster_domain)
    try:
        exports = env_lines(paths)
    except BaseException:  # Ctrl-C (or a failure) before the exports are out: `up` failed, remove the lab
        stop_lab(paths.name)
        raise
    print(exports, flush=True)
    return 0


def _wait_ready(paths: LabPaths, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + UP_TIMEOUT
    while not paths.ready.exists():
        failure = None
        if paths.error.exists():
            failure = paths.error.read_text().strip()
        elif proc.poll() is not None:
            failure = f"lab process exited with {proc.returncode}"
        elif time.monotonic() > deadline:
            failure = f"lab not ready after {UP_TIMEOUT:.0f} s"
        if failure:
            raise CliError(f"lab {name} failed to start: {failure}")
        time.sleep(0.05)


def lab_env(paths: LabPaths) -> dict[str, str]:
    """Environment variables that point kubectl, the suite and boto3 at the lab."""
    from .aws import aws_env

    status = read_json(paths.status) or {}
    env = {"KUBECONFIG": str(paths.kubeconfig), "NETCONFORM_LAB": paths.name}
    if status.get("aws_endpoint_url"):
        env.update(aws_env(status["aws_endpoint_url"], status.get("region", "us-west-2")))
    return env


def env_lines(paths: LabPaths) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in lab_env(paths).items())


def _status(paths: LabPaths) -> dict:
    status = read_json(paths.status)
    if status is None:
        raise CliError(f"no lab named {paths.name} (known: {', '.join(known_labs()) or 'none'})")
    if daemon_pid(paths) is None:
        status["state"] = "stale"
    return status


def cmd_status(args: argparse.Namespace) -> int:
    status = _status(lab_paths(validate_lab_name(args.name)))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"lab {status['name']} ({status['flavor']}): {status['state']}, api {status['api_server_url']}, "
          f"aws {status['aws_endpoint_url']}")
    for n in status["nodes"]:
        print(f"  node {n['name']} {n['ip']} netns {n['netns']}")
    for p in status["pods"]:
        print(f"  pod  {p['namespace']}/{p['name']} {p['ip']} on {p['node']}"
              + (" hostNetwork" if p["host_network"] else ""))
    for f in status["faults"]:
        print(f"  fault {f['name']} {f['target']}: {f['description']}")
    return 0


def _control(paths: LabPaths, body: dict) -> dict:
    status = _status(paths)
    if status["state"] != "running":
        raise CliError(f"lab {paths.name} is not running (stale state: run `netconform-lab down --name {paths.name}`)")
    ctx = ssl.create_default_context(cafile=str(paths.ca))
    req = urllib.request.Request(status["api_server_url"] + "/_lab/faults", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {paths.token.read_text().strip()}",
                                          "Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", str(e))
        except ValueError:
            msg = str(e)
        raise CliError(msg) from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise CliError(f"lab {paths.name} did not answer: {e}") from None


def cmd_fault(args: argparse.Namespace) -> int:
    out = lab_fault(args.name, args.fault, args.target or "")
    print(f"applied {out['result']['name']}: {out['result']['description']}")
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    if not args.fault and not args.all:
        raise CliError("say which fault to heal, or --all")
    out = lab_heal(args.name, None if args.all else args.fault)
    healed = ", ".join(f"{r['name']} ({r['target']})" if r["target"] else r["name"] for r in out["result"])
    print(f"healed {healed or 'nothing (no fault was active)'}")
    return 0


def _stale_lab_names() -> set[str]:
    from pyroute2 import netns as pr_netns

    from .podproc import CGROUP_ROOT, HIERARCHIES

    names = {n.split("-")[1] for n in pr_netns.listnetns() if n.startswith("nc-") and n.count("-") >= 2}
    for h in HIERARCHIES:
        for d in (CGROUP_ROOT / h).glob("nc-*"):
            names.add(d.name[3:].removesuffix(".slice"))
    return names


def cmd_down(args: argparse.Namespace) -> int:
    _require_root()
    names = sorted(set(known_labs()) | _stale_lab_names()) if args.all else [validate_lab_name(args.name)]
    rc = 0
    for name in names:
        left = stop_lab(name)
        if left:
            print(f"lab {name}: could not remove {', '.join(left)}", file=sys.stderr)
            rc = 1
        else:
            print(f"lab {name} down")
    if not names:
        print("no lab to remove")
    return rc


def cmd_env(args: argparse.Namespace) -> int:
    paths = lab_paths(validate_lab_name(args.name))
    _status(paths)
    print(env_lines(paths))
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, like every other CLI error (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="netconform-lab", description="The built-in lab cluster.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def named(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--name", default=os.environ.get("NETCONFORM_LAB", DEFAULT_NAME),
                       help="lab name (1-12 of a-z0-9; default: $NETCONFORM_LAB or 'lab')")
        return p

    up = named(sub.add_parser("up", help="build a lab and print shell exports to eval"))
    up.add_argument("--flavor", choices=FLAVORS, default="vpc-cni")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--pods-per-node", type=int, default=3)
    up.add_argument("--cluster-domain", default="cluster.local")
    up.set_defaults(func=cmd_up)
    st = named(sub.add_parser("status", help="describe a running lab"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    fa = named(sub.add_parser("fault", help="break one thing"))
    fa.add_argument("fault")
    fa.add_argument("--target", help="pod ns/name, node name or endpoint IP (default: per fault)")
    fa.set_defaults(func=cmd_fault)
    he = named(sub.add_parser("heal", help="undo a fault"))
    he.add_argument("fault", nargs="?")
    he.add_argument("--all", action="store_true")
    he.set_defaults(func=cmd_heal)
    dn = named(sub.add_parser("down", help="remove a lab (and, with --all, every lab and stale leftover)"))
    dn.add_argument("--all", action="store_true")
    dn.set_defaults(func=cmd_down)
    ev = named(sub.add_parser("env", help="print the shell exports of a running lab"))
    ev.set_defaults(func=cmd_env)
    fl = sub.add_parser("faults", help="list the faults the lab can apply")
    fl.set_defaults(func=lambda a: _list_faults())
    return ap


def _list_faults() -> int:
    from .faults import FAULTS

    for name, fault in sorted(FAULTS.items()):
        print(f"{name:26} {fault.summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError) as e:
        print(f"netconform-lab: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # a non-root user reading root's lab state (status, env, fault, heal)
        where = f" {e.filename}" if e.filename else ""
        print(f"netconform-lab: permission denied{where}: the lab needs root", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netconform-lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
