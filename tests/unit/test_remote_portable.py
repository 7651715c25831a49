"""The controller side of remote mode runs without Linux-only modules (a laptop on macOS): the
client modules are imported, the payload built and a RemoteNode driven over a PipeTransport to
a fake hub, in an interpreter where pyroute2, the setns worker and, for netconform's own code,
fcntl and ctypes cannot be imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Speaks the hub's side of boot.py and hub.py: hello (not cached), the payload checked against
# the sha256 boot got in argv, ready, then answers.
FAKE_HUB = r"""
import base64, hashlib, json, os, sys
sha = sys.argv[1]
def out(o):
    sys.stdout.write(json.dumps(o) + "\n"); sys.stdout.flush()
out({"netconform_boot": 1, "python": list(sys.version_info[:3]), "executable": sys.executable, "euid": 0,
     "cap_eff": "000001ffffffffff", "host_pid": True, "setns": True, "pid": os.getpid(), "cached": False})
data = b""
for line in sys.stdin:
    m = json.loads(line)
    if "payload" in m:
        data += base64.b64decode(m["payload"])
    elif "payload_end" in m:
        break
if hashlib.sha256(data).hexdigest() != sha or len(data) != m["size"]:
    out({"netconform_boot": 1, "error": "payload damaged"}); sys.exit(4)
out({"netconform_hub": 1, "ready": True, "pid": os.getpid(), "payload": {"sha256": sha, "size": len(data)}})
loc = {"netns_path": "/proc/812/ns/net", "dev": 4, "inode": 4026532281, "pid": 812, "method": "cgroup", "evidence": []}
for line in sys.stdin:
    m = json.loads(line)
    op = m.get("op", "call")
    if op == "ping":
        out({"id": m["id"], "pong": m.get("token")})
    elif op == "locate":
        out({"id": m["id"], "locate": loc})
    elif op == "call":
        out({"id": m["id"], "call": {"probe": m["probe"], "status": "ok", "value": m["kwargs"], "where": "fake"},
             "netns": loc})
    elif op == "bye":
        out({"id": m["id"], "bye": True}); break
"""

DRIVER = r"""
import builtins, json, sys

BLOCKED = ("pyroute2", "netconform.runners._worker", "netconform.runners.local")
OURS_ONLY = ("fcntl", "ctypes", "termios")  # fine for the stdlib (subprocess imports fcntl), not for us

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is Linux-only here")
        return None

sys.meta_path.insert(0, Blocker())
_import = builtins.__import__

def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    # Every import statement comes through here, even of a module already loaded by the stdlib.
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and importer.startswith("netconform") and name.split(".")[0] in OURS_ONLY:
        raise ImportError(f"{importer} imports {name}")
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = guarded

import netconform.remote.payload, netconform.remote.transport, netconform.remote.node, netconform.remote.boot
import netconform.runners.remote
from netconform.remote.node import RemoteNode, node_target, pod_target
from netconform.remote.transport import PipeTransport
from netconform.runners.remote import RemoteRunner
from netconform.pids import PodRef

fake_hub, python = sys.argv[1], sys.argv[2]
node = RemoteNode(lambda argv: PipeTransport([python, "-I", "-S", "-c", fake_hub, argv[5]]), node="mac-test",
                  heartbeat_interval=0.05)
node.start()
runner = RemoteRunner(node, pod_target(PodRef("default", "web-0", uid="0f1e")))
call = runner.call("netinfo:links", {"x": 1}, timeout=30)
rtt = node.ping()
hub = node.hub_pid
node.close()
print(json.dumps({"status": call.status, "value": call.value, "where": call.where, "key": list(runner.key),
                  "sent": node.stats["payload_bytes_sent"], "size": node.payload.size, "hub": hub,
                  "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "pyroute2"
                                   or m in ("netconform.runners._worker", "netconform.runners.local"))}))
"""


def test_controller_side_needs_no_linux_modules():
    out = subprocess.run([sys.executable, "-c", DRIVER, FAKE_HUB, sys.executable], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == "ok" and got["value"] == {"x": 1}
    assert got["where"] == "remote node mac-test, pod default/web-0 (net:[4026532281])"
    assert got["key"] == ["remote", "mac-test", 4, 4026532281]
    assert got["sent"] == got["size"] > 0  # the payload went over the pipe and matched its hash
    assert got["leaked"] == []
    assert not Path(f"/proc/{got['hub']}").exists() or "Z" in Path(f"/proc/{got['hub']}/stat").read_text()
