"""The bootstrap: a few KB of stdlib-only Python passed as `python3 -I -c BOOT`, which gets the
payload (payload.py) into the debug pod and starts the hub (hub.py) on the same stdin/stdout.

    python3 -I -c BOOT <cache_dir> <sha256> [<hub options JSON>]

Conversation on the exec stream (one JSON object per line, both ways):

1. boot → client, the hello:
   `{"netconform_boot": 1, "python": [3, 13, 1], "executable": "/usr/local/bin/python3",
   "euid": 0, "cap_eff": "000001ffffffffff", "host_pid": true, "setns": true, "pid": 4242,
   "cached": false}`. `host_pid`: /proc/1/ns/net can be read (hostPID and enough privilege).
   On an interpreter older than 3.11 the hello also has `"error": "..."` and boot exits with 3
   (the source is kept valid Python 3.0 syntax so that it gets this far).
2. client → boot, only if `cached` is false: the zip as lines `{"payload": "<base64>"}` (at most
   64 KiB of base64 each), then `{"payload_end": <sha256>, "size": <bytes>}`.
3. boot checks size and sha256 (a mismatch: `{"netconform_boot": 1, "error": ...}`, exit 4),
   keeps the zip, puts it first on sys.path, drops site-packages from it (the pod runs what was
   shipped plus the stdlib, never the image's own dnspython or cryptography), imports
   `netconform.remote.hub` and hands over: from then on the hub's protocol (hub.py).

Where the zip is kept: `<cache_dir>/payload-<sha256>.zip`, written atomically (a temporary name
in the same directory, then rename), so a reconnect only pays reading and hashing it. The
cache dir is the debug pod's memory-backed emptyDir; boot never creates it. If it is missing or
not writable, the zip lives in an anonymous memory file (memfd) instead, imported through
`/proc/<boot pid>/fd/<n>` (which the hub's namespace workers can open too) and gone when the
hub exits: nothing is ever written outside the cache dir.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["BOOT", "CHUNK", "MIN_PYTHON", "BootError", "command", "hello_problems", "parse_hello",
           "payload_lines"]

MIN_PYTHON = (3, 11)  # dnspython 2.9 needs it (its Requires-Python), and the probes' syntax does
CHUNK = 48 * 1024  # raw bytes per payload line: 64 KiB of base64, far below a 1 MiB frame
CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_RAW = 21, 19, 13

BOOT = r'''
import sys, os, json, hashlib, base64, select
def out(o):
    b = (json.dumps(o) + "\n").encode()
    while b:
        b = b[os.write(1, b):]
def cap_eff():
    try:
        with open("/proc/self/status") as f:
            for l in f:
                if l.startswith("CapEff:"):
                    return l.split()[1]
    except OSError:
        pass
    return ""
def host_pid():
    try:
        os.stat("/proc/1/ns/net")
        os.close(os.open("/proc/1/ns/net", os.O_RDONLY))
        return True
    except OSError:
        return False
hello = {"netconform_boot": 1, "python": list(sys.version_info[:3]), "executable": sys.executable,
         "euid": os.geteuid(), "cap_eff": cap_eff(), "host_pid": host_pid(), "setns": hasattr(os, "setns"),
         "pid": os.getpid(), "cached": False}
if sys.version_info[:2] < (3, 11):
    hello["error"] = "python %d.%d.%d is older than 3.11" % tuple(sys.version_info[:3])
    out(hello)
    sys.exit(3)
cache_dir, sha = sys.argv[1], sys.argv[2]
opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
silence = float(opts.get("silence_timeout", 90))
path = os.path.join(cache_dir, "payload-" + sha + ".zip")
data = None
try:
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha:
        data = None
except OSError:
    pass
hello["cached"] = data is not None
out(hello)
buf = bytearray()
def line():
    while True:
        i = buf.find(b"\n")
        if i >= 0:
            l = bytes(buf[:i]); del buf[:i + 1]
            return l
        if not select.select([0], [], [], silence)[0]:
            sys.exit(6)
        c = os.read(0, 1 << 20)
        if not c:
            sys.exit(5)
        buf.extend(c)
where = "cache"
if data is None:
    parts = []
    while True:
        m = json.loads(line())
        if "payload" in m:
            parts.append(base64.b64decode(m["payload"]))
        elif "payload_end" in m:
            break
    data = b"".join(parts)
    if len(data) != m.get("size") or hashlib.sha256(data).hexdigest() != sha:
        out({"netconform_boot": 1, "error": "payload damaged in transit: %d bytes, sha256 %s, expected %s"
             % (len(data), hashlib.sha256(data).hexdigest(), sha)})
        sys.exit(4)
    tmp = path + ".tmp-%d" % os.getpid()
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        fd = os.memfd_create("netconform-payload", 0)
        os.write(fd, data)
        path, where = "/proc/%d/fd/%d" % (os.getpid(), fd), "memory (%s: %s)" % (cache_dir, e.strerror)
sys.path[:] = [path] + [p for p in sys.path if not {"site-packages", "dist-packages"} & set(p.split(os.sep))]
from netconform.remote import hub
sys.exit(hub.serve(pending=bytes(buf), payload={"sha256": sha, "path": path, "where": where,
                                                "cached": hello["cached"]}, options=opts))
'''.strip() + "\n"


class BootError(Exception):
    """The debug pod's python3 cannot run the hub; the message is one line naming what to change."""


