"""A probe module for the evidence bundle: run read-only commands (`ip route show table all`,
`iptables-save`, ...) in the namespace of the runner's worker and return what they printed.

Runs inside a netns worker (`runner.call("netconform.report.commands:run_all", {...})`): the
worker has entered the target's network namespace, so the commands see the pod's or node's
routes, rules and tables. Arguments are lists, never shell strings.

>>> run_all([["ip", "rule", "show"]], timeout=5)[0].returncode
0
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

MAX_OUTPUT = 4 * 1024 * 1024  # a node's iptables-save can be large; more than this is noise


@dataclass
class CommandResult:
    """What one command printed (`error` is set when it could not run at all)."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    error: str = ""


def run(argv: list[str], timeout: float = 10.0) -> CommandResult:
    """Run one command; a missing binary or a timeout is a result, not an exception."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return CommandResult(argv, None, "", "", time.monotonic() - start, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(argv, None, "", "", time.monotonic() - start, f"no exit in {timeout:.0f} s")
    except OSError as e:
        return CommandResult(argv, None, "", "", time.monotonic() - start, f"{argv[0]}: {e.strerror}")
    return CommandResult(argv, proc.returncode, proc.stdout[:MAX_OUTPUT].decode(errors="replace"),
                         proc.stderr[:MAX_OUTPUT].decode(errors="replace"), round(time.monotonic() - start, 4))


def run_all(commands: list[list[str]], timeout: float = 10.0) -> list[CommandResult]:
    """Run each command in turn (one runner round trip for a whole folder of outputs)."""
    return [run(argv, timeout) for argv in commands]
