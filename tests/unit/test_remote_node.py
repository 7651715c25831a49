"""RemoteNode against scripted hubs: boot (cached or not), calls multiplexed from threads and
answered out of order and split across reads, heartbeats, timeouts, session loss and reconnect,
boot failures. No real hub and no timing assertions: waits are for conditions."""
from __future__ import annotations

import base64
import hashlib
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from netconform.errors import PidNotFound
from netconform.remote.node import RemoteNode, RemoteUnavailable, node_target, pod_target
from netconform.remote.payload import Payload
from netconform.remote.transport import Transport, TransportError
from netconform.pids import PodRef
from netconform.runners.remote import RemoteRunner

WAIT = 60.0  # for a condition that should hold soon; only a broken node waits it out
DATA = b"PK fake payload " * 1000
PAYLOAD = Payload(data=DATA, sha256=hashlib.sha256(DATA).hexdigest(), files=("x.py",), versions={})
LOC = {"netns_path": "/proc/812/ns/net", "dev": 4, "inode": 4026532281, "pid": 812, "method": "cgroup",
       "evidence": ["cgroup: pid 812 runs in container 4b1f"]}


def _hello(cached: bool, **extra) -> dict:
    return {"netconform_boot": 1, "python": [3, 13, 1], "executable": "/usr/local/bin/python3", "euid": 0,
            "cap_eff": "000001ffffffffff", "host_pid": True, "setns": True, "pid": 7, "cached": cached, **extra}


READY = {"netconform_hub": 1, "ready": True, "pid": 7, "python": [3, 13, 1], "payload": {}, "versions": {},
         "options": {}}


class ScriptedHub(Transport):
    """A transport whose far end is `answer(request) -> list of replies` (None: stay silent).

    Output is cut into `split`-byte pieces, so every reply crosses read boundaries.
    """

    def __init__(self, argv, answer, *, cached=True, split=5, hello=None, ready=READY):
        self.argv = argv
        self.description = "scripted hub"
        self.answer = answer
        self.split = split
        self.sent: list[dict] = []
        self.payload = bytearray()
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = threading.Event()
        self.ready = ready
        self._emit(hello if hello is not None else _hello(cached))
        self.cached = cached
        if cached and ready is not None:
            self._emit(ready)

    def _emit(self, obj) -> None:
        data = (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n"
        for i in range(0, len(data), self.split):
            self._out.put(data[i:i + self.split])

    def send(self, data: bytes) -> None:
        if self.closed.is_set():
            raise TransportError("closed")
        for line in data.splitlines():
            msg = json.loads(line)
            if "payload" in msg:
                self.payload += base64.b64decode(msg["payload"])
                continue
            if "payload_end" in msg:
                assert hashlib.sha256(self.payload).hexdigest() == msg["payload_end"]
                if self.ready is not None:
                    self._emit(self.ready)
                continue
            self.sent.append(msg)
            for reply in self.answer(msg) or []:
                self._emit(reply)

    def read(self) -> bytes:
        chunk = self._out.get()
        return chunk or b""

    def end(self) -> None:
        """The far end goes away (stdout EOF)."""
        self._out.put(None)

    def close(self) -> None:
        self.closed.set()
        self._out.put(None)

    def stderr_tail(self) -> str:
        return "hub: something on stderr"


def standard(msg):
    op = msg.get("op", "call")
    if op == "ping":
        return [{"id": msg["id"], "pong": msg.get("token")}]
    if op == "bye":
        return [{"id": msg["id"], "bye": True}]
    if op == "locate":
        if msg["target"].get("pod", {}).get("name") == "gone":
            return [{"id": msg["id"], "error": {"error_type": "PidNotFound", "error": "no process of default/gone",
                                                "evidence": ["cri: crictl not found; skipped"]}}]
        return [{"id": msg["id"], "locate": LOC}]
    if op == "call":
        if msg["probe"] == "test:silent":
            return None
        return [{"id": msg["id"], "call": {"probe": msg["probe"], "status": "ok", "value": msg["kwargs"],
                                           "where": "local /proc/812/ns/net (net:[4026532281]) worker pid 900"},
                 "netns": LOC}]
    return [{"id": msg.get("id"), "error": {"error_type": "ProtocolError", "error": "?"}}]


class Factory:
    """connect(argv) for RemoteNode: a new ScriptedHub per session, kept for inspection."""

    def __init__(self, answer=standard, **kw):
        self.answer, self.kw, self.made = answer, kw, []

    def __call__(self, argv):
        kw = dict(self.kw)
        if self.made and "cached" not in kw:
            kw["cached"] = True  # the payload stayed in the pod's cache dir
        hub = ScriptedHub(argv, self.answer, **kw)
        self.made.append(hub)
        return hub


def _node(factory, **kw) -> RemoteNode:
    kw.setdefault("heartbeat_interval", 3600)
    return RemoteNode(factory, node="ip-10-0-1-5", debug_pod="netconform/nc-ip-10-0-1-5-1234", payload=PAYLOAD,
                      call_grace=0.5, **kw)


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.01)


