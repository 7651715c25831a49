"""The local runner's child process: enter a network namespace first, then serve probes.

    python -m netconform.runners._worker serve NETNS_PATH PARENT_PID
    python -m netconform.runners._worker addresses NETNS_PATH...

`serve` answers one JSON line per request on its stdin/stdout (protocol in runners/local.py).
`addresses` enters each namespace in turn and prints one JSON object: path -> addresses (used by
the pod -> pid resolver to find the namespace holding a pod IP).

Only modules that hold no network state are imported before `enter_netns`: scapy caches
interfaces and routes at import (shared/reference/lab-notes.md), and setns(2) moves only the
calling thread, so this process enters the namespace before it starts any thread, and imports
probes after entering; the threads that then run probes inherit the namespace.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

CLONE_NEWNET = 0x40000000
MAX_CONCURRENT_PROBES = 64  # per namespace; more calls queue (each has its own timeout in the parent)
# Probes are the only timed work of a run. Ahead of pytest's own processes (xdist workers
# importing, collecting, writing reports), a busy machine cannot eat their timeouts: on a loaded
# 2-core machine, healthy sub-millisecond answers took 0.5-1 s at equal priority.
PROBE_NICE = -5
# Imported before "ready", so no probe pays an import inside its own timeout. Never scapy: it
# caches interfaces and routes at import (see above).
WARM_IMPORTS = ("netconform.probes.vip", "netconform.probes.tcp", "netconform.probes.https",
                "netconform.probes.dns", "netconform.probes.icmp", "netconform.probes.netinfo",
                "netconform.runners.base", "dns.message", "dns.name", "dns.rdatatype", "dns.rcode",
                "dns.flags", "http.client", "ssl", "cryptography.x509", "pyroute2")
PR_SET_PDEATHSIG = 1
# Interpreter options for the workers `command` starts. The remote hub sets ("-S",): in a debug
# pod the workers then import only the stdlib and the shipped payload (on PYTHONPATH), never what
# the image's site-packages happen to hold.
PYTHON_FLAGS: tuple[str, ...] = ()
_libc = ctypes.CDLL(None, use_errno=True)


def set_parent_death_signal(parent_pid: int) -> None:
    """Get SIGKILLed when the parent goes away, even in the middle of a hung probe."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    # The parent may have died before prctl took effect; then nobody would ever signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


