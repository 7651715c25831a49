"""Where probes run: the one-method runner interface and the `ProbeCall` record it returns.

A probe is a function in `netconform.probes.<module>` that takes JSON-able keyword arguments and
returns a dataclass or a JSON-able value. A runner runs it somewhere (inside a network namespace
on this node, inside a debug pod, ...) and always answers with a `ProbeCall`: a hung or crashing
probe becomes status "timeout" or "error", never an exception in the caller.

>>> from netconform.runners.local import runner_for
>>> call = runner_for("/proc/1/ns/net").call("netinfo:links", {}, timeout=5)
>>> call.status, call.value[0]["name"]
('ok', 'lo')

Runners register by name (`name = "local"` on the class) and live in `netconform.runners.<name>`,
so `runner_class("local")` finds one without a central list to edit.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import ipaddress
import json
import pathlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from netconform.errors import ProbeCrashed, ProbeTimeout, UsageError

__all__ = ["PROBES_PACKAGE", "ProbeCall", "Runner", "probe_target", "runner_class", "to_jsonable"]

PROBES_PACKAGE = "netconform.probes"
Status = Literal["ok", "timeout", "error"]

_PROBE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_REGISTRY: dict[str, type[Runner]] = {}


@dataclass
class ProbeCall:
    """The outcome of running one probe: JSON-able, so it can go into a report or cross processes.

    >>> ProbeCall(probe="netinfo:links", status="timeout", error="no answer in 2.0 s").ok
    False
    """

    probe: str
    status: Status
    value: Any = None
    error: str = ""
    error_type: str = ""  # exception class name, or "Timeout" / "WorkerDied" / "WorkerStartFailed"
    duration_s: float = 0.0
    where: str = ""  # e.g. "local /run/netns/cni-1234 (net:[4026532281]) worker pid 812"
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeCall:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def raise_for_status(self) -> Any:
        """Return `value` if the probe ran, else raise ProbeTimeout / ProbeCrashed."""
        if self.status == "ok":
            return self.value
        exc = ProbeTimeout if self.status == "timeout" else ProbeCrashed
        raise exc(f"{self.probe} at {self.where}: {self.error}", probe=self.probe, where=self.where)


class Runner(ABC):
    """Runs probes somewhere. Subclasses set `name` and implement `call`.

    `call` must return within about `timeout` seconds whatever the probe does, and must not
    raise for anything the probe or its process does; it may raise ValueError / TypeError for a
    malformed request (a bug in the caller).
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @abstractmethod
    def call(self, probe: str, kwargs: dict[str, Any] | None = None, timeout: float = 10.0) -> ProbeCall:
        """Run `probe` ("module:function", module relative to netconform.probes or absolute)."""

    def close(self) -> None:
        """Release what the runner holds (processes, pods). Calling it twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runner_class(name: str) -> type[Runner]:
    """The runner registered as `name`, importing `netconform.runners.<name>` on first use.

    >>> runner_class("local").__name__
    'LocalRunner'
    """
    if name not in _REGISTRY:
        if not re.fullmatch(r"[a-z_]+", name):
            raise UsageError(f"unknown runner {name!r}")
        try:
            importlib.import_module(f"netconform.runners.{name}")
        except ModuleNotFoundError:
            pass
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown runner {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def probe_target(probe: str) -> tuple[str, str]:
    """Split "module:function" into an importable module and a function name.

    A module without a dot is taken relative to `netconform.probes`.

    >>> probe_target("netinfo:routes")
    ('netconform.probes.netinfo', 'routes')
    >>> probe_target("mychecks.probes:ping")
    ('mychecks.probes', 'ping')
    """
    if not isinstance(probe, str) or not _PROBE_RE.match(probe):
        raise ValueError(f"probe must look like 'module:function', got {probe!r}")
    module, func = probe.split(":")
    if "." not in module:
        module = f"{PROBES_PACKAGE}.{module}"
    return module, func


def to_jsonable(value: Any) -> Any:
    """Turn a probe's return value into plain JSON data (dataclasses through `dataclasses.asdict`).

    IP addresses/networks, enums and paths become strings; anything else that JSON cannot carry
    raises TypeError, because a silent `str()` would hide a probe bug.

    >>> import ipaddress
    >>> to_jsonable({"gw": ipaddress.ip_address("169.254.1.1"), "hops": (1, 2)})
    {'gw': '169.254.1.1', 'hops': [1, 2]}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k is None or isinstance(k, (int, float)):  # bool is an int; json spells them so
                k = json.dumps(k)
            elif not isinstance(k, str):
                k = to_jsonable(k)
                if not isinstance(k, str):
                    raise TypeError(f"dict key {k!r} is not JSON-able")
            out[k] = to_jsonable(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                          ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface,
                          pathlib.PurePath)):
        return str(value)
    raise TypeError(f"{type(value).__name__} value is not JSON-able: {value!r:.200}")