def test_boot_sends_the_payload_only_when_not_cached():
    f = Factory(cached=False)
    node = _node(f)
    node.start()
    hub = f.made[0]
    assert bytes(hub.payload) == DATA
    assert hub.argv[:3] == ["python3", "-I", "-c"] and hub.argv[4:6] == ["/run/netconform", PAYLOAD.sha256]
    assert node.stats["payload_bytes_sent"] == len(DATA) and node.problems == []
    assert node.hub_pid == 7
    node.close()
    assert hub.sent[-1]["op"] == "bye" and hub.closed.is_set()

    f = Factory(cached=True)
    node = _node(f)
    node.start()
    assert f.made[0].payload == b"" and node.stats["payload_bytes_sent"] == 0
    node.close()


def test_calls_from_many_threads_are_matched_by_id():
    f = Factory()
    node = _node(f)
    target = pod_target(PodRef("default", "web-0", uid="0f1e"))
    with ThreadPoolExecutor(16) as pool:
        calls = list(pool.map(lambda i: node.call(target, "netinfo:links", {"n": i}, timeout=WAIT), range(200)))
    assert [c.value for c in calls] == [{"n": i} for i in range(200)]
    assert {c.status for c in calls} == {"ok"}
    assert calls[0].where.startswith("remote node ip-10-0-1-5 via debug pod netconform/nc-ip-10-0-1-5-1234: local ")
    sent = [m for m in f.made[0].sent if m.get("op") == "call"]
    assert len({m["id"] for m in sent}) == 200 and sent[0]["target"] == target
    node.close()


def test_answers_out_of_order():
    held: list[dict] = []

    def answer(msg):
        if msg.get("op") != "call":
            return standard(msg)
        held.append(msg)
        if len(held) < 3:
            return None
        return [r for m in reversed(held) for r in standard(m)]  # the last asked, answered first

    node = _node(Factory(answer))
    with ThreadPoolExecutor(3) as pool:
        futs = [pool.submit(node.call, node_target(), "netinfo:links", {"n": i}, WAIT) for i in range(3)]
        _until(lambda: len(held) == 3, "three calls sent")
        assert [f.result().value for f in futs] == [{"n": 0}, {"n": 1}, {"n": 2}]
    node.close()


def test_a_call_without_answer_times_out_and_never_hangs():
    node = _node(Factory())
    c = node.call(node_target(), "test:silent", {}, timeout=0.2)
    assert (c.status, c.error_type) == ("timeout", "Timeout")
    assert "probe timeout 0.2 s" in c.error
    assert node.call(node_target(), "netinfo:links", {}, timeout=WAIT).ok  # the session is fine
    node.close()


def test_malformed_requests_raise_like_localrunner():
    node = _node(Factory())
    with pytest.raises(ValueError):
        node.call(node_target(), "not a probe")
    with pytest.raises(TypeError):
        node.call(node_target(), "netinfo:links", {"x": object()})
    with pytest.raises(ValueError):
        node.call(node_target(), "netinfo:links", {}, timeout=0)
    node.close()


def test_heartbeat_pings_and_a_silent_hub_is_declared_dead():
    alive = threading.Event()
    alive.set()

    def answer(msg):
        if msg.get("op") == "ping" and not alive.is_set():
            return None
        return standard(msg)

    f = Factory(answer)
    node = _node(f, heartbeat_interval=0.02, dead_after=0.5)
    node.start()
    _until(lambda: sum(m.get("op") == "ping" for m in f.made[0].sent) >= 5, "pings sent")
    _until(lambda: node.rtt is not None, "a pong's round trip measured")
    assert node.alive
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(node.call, node_target(), "test:silent", {}, WAIT)
        _until(lambda: any(m.get("probe") == "test:silent" for m in f.made[0].sent), "the call sent")
        alive.clear()  # from now on the hub says nothing at all
        c = stuck.result(timeout=WAIT)
    assert (c.status, c.error_type) == ("error", "SessionLost")
    assert "heartbeat lost" in c.error and f.made[0].closed.is_set()
    # the next call reconnects once; the payload is cached there
    alive.set()
    c = node.call(node_target(), "netinfo:links", {"again": 1}, timeout=WAIT)
    assert c.ok and c.value == {"again": 1}
    assert len(f.made) == 2 and f.made[1].payload == b""
    assert (node.stats["boots"], node.stats["reconnects"], node.stats["sessions_lost"]) == (2, 1, 1)
    node.close()


