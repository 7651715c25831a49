"""The hub: serves probes inside a debug pod over one exec session (started by boot.py).

It runs as root in a hostPID, hostNetwork, privileged pod. For each request it finds the target's
network namespace here (pods through netconform.pids: hostPID shows their processes) and runs
the probe through the node-local runner (runners/local.py): one long-lived worker process per
namespace, each request in a thread of its own, so probes run concurrently.

Wire protocol: one JSON object per line on stdin (requests) and stdout (answers). stdout carries
nothing else: anything the hub's own code prints goes to stderr, and probes print into their
workers' stderr files.

    hub → client, once, after boot:
      {"netconform_hub": 1, "ready": true, "pid": 4242, "python": [3, 13, 1],
       "payload": {"sha256": …, "path": …, "where": "cache", "cached": true},
       "versions": {"dnspython": "2.9.2", …}, "options": {"silence_timeout": 90.0, …}}

    a target is one of
      {"pod": {"namespace", "name", "uid", "container_ids", "pod_ip", "host_network"}}
              (PodRef fields; an API pod object, with metadata/spec/status, is accepted too)
      {"node": true}                   the node's namespace: the hub's own (hostNetwork)
      {"path": "/proc/<pid>/ns/net"}   a namespace named directly

    {"id": 7, "op": "call", "target": T, "probe": "netinfo:routes", "kwargs": {…}, "timeout": 5,
     "expect": [dev, inode]}
      → {"id": 7, "call": {ProbeCall.to_dict()}, "netns": LOCATION}
      ("op" may be left out; "expect", optional, refuses to run anywhere but that namespace.)
      A target that cannot be resolved still answers a ProbeCall: status "error", error_type
      "PidNotFound" / "ResolveError" / "PermissionMissing", and "evidence" beside it.
    {"id": 8, "op": "locate", "target": T}
      → {"id": 8, "locate": LOCATION}
      LOCATION = {"netns_path", "dev", "inode", "pid", "method", "evidence"}
      or         {"id": 8, "error": {"error_type", "error", "evidence"}}
    {"id": 9, "op": "ping", "token": "abc"}
      → {"id": 9, "pong": "abc", "in_flight": 3, "workers": 2}
    {"id": 10, "op": "bye"}
      → {"id": 10, "bye": true}, then every namespace worker is stopped and the hub exits 0
    a malformed line, an unknown op, a request that made the hub itself fail
      → {"id": <id or null>, "error": {"error_type": "ProtocolError" | …, "error": …}}

It exits by itself, stopping its workers: when stdin closes or cannot be read (exit 0 / 1),
when nothing at all arrived for `silence_timeout` seconds (exit 2; the client pings every ~10 s,
so only a vanished client is that quiet: exec'd processes outlive their client otherwise,
kubernetes#89031), and after "bye". Workers die with the hub even when it is SIGKILLed
(PR_SET_PDEATHSIG, runners/_worker.py).

Options (boot's third argument, JSON): `silence_timeout` (s, default 90), `host_root` (where the
node's / is mounted, default /host: its /run/netns names pods' namespaces), `max_workers` (live
namespace workers at once; idle ones beyond it are stopped, least recently used first; default
from the pod's memory limit, as each worker holds ~40 MB).
"""
from __future__ import annotations

import json
import os
import select
import sys
import threading
import time
import traceback
from typing import Any

from netconform.errors import NetconformError
from netconform.pids import PodRef, resolve_pod_pid
from netconform.runners import _worker
from netconform.runners.base import ProbeCall
from netconform.runners.local import LocalRunner, netns_key, runner_for

__all__ = ["DEFAULT_SILENCE_TIMEOUT", "serve"]

PROTOCOL = 1
DEFAULT_SILENCE_TIMEOUT = 90.0
WORKER_MB = 40  # RSS of a namespace worker with the probes imported (measured, python 3.11)
_CLOSE_WAIT = 10.0


