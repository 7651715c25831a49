"""Framing on recorded byte streams: lines split anywhere across reads, and the exec websocket's
channel messages (stdout split across messages, stderr, the Status JSON, v5 close)."""
from __future__ import annotations

import json

import pytest

from netconform.remote.boot import CHUNK, payload_lines
from netconform.remote.node import LineBuffer
from netconform.remote.transport import MAX_FRAME, ChannelDemux, StderrTail, stdin_frames

# What a real boot + hub wrote on stdout (hello, ready, a pong, a call's answer), as recorded
# from `/usr/bin/python3 -I -c BOOT` on this machine.
RECORDED = (
    b'{"netconform_boot": 1, "python": [3, 11, 2], "executable": "/usr/bin/python3", "euid": 0, '
    b'"cap_eff": "000001fffeffffff", "host_pid": false, "setns": false, "pid": 25493, "cached": true}\n'
    b'{"netconform_hub":1,"ready":true,"pid":25493,"python":[3,11,2],"payload":{"sha256":"eccec1ec",'
    b'"path":"/tmp/nc/payload-eccec1ec.zip","where":"cache","cached":true},"versions":{"dnspython":"2.9.2",'
    b'"pyroute2":"0.9.7"},"options":{"silence_timeout":20.0,"host_root":"/host","max_workers":32}}\n'
    b'{"id":1,"pong":"x","in_flight":0,"workers":0}\n'
    b'{"id":2,"call":{"probe":"netinfo:addresses","status":"ok","value":[{"ifname":"lo","index":1,'
    b'"family":"inet","address":"127.0.0.1","prefixlen":8,"scope":"host","peer":null,"label":"lo",'
    b'"flags":["permanent"]}],"error":"","error_type":"","duration_s":0.002,'
    b'"where":"local /proc/25493/ns/net (net:[4026531840]) worker pid 25501","traceback":""},'
    b'"netns":{"netns_path":"/proc/25493/ns/net","dev":4,"inode":4026531840,"pid":25493,"method":"node",'
    b'"evidence":["hostNetwork debug pod"]}}\n'
)


def _lines(chunks: list[bytes]) -> list[bytes]:
    buf = LineBuffer()
    out = []
    for c in chunks:
        out.extend(buf.feed(c))
    assert buf.partial == b""
    return out


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100, 4096, len(RECORDED)])
def test_lines_survive_any_split(size):
    chunks = [RECORDED[i:i + size] for i in range(0, len(RECORDED), size)]
    lines = _lines(chunks)
    assert lines == RECORDED.rstrip(b"\n").split(b"\n")
    assert [json.loads(x).get("id") for x in lines] == [None, None, 1, 2]


def test_a_partial_line_waits_for_its_end():
    buf = LineBuffer()
    assert buf.feed(b'{"id":1,"po') == []
    assert buf.partial == b'{"id":1,"po'
    assert buf.feed(b'ng":"x"}\n{"id":2') == [b'{"id":1,"pong":"x"}']
    assert buf.feed(b"") == [] and buf.partial == b'{"id":2'
    assert buf.feed(b'}\n\n') == [b'{"id":2}', b""]  # an empty line is a line (the reader skips it)


def test_a_runaway_line_is_refused():
    buf = LineBuffer(limit=10)
    buf.feed(b"0123456789")
    with pytest.raises(ValueError):
        buf.feed(b"x")


# -- the exec websocket's channels --------------------------------------------------------------
def test_channel_demux_on_recorded_messages():
    """Messages as an API server sends them: the hello split over two stdout messages (the API
    server cuts long output at 32 KiB), stderr between them, the Status JSON itself split."""
    status = json.dumps({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                         "message": "command terminated with non-zero exit code: exit code 3",
                         "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}).encode()
    messages = [b"\x01" + RECORDED[:50], b"\x02Traceback (most recent call last):\n", b"\x01" + RECORDED[50:],
                b"\x02  boom\n", b"\xff\x00", b"\x04{}", b"\x03" + status[:20], b"\x03" + status[20:], b""]
    demux = ChannelDemux()
    out = b"".join(demux.feed(m) for m in messages)
    assert out == RECORDED
    assert demux.tail.text() == "Traceback (most recent call last):\n  boom"
    assert demux.exit_status() == "exit code 3"


def test_exit_status_forms():
    d = ChannelDemux()
    assert d.exit_status() == ""
    d.feed(b'\x03{"metadata":{},"status":"Success"}')
    assert d.exit_status() == "exit code 0"
    d = ChannelDemux()
    d.feed(b'\x03{"status":"Failure","message":"container not found (\\"netconform\\")"}')
    assert d.exit_status() == 'container not found ("netconform")'


def test_stderr_tail_keeps_the_end():
    tail = StderrTail(limit=100)
    for i in range(1000):
        tail.add(f"line {i}\n".encode())
    text = tail.text()
    assert text.endswith("line 999") and len(text) <= 100 and "line 900" not in text


def test_stdin_frames_are_at_most_one_mib_with_the_channel_byte():
    data = bytes(range(256)) * (3 * MAX_FRAME // 256 + 17)
    frames = stdin_frames(data)
    assert all(f[0] == 0 and len(f) <= MAX_FRAME for f in frames)
    assert b"".join(f[1:] for f in frames) == data
    assert len(frames) == 4
    assert stdin_frames(b"{}\n") == [b"\x00{}\n"]


def test_payload_lines_round_trip():
    import base64
    import hashlib

    data = bytes(range(256)) * 1000
    sha = hashlib.sha256(data).hexdigest()
    lines = list(payload_lines(data, sha))
    assert all(line.endswith(b"\n") and len(line) < 70_000 for line in lines)
    *chunks, end = [json.loads(line) for line in lines]
    assert base64.b64decode("".join(c["payload"] for c in chunks)) == data
    assert end == {"payload_end": sha, "size": len(data)}
    assert len(chunks) == -(-len(data) // CHUNK)