def enter_netns(path: str) -> tuple[int, int]:
    """setns(2) the calling thread into the network namespace at `path`; return its (dev, inode)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}", path)
    finally:
        os.close(fd)
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def _startup_error(exc: OSError, path: str) -> dict:
    import errno

    if exc.errno == errno.EPERM:
        # setns into another netns needs CAP_SYS_ADMIN; opening /proc/<pid>/ns/net needs ptrace
        # access to that process (CAP_SYS_PTRACE for other users' processes).
        return {"error_type": "PermissionMissing",
                "error": f"CAP_SYS_ADMIN is needed to enter {path}: {exc}"}
    if exc.errno == errno.EACCES:
        return {"error_type": "PermissionMissing",
                "error": f"CAP_SYS_PTRACE (or root) is needed to open {path}: {exc}"}
    if exc.errno == errno.EINVAL:
        return {"error_type": "ResolveError", "error": f"{path} is not a network namespace: {exc}"}
    return {"error_type": type(exc).__name__, "error": f"cannot enter {path}: {exc}"}


def _extend_sys_path() -> None:
    # The parent's import path (pytest rootdir, SRE probe modules), after our own entries so the
    # standard library and netconform itself are never shadowed.
    try:
        extra = json.loads(os.environ.pop("NETCONFORM_WORKER_SYSPATH", "[]"))
    except ValueError:
        return
    sys.path.extend(p for p in extra if isinstance(p, str) and p not in sys.path)


def _ahead_of_the_suite() -> None:
    """Raise this worker's priority (root only) and import the probes, before any thread exists:
    threads inherit both (Linux nice values are per thread)."""
    import importlib

    try:
        os.setpriority(os.PRIO_PROCESS, 0, PROBE_NICE)
    except OSError:  # not root: probes still work, only less steadily on a busy machine
        pass
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra missing: the probe that needs it says so itself
            pass


def _write_line(fd: int, obj: dict) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    while data:
        data = data[os.write(fd, data):]


def _answer(request: dict) -> dict:
    import importlib
    import traceback

    from netconform.runners.base import probe_target, to_jsonable

    rid = request.get("id")
    try:
        module, func = probe_target(request["probe"])
        fn = getattr(importlib.import_module(module), func)
        value = to_jsonable(fn(**(request.get("kwargs") or {})))
        return {"id": rid, "ok": True, "value": value}
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- any probe failure is a reply; SystemExit too
        return {"id": rid, "ok": False, "error_type": type(e).__name__, "error": str(e) or repr(e),
                "traceback": traceback.format_exc(limit=-8)}


def serve(netns_path: str, parent_pid: int) -> int:
    """Enter `netns_path`, say ready, then answer requests until stdin closes.

    Each request runs in a thread of its own, so a slow probe (a timeout on a dead path) does not
    hold up the others. Threads are made only after setns(2), and a new thread inherits the
    namespaces of the thread that creates it: every probe runs inside `netns_path`.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    set_parent_death_signal(parent_pid)
    # Keep the protocol on private fds; probes that print, or read stdin, then cannot corrupt it.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    try:
        dev, ino = enter_netns(netns_path)
    except OSError as e:
        _write_line(proto_out, {"ready": False, **_startup_error(e, netns_path)})
        return 2
    _extend_sys_path()
    _ahead_of_the_suite()
    _write_line(proto_out, {"ready": True, "pid": os.getpid(), "netns": [dev, ino]})

    write_lock = threading.Lock()

    def reply(obj: dict) -> None:
        with write_lock:
            _write_line(proto_out, obj)

    def run(request: dict) -> None:
        t0 = time.monotonic()
        answer = _answer(request)
        answer["duration_s"] = round(time.monotonic() - t0, 6)
        try:
            reply(answer)
        except ValueError as e:  # e.g. a circular value; the pipe itself is still fine
            reply({"id": answer.get("id"), "ok": False, "error_type": "TypeError",
                   "error": f"probe value is not JSON-able: {e}"})

    pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_PROBES, thread_name_prefix="probe")
    reader = os.fdopen(proto_in, "rb")
    for raw in reader:
        try:
            request = json.loads(raw)
        except ValueError as e:
            reply({"id": None, "ok": False, "error_type": "ProtocolError", "error": f"request is not JSON: {e}"})
            continue
        pool.submit(run, request)
    # stdin closed: the parent is done with us. Probes still running are abandoned, not awaited.
    os._exit(0)


def addresses(paths: list[str]) -> int:
    """Print {path: [address, ...] or {"error": ...}} for each network namespace path."""
    out: dict[str, object] = {}
    for path in paths:
        try:
            enter_netns(path)
        except OSError as e:
            out[path] = {"error": _startup_error(e, path)["error"]}
            continue
        # Imported after the first setns; IPRoute opens its netlink socket in the current netns.
        from netconform.probes.netinfo import addresses as list_addresses

        try:
            out[path] = sorted({a.address for a in list_addresses()})
        except Exception as e:  # noqa: BLE001 -- one bad namespace must not hide the others
            out[path] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))
    return 0


def command(mode: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start this module in `mode` with the parent's netconform."""
    import netconform

    env = dict(os.environ)
    # The child must import the same netconform as the parent, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(netconform.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    # ... and find probes the way the parent would (pytest rootdir, SRE probe modules).
    env["NETCONFORM_WORKER_SYSPATH"] = json.dumps([p or os.getcwd() for p in sys.path])
    return [sys.executable, *PYTHON_FLAGS, "-m", "netconform.runners._worker", mode, *args], env


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "serve":
        return serve(argv[1], int(argv[2]))
    if len(argv) >= 1 and argv[0] == "addresses":
        return addresses(argv[1:])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