def command(cache_dir: str, sha256: str, options: dict[str, Any] | None = None, *,
            python: str = "python3") -> list[str]:
    """The argv to exec in the debug pod (no shell: distroless images have none)."""
    argv = [python, "-I", "-c", BOOT, cache_dir, sha256]
    if options:
        argv.append(json.dumps(options, sort_keys=True, separators=(",", ":")))
    return argv


def parse_hello(line: bytes, *, where: str = "the debug pod") -> dict[str, Any]:
    """The hello as a dict; BootError (one line, naming `--debug-image` where an image is the
    fix) when it is not a hello or says the interpreter cannot run the hub."""
    try:
        hello = json.loads(line)
    except ValueError:
        hello = None
    if not isinstance(hello, dict) or hello.get("netconform_boot") != 1:
        raise BootError(f"{where} did not start netconform's bootstrap; it printed {line[:200]!r} "
                        "(is python3 on the image's PATH? give one that has it with --debug-image)")
    if hello.get("error"):
        version = ".".join(str(v) for v in hello.get("python") or ())
        if tuple(hello.get("python") or ())[:2] < MIN_PYTHON:
            raise BootError(f"{where} runs Python {version} ({hello.get('executable')}); remote mode needs "
                            f"python3 >= {'.'.join(map(str, MIN_PYTHON))}: give such an image with --debug-image")
        raise BootError(f"{where}: bootstrap failed: {hello['error']}")
    return hello


def hello_problems(hello: dict[str, Any]) -> list[str]:
    """What the hello says will not work (probes still run; each will fail with its reason)."""
    problems = []
    if hello.get("euid") != 0:
        problems.append(f"python3 runs as uid {hello.get('euid')}, not root (is the image's user non-root?)")
    try:
        caps = int(hello.get("cap_eff") or "0", 16)
    except ValueError:
        caps = 0
    for bit, name, why in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "enter pods' network namespaces"),
                           (CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "open other processes' /proc/<pid>/ns/net"),
                           (CAP_NET_RAW, "CAP_NET_RAW", "send ICMP probes")):
        if not caps >> bit & 1:
            problems.append(f"no {name} (needed to {why}): is the debug pod privileged?")
    if not hello.get("host_pid"):
        problems.append("/proc/1/ns/net cannot be read: the debug pod needs hostPID and privilege")
    return problems


def payload_lines(data: bytes, sha256: str) -> Iterator[bytes]:
    """The payload as boot reads it: base64 lines of CHUNK bytes each, then the end marker."""
    for i in range(0, len(data), CHUNK):
        yield b'{"payload":"' + base64.b64encode(data[i:i + CHUNK]) + b'"}\n'
    yield json.dumps({"payload_end": sha256, "size": len(data)}).encode() + b"\n"
