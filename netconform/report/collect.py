"""Raw material for the evidence bundle, collected once per target pod and node at the end of a run.

Best effort by contract: nothing here raises. A namespace that cannot be entered, a probe that
times out or a command that is missing becomes a line in the target's `errors`, and the rest of
the folder is still written.

>>> found = collect_raw([RawTarget("pod", "default/web-0", api_object=pod)], locate, timeout=5)
>>> sorted(found[0].files)[:3]
['addresses.json', 'ip-addr.txt', 'ip-link.txt']
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

COMMANDS_PROBE = "netconform.report.commands:run_all"

# file name -> the commands whose output it holds (in the target's network namespace)
NETNS_COMMANDS: dict[str, list[list[str]]] = {
    "ip-addr.txt": [["ip", "-d", "addr", "show"]],
    "ip-route.txt": [["ip", "-4", "route", "show", "table", "all"], ["ip", "-6", "route", "show", "table", "all"]],
    "ip-rule.txt": [["ip", "-4", "rule", "show"], ["ip", "-6", "rule", "show"]],
    "ip-neigh.txt": [["ip", "-4", "neigh", "show"], ["ip", "-6", "neigh", "show"]],
    "ip-link.txt": [["ip", "-d", "-s", "link", "show"]],
}
NODE_COMMANDS: dict[str, list[list[str]]] = {
    "iptables-save.txt": [["iptables-save", "-c"]],
    "ip6tables-save.txt": [["ip6tables-save", "-c"]],
    "conntrack-stats.txt": [["conntrack", "-S"]],
    # sysctls under net.* are per network namespace: read from inside it
    "sysctl-net.txt": [["sysctl", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter",
                        "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max",
                        "net.bridge.bridge-nf-call-iptables"]],
}
# file name -> (probe, kwargs): the same facts as structured JSON, as the checks see them
STRUCTURED: dict[str, tuple[str, dict[str, Any]]] = {
    "addresses.json": ("netinfo:addresses", {}),
    "routes.json": ("netinfo:routes", {}),
    "neighbours.json": ("netinfo:neighbours", {"all_states": True}),
    "links.json": ("netinfo:links", {}),
}


def probe_limit(probe_timeout: float) -> float:
    """How long one bundle probe may take, from the run's --probe-timeout."""
    return max(5.0, probe_timeout * 3)


def bundle_questions(kind: str, timeout: float) -> list[tuple[str, str | None, dict[str, Any], float]]:
    """What the bundle asks a pod's or node's namespace: (file name or None for the commands,
    probe, kwargs, call timeout). Asked the same way wherever it is asked, so an answer a check's
    worker already got (netconform/runners/shared.py) is the one the bundle writes."""
    wanted = dict(NETNS_COMMANDS, **(NODE_COMMANDS if kind == "node" else {}))
    flat = [argv for cmds in wanted.values() for argv in cmds]
    return [*((name, probe, kwargs, timeout) for name, (probe, kwargs) in STRUCTURED.items()),
            (None, COMMANDS_PROBE, {"commands": flat, "timeout": timeout}, timeout * len(flat) + 5)]


@dataclass
class RawTarget:
    """A pod ("ns/name") or node whose namespace the bundle describes."""

    kind: str
    name: str
    api_object: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class Collected:
    """One target's raw files (name -> text, or JSON-able data for .json/.yaml) and what failed."""

    target: RawTarget
    files: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    how: dict[str, Any] = field(default_factory=dict)


# locate(target) -> a Located (runners/places.py): path or "", pid or 0, what was tried, runner
Locate = Callable[[RawTarget], Any]


def resolv_conf_path(pid: int) -> str:
    """The file a pod's resolver reads, through its own mount namespace."""
    return f"/proc/{pid}/root/etc/resolv.conf"