def test_in_flight_calls_fail_as_session_lost_when_the_stream_ends():
    f = Factory()
    node = _node(f)
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(node.call, node_target(), "test:silent", {}, WAIT) for _ in range(4)]
        _until(lambda: sum(m.get("probe") == "test:silent" for m in f.made[0].sent) == 4, "calls sent")
        f.made[0].end()
        calls = [fu.result(timeout=WAIT) for fu in futs]
    assert {(c.status, c.error_type) for c in calls} == {("error", "SessionLost")}
    assert "ended" in calls[0].error
    node.close()


def test_reconnects_are_bounded_and_can_be_refused():
    f = Factory()
    node = _node(f, max_reconnects=1)
    node.start()
    f.made[0].end()
    _until(lambda: not node.alive, "session lost")
    assert node.call(node_target(), "netinfo:links", {}, timeout=WAIT).ok
    f.made[1].end()
    _until(lambda: not node.alive, "second session lost")
    c = node.call(node_target(), "netinfo:links", {}, timeout=WAIT)
    assert (c.status, c.error_type) == ("error", "BootFailed") and "lost 2 times" in c.error
    assert len(f.made) == 2
    node.close()

    f = Factory()
    node = _node(f, before_reconnect=lambda: "pod netconform/nc-ip-10-0-1-5-1234 was deleted")
    node.start()
    f.made[0].end()
    _until(lambda: not node.alive, "session lost")
    c = node.call(node_target(), "netinfo:links", {}, timeout=WAIT)
    assert c.error_type == "BootFailed" and "was deleted" in c.error and len(f.made) == 1
    node.close()


def test_an_old_python_is_one_clear_line():
    f = Factory(hello=_hello(False, python=[3, 9, 16], executable="/usr/bin/python3",
                             error="python 3.9.16 is older than 3.11"), ready=None)
    node = _node(f)
    with pytest.raises(RemoteUnavailable) as e:
        node.start()
    msg = str(e.value)
    assert "Python 3.9.16" in msg and "--debug-image" in msg and "\n" not in msg
    c = node.call(node_target(), "netinfo:links", {}, timeout=WAIT)  # fails at once, no second boot
    assert c.error_type == "BootFailed" and "--debug-image" in c.error and len(f.made) == 1


def test_no_python_or_a_dead_stream_says_what_was_seen():
    f = Factory(hello=b"exec: python3: not found", ready=None)
    with pytest.raises(RemoteUnavailable, match="did not start netconform's bootstrap.*--debug-image"):
        _node(f).start()

    def dead(argv):
        hub = ScriptedHub(argv, standard, hello=b"", ready=None)
        hub._out = queue.SimpleQueue()
        hub._out.put(None)  # EOF before any hello
        return hub

    with pytest.raises(RemoteUnavailable, match="ended before hello.*stderr: hub: something on stderr"):
        _node(dead).start()

    def refused(argv):
        raise TransportError("exec into debug pod netconform/x failed: Handshake status 403 Forbidden")

    with pytest.raises(RemoteUnavailable, match="403 Forbidden"):
        _node(refused).start()


def test_stray_output_after_boot_is_a_protocol_error():
    def answer(msg):
        if msg.get("probe") == "test:garbage":
            return [b"Traceback (most recent call last):"]
        return standard(msg)

    node = _node(Factory(answer))
    c = node.call(node_target(), "test:garbage", {}, timeout=WAIT)
    assert c.error_type == "SessionLost" and "protocol error" in c.error
    node.close()


def test_locate_and_the_runner():
    f = Factory()
    node = _node(f)
    loc = node.locate(pod_target(PodRef("default", "web-0", uid="0f1e")))
    assert (loc.netns_path, loc.inode, loc.pid, loc.key) == ("/proc/812/ns/net", 4026532281, 812, (4, 4026532281))
    with pytest.raises(PidNotFound) as e:
        node.locate(pod_target(PodRef("default", "gone")))
    assert e.value.evidence == ["cri: crictl not found; skipped"]

    r = RemoteRunner(node, pod_target({"metadata": {"namespace": "default", "name": "web-0", "uid": "0F1E"},
                                       "status": {"podIP": "10.0.1.12"}}))
    assert r.name == "remote" and r.key == ("remote", "ip-10-0-1-5", 4, 4026532281)
    assert r.where == ("remote node ip-10-0-1-5 via debug pod netconform/nc-ip-10-0-1-5-1234, "
                       "pod default/web-0 (net:[4026532281])")
    c = r.call("netinfo:routes", {"family": "inet"}, timeout=WAIT)
    assert c.ok and c.where == r.where + " worker pid 900"
    sent = [m for m in f.made[0].sent if m.get("probe") == "netinfo:routes"][0]
    assert sent["expect"] == [4, 4026532281]
    assert sent["target"]["pod"]["uid"] == "0f1e" and sent["target"]["pod"]["pod_ip"] == "10.0.1.12"
    node.close()
    c = r.call("netinfo:routes", {}, timeout=WAIT)
    assert c.error_type == "RunnerClosed"