def _default_max_workers() -> int:
    """As many workers as fit in the pod's memory limit, the hub's own share kept aside."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 50:  # cgroup v1 spells "no limit" as a huge number
            return max(2, min(64, (int(raw) // (1 << 20) - 2 * WORKER_MB) // WORKER_MB))
        break
    return 32


class _Out:
    """The protocol's output: whole lines, one writer at a time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj: dict) -> None:
        try:
            data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        except (TypeError, ValueError) as e:
            data = json.dumps({"id": obj.get("id"), "error": {"error_type": "TypeError",
                                                              "error": f"answer is not JSON-able: {e}"}}).encode() + b"\n"
        with self.lock:
            while data:
                data = data[os.write(self.fd, data):]


def _pod_ref(pod: dict) -> PodRef:
    if "metadata" in pod:
        return PodRef.from_api(pod)
    return PodRef(namespace=str(pod.get("namespace", "")), name=str(pod.get("name", "")),
                  uid=str(pod.get("uid") or ""), container_ids=tuple(pod.get("container_ids") or ()),
                  pod_ip=str(pod.get("pod_ip") or ""), host_network=bool(pod.get("host_network")))


class _Locator:
    """Target → network namespace on this node; answers are kept while the namespace lasts."""

    def __init__(self, host_root: str):
        run_netns = os.path.join(host_root, "run", "netns") if host_root else ""
        # The node's /run/netns (through the read-only /host mount) names pods' namespaces;
        # outside a debug pod (tests, the lab) the machine's own is the node's.
        self.run_netns = run_netns if run_netns and os.path.isdir(run_netns) else "/run/netns"
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()

    def locate(self, target: dict) -> dict:
        key = json.dumps(target, sort_keys=True)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and self._still_valid(cached):
            return cached
        found = self._resolve(target)
        with self._lock:
            self._cache[key] = found
        return found

    @staticmethod
    def _still_valid(loc: dict) -> bool:
        try:
            same = netns_key(loc["netns_path"]) == (loc["dev"], loc["inode"])
        except NetconformError:
            return False
        return same and (loc["pid"] is None or os.path.exists(f"/proc/{loc['pid']}"))

    def _resolve(self, target: dict) -> dict:
        if not isinstance(target, dict) or len(target) != 1:
            raise ValueError(f"target must be one of {{pod: …}}, {{node: true}}, {{path: …}}; got {target!r:.200}")
        if "pod" in target:
            res = resolve_pod_pid(_pod_ref(target["pod"]), run_netns=self.run_netns)
            path, pid, method, evidence = res.netns_path, res.pid, res.method, res.evidence
        elif "node" in target:
            path, pid, method, evidence = self._node()
        elif "path" in target:
            path, pid, method, evidence = str(target["path"]), None, "path", ["given by the client"]
        else:
            raise ValueError(f"unknown target kind {next(iter(target))!r}")
        dev, ino = netns_key(path)
        return {"netns_path": path, "dev": dev, "inode": ino, "pid": pid, "method": method, "evidence": evidence}

    @staticmethod
    def _node() -> tuple[str, int | None, str, list[str]]:
        # The debug pod is hostNetwork: its own namespace is the node's. That also holds where
        # pid 1 is not the node's init (a lab node on a shared machine).
        own = f"/proc/{os.getpid()}/ns/net"
        key = netns_key(own)
        try:
            init_same = netns_key("/proc/1/ns/net") == key
        except NetconformError:
            init_same = False
        if init_same:
            return "/proc/1/ns/net", 1, "node", ["hostNetwork debug pod: its namespace is pid 1's, the node's"]
        return own, os.getpid(), "node", [f"hostNetwork debug pod: its own namespace net:[{key[1]}] "
                                          "(pid 1 is in another one: not the node's init)"]