def format_commands(results: list[dict[str, Any]]) -> str:
    """Command outputs as a terminal would show them: `$ argv`, output, exit status."""
    chunks = []
    for r in results:
        lines = ["$ " + " ".join(r["argv"])]
        if r.get("error"):
            lines.append(f"# not run: {r['error']}")
        else:
            if r.get("stdout"):
                lines.append(r["stdout"].rstrip("\n"))
            if r.get("stderr"):
                lines += ["# stderr:", r["stderr"].rstrip("\n")]
            lines.append(f"# exit {r.get('returncode')}")
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"


def collect_target(target: RawTarget, locate: Locate, runner_for: Callable[[Any], Any], timeout: float) -> Collected:
    out = Collected(target)
    if target.api_object is not None:
        out.files[f"{target.kind}.yaml"] = target.api_object
    try:
        found = locate(target)
        path, pid, tried = found.path, found.pid, list(found.evidence)
    except Exception as e:  # noqa: BLE001 -- best effort: the reason goes into the bundle
        found, path, pid, tried = None, "", 0, [f"{type(e).__name__}: {e}"]
    out.how = {"netns": path, "pid": pid, "found_by": tried, "place": getattr(found, "place", "")}
    if found is None or not path:
        out.errors.append(f"network namespace of {target.label} not found: "
                          + ("; ".join(tried[-3:]) or "no way to find it"))
        return out
    try:
        runner = runner_for(found)
    except Exception as e:  # noqa: BLE001
        out.errors.append(f"cannot run probes in {path}: {type(e).__name__}: {e}")
        return out
    wanted = dict(NETNS_COMMANDS, **(NODE_COMMANDS if target.kind == "node" else {}))
    for name, probe, kwargs, limit in bundle_questions(target.kind, timeout):
        call = runner.call(probe, kwargs, timeout=limit)
        if call.status != "ok":
            out.errors.append(f"{name or 'command outputs'}: {probe} {call.status}: {call.error or call.error_type}")
        elif name is not None:
            out.files[name] = call.value
        else:
            results = iter(call.value)
            for file, cmds in wanted.items():
                out.files[file] = format_commands([next(results) for _ in cmds])
    if pid and target.kind == "pod":
        # The same question the DNS checks ask (so usually an answer already shared).
        call = runner.call(RESOLV_CONF_PROBE, {"path": resolv_conf_path(pid)}, timeout=timeout)
        if call.status != "ok":
            out.errors.append(f"resolv.conf: {RESOLV_CONF_PROBE} {call.status}: {call.error or call.error_type}")
        elif not call.value.get("ok"):
            out.errors.append(f"resolv.conf: cannot read {call.value.get('path')}: {call.value.get('error')}")
        else:
            out.files["resolv.conf"] = call.value["text"]
    return out


RESOLV_CONF_PROBE = "files:read_text"


class _Shared:
    """A runner's `call`, through SharedCalls."""

    def __init__(self, shared: Any):
        self.shared = shared

    def call(self, probe: str, kwargs: dict[str, Any], timeout: float) -> Any:
        return self.shared.call(probe, kwargs, timeout=timeout)[0]


def collect_raw(targets: list[RawTarget], locate: Locate, runner_for: Callable[[Any], Any] | None = None,
                timeout: float = 10.0, parallel: int = 8) -> list[Collected]:
    """Collect every target in parallel; never raises (failures are in each `Collected.errors`)."""
    if runner_for is None:
        from netconform.runners.shared import shared_calls

        def runner_for(found: Any) -> Any:
            # Answers the checks' workers already got for the same questions come from the run's
            # shared folder: no second look, and no probe worker started here for them.
            return _Shared(shared_calls(found.runner))

    def one(t: RawTarget) -> Collected:
        start = time.monotonic()
        try:
            c = collect_target(t, locate, runner_for, timeout)
        except Exception as e:  # noqa: BLE001 -- collecting must never fail the run
            c = Collected(t, errors=[f"collection failed: {type(e).__name__}: {e}"])
        c.how["duration_s"] = round(time.monotonic() - start, 3)
        return c

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets))), thread_name_prefix="nc-bundle") as pool:
        return list(pool.map(one, targets))
