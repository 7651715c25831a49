"""Loopback endpoints shared by the probe unit tests."""
from __future__ import annotations

import socket

import pytest


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that accepts connections."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def closed_port():
    """A TCP port on 127.0.0.1 where nothing listens: the kernel answers RST (refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
