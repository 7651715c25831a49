"""Run code and open sockets inside a network namespace without moving the calling thread.

setns(2) switches only the calling *thread*, and a socket stays in the namespace it was created
in for its whole life. So a short-lived helper thread enters the namespace, creates the socket
(or runs `fn`) and exits; the caller keeps using the result from any thread, e.g. an asyncio loop
in the lab process that serves hundreds of namespaces at once.

>>> sock = socket_in_netns("nc-lab-node0", socket.AF_INET, socket.SOCK_STREAM)
>>> sock.bind(("0.0.0.0", 10256))        # bound inside nc-lab-node0
>>> run_in_netns("nc-lab-node0", socket.if_nameindex)
[(1, 'lo'), (2, 'eth0')]
"""
from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


def netns_path(name: str) -> str:
    """The file that pins namespace `name`: `/run/netns/<name>`, or `name` itself if it is a path
    (e.g. `/proc/<pid>/ns/net`)."""
    if not name:
        raise ValueError("empty network namespace name")
    if "/" in name:
        return name
    return os.path.join(NETNS_RUN_DIR, name)


def _enter(netns: str) -> None:
    """Move the *current thread* into `netns`. Only ever called on a throwaway helper thread."""
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"network namespace {netns!r} does not exist ({path})") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(netns: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn(*args, **kwargs)` on a helper thread that has entered `netns`; return its result
    (or re-raise its exception) in the caller. `netns=None` runs `fn` in the caller's namespace.

    Whatever `fn` creates that is bound to a namespace (sockets, netlink handles) stays in
    `netns`; the calling thread never changes namespace.
    """
    if netns is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            _enter(netns)
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns:{netns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box.pop("error")
    return box["result"]


def socket_in_netns(netns: str | None, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A new socket that lives in `netns` (bind/connect it from any thread afterwards)."""
    return run_in_netns(netns, socket.socket, family, type, proto)


def bind_sockets(netns: str | None,
                 binds: list[tuple[str, int, int]], backlog: int = 128) -> list[socket.socket]:
    """Non-blocking sockets in `netns`, one per `(ip, port, type)`, bound (and listening for
    SOCK_STREAM), all created on one helper thread.

    Raises OSError naming the namespace and address when a bind fails (address not assigned
    in that namespace, port in use), and then leaves none of the sockets open.
    """
    def open_all() -> list[socket.socket]:
        made: list[socket.socket] = []
        try:
            for ip, port, type_ in binds:
                made.append(_bind_here(netns, ip, port, type_, backlog))
        except BaseException:
            for s in made:
                s.close()
            raise
        return made

    return run_in_netns(netns, open_all)


def bound_socket(netns: str | None, ip: str, port: int, type: int = socket.SOCK_STREAM,
                 backlog: int = 128) -> socket.socket:
    """One socket from `bind_sockets` (see there)."""
    return bind_sockets(netns, [(ip, port, type)], backlog)[0]


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # socket(7)
UDP_RCVBUF = 4 << 20


def _bind_here(netns: str | None, ip: str, port: int, type_: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, type_)
    try:
        if type_ == socket.SOCK_STREAM:
            # a restarted server must rebind at once although old connections sit in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # A suite asks every replica dozens of questions at once; the default receive buffer
            # (~200 small datagrams) would drop a burst silently while the lab's loop is busy,
            # which no real CoreDNS on its own machine would. FORCE: root may exceed rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)
        sock.bind((ip, port))
        if type_ == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        kind = "tcp" if type_ == socket.SOCK_STREAM else "udp"
        raise OSError(exc.errno, f"cannot bind {kind} {ip}:{port} in netns {netns or '(current)'}: "
                                 f"{exc.strerror}") from exc
    return sock
