"""Files as the target sees them, read by the runner wherever it runs (node or debug pod).

A pod's own files are read through its process's root, `/proc/<pid>/root/...` (its mount
namespace), which works from the node and from a hostPID debug pod alike; checks never open
paths on the machine pytest runs on.

>>> read_text("/proc/812/root/etc/resolv.conf").text.splitlines()[0]
'search default.svc.cluster.local svc.cluster.local cluster.local'
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

__all__ = ["FileText", "read_text"]

MAX_BYTES = 256 * 1024  # resolv.conf, subnet.env, CNI configs: small; a runaway file must not be


@dataclass
class FileText:
    path: str
    ok: bool
    text: str = ""
    truncated: bool = False
    error: str = ""  # strerror when not ok
    errno_name: str = ""  # "ENOENT", "EACCES", ...
    size: int | None = None


def read_text(path: str, max_bytes: int = MAX_BYTES) -> FileText:
    """Read up to `max_bytes` of `path` as UTF-8 (undecodable bytes replaced); never raises for
    an unreadable file: `ok` False with the reason."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        return FileText(path, False, error=e.strerror or str(e), errno_name=errno.errorcode.get(e.errno or 0, ""))
    return FileText(path, True, data[:max_bytes].decode("utf-8", "replace"), len(data) > max_bytes, size=size)