class _Runners:
    """One LocalRunner per namespace, at most `cap` of them alive; the idle least recently used
    one is stopped to make room (its next call starts a fresh worker)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._lock = threading.Lock()
        self._runners: dict[tuple[int, int], LocalRunner] = {}
        self._users: dict[tuple[int, int], int] = {}
        self._used_at: dict[tuple[int, int], float] = {}

    def acquire(self, path: str) -> LocalRunner:
        runner = runner_for(path)
        with self._lock:
            self._runners[runner.key] = runner
            self._users[runner.key] = self._users.get(runner.key, 0) + 1
            self._used_at[runner.key] = time.monotonic()
            idle = sorted((k for k in self._runners if not self._users.get(k)), key=self._used_at.__getitem__)
            victims = [self._forget(k) for k in idle[: max(0, len(self._runners) - self.cap)]]
        for victim in victims:
            victim.close()
        return runner

    def release(self, runner: LocalRunner) -> None:
        with self._lock:
            if self._users.get(runner.key):
                self._users[runner.key] -= 1

    def _forget(self, key: tuple[int, int]) -> LocalRunner:
        self._users.pop(key, None)
        self._used_at.pop(key, None)
        return self._runners.pop(key)

    def live(self) -> int:
        with self._lock:
            return sum(1 for r in self._runners.values() if r.worker_pid)

    def close_all(self) -> None:
        """Stop every worker, in parallel (each close may wait a second for a graceful exit)."""
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        threads = [threading.Thread(target=r.close, daemon=True) for r in runners]
        for t in threads:
            t.start()
        deadline = time.monotonic() + _CLOSE_WAIT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


class _Hub:
    def __init__(self, out: _Out, options: dict[str, Any]):
        self.out = out
        self.locator = _Locator(options["host_root"])
        self.runners = _Runners(options["max_workers"])
        self._in_flight = 0
        self._lock = threading.Lock()

    def handle(self, request: Any) -> bool:
        """Dispatch one request; False when it was "bye"."""
        if not isinstance(request, dict):
            self.out.send({"id": None, "error": {"error_type": "ProtocolError", "error": "request is not an object"}})
            return True
        op = request.get("op", "call")
        rid = request.get("id")
        if op == "ping":
            self.out.send({"id": rid, "pong": request.get("token"), "in_flight": self._in_flight,
                           "workers": self.runners.live()})
        elif op == "bye":
            self.out.send({"id": rid, "bye": True})
            return False
        elif op in ("call", "locate"):
            with self._lock:
                self._in_flight += 1
            threading.Thread(target=self._run, args=(op, request), name=f"hub-{op}-{rid}", daemon=True).start()
        else:
            self.out.send({"id": rid, "error": {"error_type": "ProtocolError", "error": f"unknown op {op!r}"}})
        return True

    def _run(self, op: str, request: dict) -> None:
        rid = request.get("id")
        try:
            self.out.send(self._call(request) if op == "call" else self._locate(request))
        except Exception as e:  # noqa: BLE001 -- the hub outlives any one bad request
            self.out.send({"id": rid, "error": {"error_type": type(e).__name__, "error": str(e) or repr(e),
                                                "traceback": traceback.format_exc(limit=-8)}})
        finally:
            with self._lock:
                self._in_flight -= 1

    def _locate(self, request: dict) -> dict:
        rid = request.get("id")
        try:
            return {"id": rid, "locate": self.locator.locate(request.get("target"))}
        except NetconformError as e:
            return {"id": rid, "error": {"error_type": type(e).__name__, "error": str(e),
                                         "evidence": list(getattr(e, "evidence", []))}}

    def _call(self, request: dict) -> dict:
        rid, probe = request.get("id"), request.get("probe")
        t0 = time.monotonic()
        try:
            loc = self.locator.locate(request.get("target"))
        except NetconformError as e:
            call = ProbeCall(probe=str(probe), status="error", error_type=type(e).__name__, error=str(e),
                             duration_s=round(time.monotonic() - t0, 6))
            return {"id": rid, "call": call.to_dict(), "evidence": list(getattr(e, "evidence", []))}
        expect = request.get("expect")
        if expect is not None and list(expect) != [loc["dev"], loc["inode"]]:
            call = ProbeCall(probe=str(probe), status="error", error_type="ResolveError",
                             error=f"the target's namespace is now net:[{loc['inode']}] ({loc['netns_path']}), not "
                                   f"net:[{list(expect)[-1]}] it was located in (the pod was recreated?)")
            return {"id": rid, "call": call.to_dict(), "netns": loc}
        runner = self.runners.acquire(loc["netns_path"])
        try:
            call = runner.call(probe, request.get("kwargs") or {}, float(request.get("timeout") or 10.0))
        finally:
            self.runners.release(runner)
        return {"id": rid, "call": call.to_dict(), "netns": loc}


def _payload_versions(path: str) -> dict:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("netconform_payload.json")).get("versions", {})
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def _lines(fd: int, pending: bytes, silence: float):
    """Lines from `fd`; ends with ("eof"|"error"|"silence", detail) as its last item."""
    buf = bytearray(pending)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    last = time.monotonic()
    while True:
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            yield line
            continue
        quiet_for = time.monotonic() - last
        if quiet_for >= silence:
            yield ("silence", f"nothing arrived for {quiet_for:.0f} s")
            return
        if not poller.poll(int((silence - quiet_for) * 1000) + 1):
            continue
        try:
            chunk = os.read(fd, 1 << 20)
        except OSError as e:
            yield ("error", f"reading stdin failed: {e}")
            return
        if not chunk:
            yield ("eof", "stdin closed")
            return
        last = time.monotonic()
        buf += chunk


def _say(text: str) -> None:
    # stderr may be a stalled pipe as well: the exit path waits on it for a second at most.
    t = threading.Thread(target=lambda: os.write(2, f"netconform hub {os.getpid()}: {text}\n".encode()),
                         daemon=True)
    t.start()
    t.join(1.0)


def serve(*, pending: bytes = b"", payload: dict | None = None, options: dict | None = None,
          proto_in: int = 0, proto_out: int = 1) -> int:
    """Answer requests on `proto_in` / `proto_out` until bye, EOF or silence; never returns
    normally (os._exit: probe threads still hanging are abandoned with their workers killed)."""
    opts = {"silence_timeout": DEFAULT_SILENCE_TIMEOUT, "host_root": "/host", "max_workers": 0, **(options or {})}
    opts["silence_timeout"] = float(opts["silence_timeout"])
    opts["max_workers"] = int(opts["max_workers"]) or _default_max_workers()
    # The protocol keeps private copies of the fds; fd 1 becomes stderr for whatever prints.
    proto_in, proto_out = os.dup(proto_in), os.dup(proto_out)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    # Workers run without the image's site-packages, as the hub does (boot.py): only shipped code.
    _worker.PYTHON_FLAGS = ("-S",)
    out = _Out(proto_out)
    hub = _Hub(out, opts)
    payload = dict(payload or {})
    out.send({"netconform_hub": PROTOCOL, "ready": True, "pid": os.getpid(), "python": list(sys.version_info[:3]),
              "payload": payload, "versions": _payload_versions(payload.get("path", "")), "options": opts})
    code, why = 0, "bye"
    for item in _lines(proto_in, pending, opts["silence_timeout"]):
        if isinstance(item, tuple):
            kind, why = item
            code = {"eof": 0, "error": 1, "silence": 2}[kind]
            break
        try:
            request = json.loads(item)
        except ValueError as e:
            out.send({"id": None, "error": {"error_type": "ProtocolError", "error": f"request is not JSON: {e}"}})
            continue
        if not hub.handle(request):
            break
    _say(f"exiting ({why}); stopping {hub.runners.live()} namespace worker(s)")
    hub.runners.close_all()
    os._exit(code)
