"""The lab's Kubernetes API server: an in-memory object store behind an aiohttp HTTPS server.

It speaks enough of the real API for kubectl 1.32 and the official Python client (37.x):
discovery, list/get/watch with label and field selectors, create/replace/patch/delete,
`meta.k8s.io/v1` Table output, `Status` errors, bearer-token auth, and `pods/exec` over the
websocket channel protocols v4/v5 (shared/reference/lab-notes.md, "Exec").

>>> store = ObjectStore(objects_from_spec(spec, ca_pem=..., api_server_url=..., created=...))
>>> server = ApiServer(store, token=token, ssl_context=ca.server_context(dir, "kube-apiserver",
...                    ips=["127.0.0.1"]), hooks=my_hooks)
>>> server.add_routes([web.get("/_lab/status", handler)])  # extra routes: before start()
>>> port = server.start()                                   # 127.0.0.1, a free port
>>> write_kubeconfig(path, server.url, ca_pem, token)
>>> server.stop()

Hooks (any object; every method optional, called from worker threads, may block):

- `on_pod_create(pod: dict) -> dict | None`: place a Pending pod created through the API (give it
  a node, IPs, a process) and return it Running (see `k8s_objects.mark_pod_running`). Returning
  None means "place it the default way"; raising `ApiError` rejects the create.
- `on_pod_delete(pod: dict) -> None`: stop what backs the pod, before it leaves the store.
- `exec_argv(pod: dict, container: str, command: list[str]) -> list[str]`: the argv that runs
  `command` in the container (e.g. `ip netns exec <ns> …`); raising `ApiError` refuses the exec.
- `pod_log(pod: dict, container: str, params: dict[str, str]) -> str | bytes`: a container's log.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import json
import logging
import os
import re
import signal
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web

from ..analysis import selectors
from ..analysis.selectors import Requirement, label_selector_from_dict  # noqa: F401 - re-exported

from netconform.lab.k8s_objects import (
    API_RESOURCES,
    KUBERNETES_VERSION,
    ResourceType,
    event_object,
    mark_pod_running,
    next_free_ip,
    pod_lifecycle_events,
    prepare_new_pod,
    resource_type_from_crd,
    ts,
)

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_STDIN, _STDOUT, _STDERR, _STATUS, _CLOSE = 0, 1, 2, 3, 255  # channel 4 (tty resize) is ignored
_PUBLIC_PATHS = ("/livez", "/readyz", "/healthz", "/version")
_TOKEN_PROTOCOL = "base64url.bearer.authorization.k8s.io."
_DEFAULT_WATCH_TIMEOUT = 1800.0


# -- errors -----------------------------------------------------------------------------------

class ApiError(Exception):
    """An error the API answers with a v1 `Status` (hooks may raise it too)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            s["details"] = self.details
        return s


def not_found(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural, **({"group": rt.group} if rt.group else {})}
    return ApiError(404, "NotFound", f'{rt.key} "{name}" not found', details)


def already_exists(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural, **({"group": rt.group} if rt.group else {})}
    return ApiError(409, "AlreadyExists", f'{rt.key} "{name}" already exists', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _no_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


# -- selectors (parsing lives in netconform.analysis.selectors) --------------------------------

def parse_label_selector(selector: str | None) -> list[Requirement]:
    """The API's answer to an unparsable selector is a 400, not a crash."""
    try:
        return selectors.parse_label_selector(selector)
    except ValueError as e:
        raise bad_request(str(e)) from None



def parse_field_selector(selector: str | None) -> list[tuple[str, str, str]]:
    """Parse `a=b,c==d,e!=f` into (path, op, value); `\\,` escapes a comma in a value."""
    out = []
    for term in re.split(r"(?<!\\),", selector or ""):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", term)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, op, value = m.group(1).strip(), m.group(2), m.group(3).replace("\\,", ",").replace("\\=", "=")
        out.append((path, "!=" if op == "!=" else "=", value))
    return out


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string value of a dotted field path (missing → "", like the apiserver's field sets)."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, (dict, list)):
        return json.dumps(cur, separators=(",", ":"))
    return cur if isinstance(cur, str) else str(cur)


def _selected(obj: dict[str, Any], labels: list[Requirement], fields: list[tuple[str, str, str]]) -> bool:
    lbls = obj.get("metadata", {}).get("labels") or {}
    if not all(r.matches(lbls) for r in labels):
        return False
    return all((field_value(obj, p) == v) == (op == "=") for p, op, v in fields)


# -- patches ----------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch; with `strategic`, lists of named objects merge by key (the
    strategic-merge-patch behaviour for containers, ports, env, conditions…)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if strategic and k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif strategic and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v)
        else:
            out[k] = merge_patch(out.get(k), v, strategic=strategic)
    return out


def _merge_list(target: list[Any], patch: list[Any]) -> list[Any]:
    items = [x for x in target + patch if isinstance(x, dict)]
    key = next((k for k in ("name", "type", "containerPort", "ip")
                if items and all(k in x for x in items)), None)
    if key is None:
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for item in patch:
        idx = next((i for i, x in enumerate(out) if x[key] == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(copy.deepcopy(item))
        else:
            out[idx] = merge_patch(out[idx], item, strategic=True)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(target)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        if not parts:
            raise bad_request("the root cannot be patched")
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path: str) -> Any:
        cur = doc
        for p in _pointer(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    try:
        for op in ops:
            kind, path = op["op"], op["path"]
            if kind in ("add", "replace", "copy", "move"):
                value = copy.deepcopy(op["value"] if kind in ("add", "replace") else get(op["from"]))
                if kind == "move":
                    src, key = parent(op["from"])
                    src.pop(int(key)) if isinstance(src, list) else src.pop(key)
                cont, key = parent(path)
                if isinstance(cont, list):
                    if kind == "replace":
                        cont[int(key)] = value
                    else:
                        cont.insert(len(cont) if key == "-" else int(key), value)
                else:
                    if kind == "replace" and key not in cont:
                        raise KeyError(key)
                    cont[key] = value
            elif kind == "remove":
                cont, key = parent(path)
                cont.pop(int(key)) if isinstance(cont, list) else cont.pop(key)
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"the test operation on {path} failed")
            else:
                raise bad_request(f"unknown JSON patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {e!r}") from None
    return doc


# -- the store --------------------------------------------------------------------------------

class ResourceRegistry:
    """Resource types by (group, version, plural), by key and by (group, kind); thread-safe."""

    def __init__(self, types: Iterable[ResourceType] = API_RESOURCES):
        self._lock = threading.Lock()
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        for t in types:
            self.add(t)

    def add(self, rt: ResourceType) -> None:
        with self._lock:
            self._by_gvr[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_plural(self, group: str, plural: str) -> None:
        with self._lock:
            for k in [k for k in self._by_gvr if k[0] == group and k[2] == plural]:
                del self._by_gvr[k]

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._by_gvr.values())

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._by_gvr.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType:
        """`pods`, `deployments.apps`, `cninodes.vpcresources.k8s.aws` (any served version)."""
        plural, _, group = key.partition(".")
        for rt in self.all():
            if rt.plural == plural and rt.group == group:
                return rt
        raise KeyError(key)

    def for_object(self, obj: dict[str, Any]) -> ResourceType:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        for rt in self.all():
            if rt.group == group and rt.kind == kind:
                return rt
        raise bad_request(f"no resource type serves {api_version} {kind}")


@dataclass(eq=False)  # unsubscribe removes this watcher, not an equal-looking one
class _Watcher:
    key: str
    namespace: str | None
    labels: list[Requirement]
    fields: list[tuple[str, str, str]]
    callback: Callable[[str, dict[str, Any]], None]

    def offer(self, etype: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = obj.get("metadata", {}).get("namespace")
        if self.namespace is not None and ns != self.namespace:
            return
        now_in = _selected(obj, self.labels, self.fields)
        was_in = old is not None and _selected(old, self.labels, self.fields)
        # Like the apiserver's watch cache: an object moving in or out of a selector is seen as
        # ADDED or DELETED by that watcher.
        if etype == "MODIFIED":
            etype = "MODIFIED" if now_in and was_in else "ADDED" if now_in else "DELETED" if was_in else ""
        elif not now_in:
            etype = ""
        if etype:
            self.callback(etype, copy.deepcopy(obj))


class ObjectStore:
    """Thread-safe in-memory objects of any resource type, with resourceVersions and watches.

    Resources are named by key (`pods`, `deployments.apps`, `securitygrouppolicies.vpcresources.k8s.aws`);
    cluster-scoped objects have namespace "". Every write bumps one store-wide resourceVersion.
    Returned objects are copies.
    """

    def __init__(self, objects: Iterable[dict[str, Any]] = (), *, history: int = 2000):
        self.registry = ResourceRegistry()
        self._lock = threading.RLock()
        self._rv = 0
        self._objs: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._history: deque[tuple[int, str, str, dict[str, Any], dict[str, Any] | None]] = deque(maxlen=history)
        self._floor = 0
        self._watchers: list[_Watcher] = []
        self.load(objects)

    # -- helpers --
    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    def _emit(self, key: str, etype: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0][0]
        self._history.append((self._rv, key, etype, copy.deepcopy(obj), copy.deepcopy(old) if old else None))
        for w in list(self._watchers):
            if w.key == key:
                try:
                    w.offer(etype, obj, old)
                except Exception:  # a broken watcher must not break writers
                    log.exception("watch callback failed")

    def _rt(self, resource: str | ResourceType) -> ResourceType:
        if isinstance(resource, ResourceType):
            return resource
        try:
            return self.registry.by_key(resource)
        except KeyError:
            raise ApiError(404, "NotFound", f"the server doesn't have a resource type \"{resource}\"") from None

    def _table(self, rt: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objs.setdefault(rt.key, {})

    def _ns(self, rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def _on_crd(self, crd: dict[str, Any], deleted: bool = False) -> None:
        s = crd.get("spec", {})
        self.registry.remove_group_plural(s.get("group", ""), s.get("names", {}).get("plural", ""))
        if not deleted:
            for rt in resource_type_from_crd(crd):
                self.registry.add(rt)

    # -- reads --
    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        rt = self._rt(resource)
        with self._lock:
            obj = self._table(rt).get((self._ns(rt, namespace), name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def list(self, resource: str | ResourceType, namespace: str | None = None,
             label_selector: str | list[Requirement] | None = None,
             field_selector: str | list[tuple[str, str, str]] | None = None) -> tuple[list[dict[str, Any]], str]:
        """Objects sorted by (namespace, name), and the store's resourceVersion at that moment."""
        rt = self._rt(resource)
        labels = parse_label_selector(label_selector) if isinstance(label_selector, str | None) else label_selector
        fields = parse_field_selector(field_selector) if isinstance(field_selector, str | None) else field_selector
        with self._lock:
            items = [copy.deepcopy(o) for (ns, _), o in sorted(self._table(rt).items())
                     if (namespace is None or not rt.namespaced or ns == namespace)
                     and _selected(o, labels, fields)]
            return items, str(self._rv)

    # -- writes --
    def load(self, objects: Iterable[dict[str, Any]]) -> None:
        """Add objects as the cluster's starting state: no watch events, fresh resourceVersions."""
        with self._lock:
            for obj in objects:
                obj = copy.deepcopy(obj)
                rt = self.registry.for_object(obj)
                meta = obj.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", ts(datetime.now(timezone.utc)))
                self._bump(obj)
                self._table(rt)[(self._ns(rt, meta.get("namespace")), meta["name"])] = obj
                if rt.kind == "CustomResourceDefinition":
                    self._on_crd(obj)
            self._floor = self._rv

    def create(self, obj: dict[str, Any], *, resource: str | ResourceType | None = None,
               namespace: str | None = None) -> dict[str, Any]:
        """Store a new object (name from generateName if unnamed); 409 if it exists."""
        obj = copy.deepcopy(obj)
        rt = self._rt(resource) if resource else self.registry.for_object(obj)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            ns = self._ns(rt, namespace or meta.get("namespace"))
            if rt.namespaced:
                meta["namespace"] = ns
                if ("", ns) not in self._objs.get("namespaces", {}):
                    raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                                   {"name": ns, "kind": "namespaces"})
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(422, "Invalid", f"{rt.kind} \"\" is invalid: metadata.name: Required value: "
                                   "name or generateName is required")
                while True:
                    name = meta["generateName"] + base64.b32encode(os.urandom(5)).decode().lower()[:5]
                    if (ns, name) not in self._table(rt):
                        break
                meta["name"] = name
            if (ns, meta["name"]) in self._table(rt):
                raise already_exists(rt, meta["name"])
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta.setdefault("creationTimestamp", ts(datetime.now(timezone.utc)))
            if rt.group and rt.kind not in ("EndpointSlice",):
                meta.setdefault("generation", 1)
            self._bump(obj)
            self._table(rt)[(ns, meta["name"])] = obj
            if rt.kind == "CustomResourceDefinition":
                self._on_crd(obj)
            self._emit(rt.key, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def replace(self, obj: dict[str, Any], *, resource: str | ResourceType | None = None) -> dict[str, Any]:
        """Replace an existing object; a stale metadata.resourceVersion gets 409 Conflict."""
        rt = self._rt(resource) if resource else self.registry.for_object(obj)
        meta = obj.get("metadata", {})
        with self._lock:
            key = (self._ns(rt, meta.get("namespace")), meta.get("name", ""))
            old = self._table(rt).get(key)
            if old is None:
                raise not_found(rt, key[1])
            rv = meta.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {rt.key} "
                               f'"{key[1]}": the object has been modified; please apply your changes to the '
                               "latest version and try again", {"name": key[1], "kind": rt.plural})
            return self._store_update(rt, key, old, copy.deepcopy(obj))

    def _store_update(self, rt: ResourceType, key: tuple[str, str], old: dict[str, Any],
                      new: dict[str, Any]) -> dict[str, Any]:
        new.setdefault("apiVersion", old.get("apiVersion", rt.api_version))
        new.setdefault("kind", rt.kind)
        meta = new.setdefault("metadata", {})
        # Identity fields are immutable, whatever the update says.
        for f in ("name", "uid", "creationTimestamp"):
            meta[f] = old["metadata"].get(f)
        if rt.namespaced:
            meta["namespace"] = key[0]
        if "generation" in old["metadata"] and new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        elif "generation" in old["metadata"]:
            meta["generation"] = old["metadata"]["generation"]
        self._bump(new)
        self._table(rt)[key] = new
        if rt.kind == "CustomResourceDefinition":
            self._on_crd(new)
        self._emit(rt.key, "MODIFIED", new, old)
        return copy.deepcopy(new)

    def mutate(self, resource: str | ResourceType, namespace: str | None, name: str,
               fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Atomically read-modify-write one object: `fn` edits the copy it gets (or returns a new one)."""
        rt = self._rt(resource)
        with self._lock:
            key = (self._ns(rt, namespace), name)
            old = self._table(rt).get(key)
            if old is None:
                raise not_found(rt, name)
            new = copy.deepcopy(old)
            result = fn(new)
            return self._store_update(rt, key, old, result if result is not None else new)

    def patch(self, resource: str | ResourceType, namespace: str | None, name: str, patch: Any,
              patch_type: str = "merge") -> dict[str, Any]:
        """Patch with `merge` (RFC 7386), `strategic` (merge + keyed lists) or `json` (RFC 6902)."""
        if patch_type == "json":
            if not isinstance(patch, list):
                raise bad_request("a JSON patch must be a list of operations")
            return self.mutate(resource, namespace, name, lambda o: json_patch(o, patch))
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        strategic = patch_type == "strategic"
        return self.mutate(resource, namespace, name, lambda o: merge_patch(o, patch, strategic=strategic))

    def delete(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """Remove an object; returns it as it was last seen (with the deletion's resourceVersion)."""
        rt = self._rt(resource)
        with self._lock:
            key = (self._ns(rt, namespace), name)
            old = self._table(rt).pop(key, None)
            if old is None:
                raise not_found(rt, name)
            gone = copy.deepcopy(old)
            self._bump(gone)
            if rt.kind == "CustomResourceDefinition":
                self._on_crd(gone, deleted=True)
            self._emit(rt.key, "DELETED", gone, None)
            return gone

    def watch(self, resource: str | ResourceType, callback: Callable[[str, dict[str, Any]], None], *,
              namespace: str | None = None, label_selector: str | list[Requirement] | None = None,
              field_selector: str | list[tuple[str, str, str]] | None = None,
              resource_version: str | None = None) -> Callable[[], None]:
        """Call `callback(type, obj)` for every change of matching objects; returns `unsubscribe`.

        Without `resource_version` (or "0") the current objects come first as ADDED, like the
        apiserver; with one, the changes after it are replayed (410 Expired if it is too old).
        The callback runs under the store lock: it must only hand the event over (e.g.
        `loop.call_soon_threadsafe`).
        """
        rt = self._rt(resource)
        labels = parse_label_selector(label_selector) if isinstance(label_selector, str | None) else label_selector
        fields = parse_field_selector(field_selector) if isinstance(field_selector, str | None) else field_selector
        w = _Watcher(rt.key, namespace if rt.namespaced else None, labels, fields, callback)
        with self._lock:
            if resource_version in (None, "", "0"):
                for (ns, _), obj in sorted(self._table(rt).items()):
                    w.offer("ADDED", obj, None)
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise bad_request(f"invalid resource version: {resource_version}") from None
                if since < self._floor:
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({self._floor})")
                for rv, key, etype, obj, old in self._history:
                    if rv > since and key == rt.key:
                        w.offer(etype, obj, old)
            self._watchers.append(w)

        def unsubscribe() -> None:
            with self._lock:
                if w in self._watchers:
                    self._watchers.remove(w)
        return unsubscribe


# -- tables -----------------------------------------------------------------------------------

def human_duration(d: timedelta) -> str:
    """apimachinery's duration.HumanDuration, as kubectl shows AGE."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _age(obj: dict[str, Any], field: str = "metadata.creationTimestamp") -> str:
    t = _parse_ts(field_value(obj, field))
    return human_duration(datetime.now(timezone.utc) - t) if t else "<unknown>"


def _pod_status(pod: dict[str, Any]) -> tuple[str, str, str]:
    """(READY, STATUS, RESTARTS) the way kubectl's pod printer computes them."""
    st = pod.get("status", {})
    containers = pod.get("spec", {}).get("containers", [])
    reason = st.get("reason") or st.get("phase") or "Unknown"
    ready = restarts = 0
    last_restart: datetime | None = None
    for cs in st.get("containerStatuses", []):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal")
                                         else f"ExitCode:{t.get('exitCode')}")
        elif "running" in state and cs.get("ready"):
            ready += 1
        finished = _parse_ts(cs.get("lastState", {}).get("terminated", {}).get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    rs = str(restarts)
    if restarts and last_restart:
        rs += f" ({human_duration(datetime.now(timezone.utc) - last_restart)} ago)"
    return f"{ready}/{len(containers)}", reason, rs


def _none(v: Any) -> Any:
    return v if v not in (None, "", []) else "<none>"


def _svc_ports(svc: dict[str, Any]) -> str:
    ports = []
    for p in svc.get("spec", {}).get("ports", []):
        s = f"{p['port']}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            s = f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        ports.append(s)
    return ",".join(ports) or "<none>"


def _node_status(node: dict[str, Any]) -> str:
    ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
    s = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    return s + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")


def _node_address(node: dict[str, Any], kind: str) -> str:
    return next((a["address"] for a in node.get("status", {}).get("addresses", []) if a.get("type") == kind),
                "<none>")


def _endpoints_summary(ep: dict[str, Any]) -> str:
    out = [f"{a['ip']}:{p['port']}" for s in ep.get("subsets", []) for p in s.get("ports", [])
           for a in s.get("addresses", [])]
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def _sel(obj: dict[str, Any], path: str) -> str:
    m = field_value(obj, path)
    if not m:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in json.loads(m).items()) if m.startswith("{") else m


Col = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, cell

_AGE: Col = ("Age", "string", 0, _age)
_COLUMNS: dict[str, list[Col]] = {
    "pods": [
        ("Ready", "string", 0, lambda o: _pod_status(o)[0]),
        ("Status", "string", 0, lambda o: _pod_status(o)[1]),
        ("Restarts", "string", 0, lambda o: _pod_status(o)[2]),
        _AGE,
        ("IP", "string", 1, lambda o: _none(o.get("status", {}).get("podIP"))),
        ("Node", "string", 1, lambda o: _none(o.get("spec", {}).get("nodeName"))),
        ("Nominated Node", "string", 1, lambda o: _none(o.get("status", {}).get("nominatedNodeName"))),
        ("Readiness Gates", "string", 1, lambda o: _none(o.get("spec", {}).get("readinessGates"))),
    ],
    "nodes": [
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, lambda o: ",".join(sorted(
            k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
            if k.startswith("node-role.kubernetes.io/"))) or "<none>"),
        _AGE,
        ("Version", "string", 0, lambda o: field_value(o, "status.nodeInfo.kubeletVersion")),
        ("Internal-IP", "string", 1, lambda o: _node_address(o, "InternalIP")),
        ("External-IP", "string", 1, lambda o: _node_address(o, "ExternalIP")),
        ("OS-Image", "string", 1, lambda o: field_value(o, "status.nodeInfo.osImage")),
        ("Kernel-Version", "string", 1, lambda o: field_value(o, "status.nodeInfo.kernelVersion")),
        ("Container-Runtime", "string", 1, lambda o: field_value(o, "status.nodeInfo.containerRuntimeVersion")),
    ],
    "namespaces": [("Status", "string", 0, lambda o: field_value(o, "status.phase")), _AGE],
    "services": [
        ("Type", "string", 0, lambda o: field_value(o, "spec.type")),
        ("Cluster-IP", "string", 0, lambda o: field_value(o, "spec.clusterIP")),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _svc_ports),
        _AGE,
        ("Selector", "string", 1, lambda o: _sel(o, "spec.selector")),
    ],
    "endpoints": [("Endpoints", "string", 0, _endpoints_summary), _AGE],
    "endpointslices.discovery.k8s.io": [
        ("AddressType", "string", 0, lambda o: o.get("addressType", "")),
        ("Ports", "string", 0, lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>"),
        ("Endpoints", "string", 0, lambda o: ",".join(a for e in o.get("endpoints") or []
                                                      for a in e.get("addresses", [])) or "<unset>"),
        _AGE,
    ],
    "configmaps": [("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                   _AGE],
    "serviceaccounts": [("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])), _AGE],
    "events": [
        ("Last Seen", "string", 0, lambda o: _age(o, "lastTimestamp")),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: f"{o['involvedObject'].get('kind', '').lower()}/"
                                          f"{o['involvedObject'].get('name', '')}"),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
    "deployments.apps": [
        ("Ready", "string", 0, lambda o: f"{o.get('status', {}).get('readyReplicas', 0)}/"
                                         f"{o.get('spec', {}).get('replicas', 0)}"),
        ("Up-to-date", "integer", 0, lambda o: o.get("status", {}).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: o.get("status", {}).get("availableReplicas", 0)),
        _AGE,
    ],
    "replicasets.apps": [
        ("Desired", "integer", 0, lambda o: o.get("spec", {}).get("replicas", 0)),
        ("Current", "integer", 0, lambda o: o.get("status", {}).get("replicas", 0)),
        ("Ready", "integer", 0, lambda o: o.get("status", {}).get("readyReplicas", 0)),
        _AGE,
    ],
    "statefulsets.apps": [
        ("Ready", "string", 0, lambda o: f"{o.get('status', {}).get('readyReplicas', 0)}/"
                                         f"{o.get('spec', {}).get('replicas', 0)}"),
        _AGE,
    ],
    "daemonsets.apps": [
        ("Desired", "integer", 0, lambda o: o.get("status", {}).get("desiredNumberScheduled", 0)),
        ("Current", "integer", 0, lambda o: o.get("status", {}).get("currentNumberScheduled", 0)),
        ("Ready", "integer", 0, lambda o: o.get("status", {}).get("numberReady", 0)),
        ("Up-to-date", "integer", 0, lambda o: o.get("status", {}).get("updatedNumberScheduled", 0)),
        ("Available", "integer", 0, lambda o: o.get("status", {}).get("numberAvailable", 0)),
        ("Node Selector", "string", 0, lambda o: _sel(o, "spec.template.spec.nodeSelector")),
        _AGE,
    ],
    "customresourcedefinitions.apiextensions.k8s.io": [
        ("Created At", "date", 0, lambda o: o["metadata"].get("creationTimestamp", "")),
    ],
}


def _crd_columns(rt: ResourceType) -> list[Col]:
    cols: list[Col] = []
    for c in rt.printer_columns:
        path = c.get("jsonPath", "").lstrip(".")
        cols.append((c["name"], c.get("type", "string"), c.get("priority", 0),
                     lambda o, p=path: field_value(o, p) or "<none>"))
    return cols + [_AGE]


def to_table(rt: ResourceType, objs: list[dict[str, Any]], *, include: str = "Metadata",
             resource_version: str = "", table_version: str = "v1") -> dict[str, Any]:
    """A `meta.k8s.io` Table with kubectl's usual columns (NAME first; priority 1 = `-o wide`)."""
    cols = [("Name", "string", 0, lambda o: o["metadata"]["name"])]
    cols += _COLUMNS.get(rt.key) or (_crd_columns(rt) if rt.printer_columns else [_AGE])
    defs = [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": p}
            for n, t, p, _ in cols]
    rows = []
    for o in objs:
        row: dict[str, Any] = {"cells": [f(o) for _, _, _, f in cols]}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o.get("metadata", {})}
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{table_version}",
            "metadata": {"resourceVersion": resource_version}, "columnDefinitions": defs, "rows": rows}


# -- the server -------------------------------------------------------------------------------

def version_info(git_version: str = KUBERNETES_VERSION) -> dict[str, str]:
    """/version: every VersionInfo field the Python client requires."""
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {"major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
            "minCompatibilityMajor": major, "minCompatibilityMinor": str(int(minor) - 1),
            "gitVersion": git_version, "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
            "gitTreeState": "clean", "buildDate": "2024-12-11T18:04:20Z", "goVersion": "go1.23.3",
            "compiler": "gc", "platform": "linux/amd64"}


def _version_rank(v: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (-1, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[m.group(2)]
    return (stability, int(m.group(1)), int(m.group(3) or 0))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                        content_type="application/json")


def _status_response(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes")


class ApiServer:
    """The lab's HTTPS Kubernetes API on its own thread and event loop.

    `store` holds the objects, `token` is the one bearer token accepted, `ssl_context` the server
    TLS context (None serves plain HTTP), `hooks` see the module docstring. Add routes (e.g. the
    lab's `/_lab/...` control endpoints) through `routes=`, `add_routes()` or `app.router` before
    `start()`; they need the token unless listed in `public_prefixes`. `middlewares` (aiohttp)
    run after authentication, e.g. to inject faults.
    """

    def __init__(self, store: ObjectStore, *, token: str, ssl_context: Any = None, hooks: Any = None,
                 routes: Iterable[web.AbstractRouteDef] = (), middlewares: Iterable[Any] = (),
                 public_prefixes: Iterable[str] = (), git_version: str = KUBERNETES_VERSION):
        self.store, self.token, self.ssl_context, self.hooks = store, token, ssl_context, hooks
        self.git_version = git_version
        self.public_prefixes = tuple(_PUBLIC_PATHS) + tuple(public_prefixes)
        self.app = web.Application(middlewares=[self._auth, *middlewares], client_max_size=16 * 1024 ** 2)
        self.app.add_routes([
            web.get("/version", self._version), web.get("/version/", self._version),
            web.get("/livez", self._health), web.get("/readyz", self._health), web.get("/healthz", self._health),
            web.get(r"/{probe:livez|readyz|healthz}/{check:.+}", self._health),
            web.route("*", "/api", self._dispatch), web.route("*", "/api/{tail:.*}", self._dispatch),
            web.route("*", "/apis", self._dispatch), web.route("*", "/apis/{tail:.*}", self._dispatch),
        ])
        self.app.add_routes(list(routes))
        self.app.on_shutdown.append(self._on_shutdown)
        self.host, self.port = "127.0.0.1", 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()

    # -- lifecycle --
    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Serve more routes (e.g. `/_lab/...`); only before `start()`, they need the token."""
        if self._thread:
            raise RuntimeError("routes must be added before the API server starts")
        self.app.add_routes(list(routes))

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (0 = any free port) from a new thread; returns the port."""
        if self._thread:
            raise RuntimeError("the API server is already running")
        self.host = host
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def startup() -> None:
            self._closing = asyncio.Event()
            self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context, reuse_address=True)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(startup())
            except BaseException as e:  # handed to start() in the calling thread
                failure.append(e)
                if self._runner:
                    loop.run_until_complete(self._runner.cleanup())
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    server = self._runner.server if self._runner else None
                    transports = [h.transport for h in (server.connections if server else []) if h.transport]
                    if self._runner:
                        loop.run_until_complete(self._runner.cleanup())
                    # A TLS close waits for the peer's close_notify (30 s); the loop ends sooner.
                    for t in transports:
                        t.abort()
                    loop.run_until_complete(_drain_loop())
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="lab-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError("the lab API server did not start within 60 s")
        if failure:
            self._thread.join()
            self._thread = self._loop = self._runner = None
            raise failure[0]
        return self.port

    def stop(self) -> None:
        """Close watches and exec sessions, stop serving and join the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if not loop or not thread:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(self._begin_close)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._thread = self._loop = None

    def _begin_close(self) -> None:
        if self._closing:
            self._closing.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._begin_close()
        for p in list(self._procs):
            _kill(p)
        for t in list(self._streams):
            t.cancel()

    # -- middleware --
    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        token = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(_TOKEN_PROTOCOL):
                raw = proto[len(_TOKEN_PROTOCOL):]
                try:
                    token = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
                except ValueError:
                    token = ""
        public = any(request.path == p or request.path.startswith(p + "/") for p in self.public_prefixes)
        # Like kube-apiserver: a wrong token is refused even where anonymous requests are allowed.
        if (token is None and not public) or (token is not None and not hmac.compare_digest(
                token.encode(), self.token.encode())):
            return _status_response(ApiError(401, "Unauthorized", "Unauthorized"))
        try:
            return await handler(request)
        except ApiError as e:
            return _status_response(e)
        except web.HTTPNotFound:
            return _status_response(_no_resource())
        except web.HTTPMethodNotAllowed:
            return _status_response(ApiError(405, "MethodNotAllowed",
                                             "the server does not allow this method on the requested resource"))
        except web.HTTPException:
            raise
        except Exception as e:
            log.exception("%s %s failed", request.method, request.path)
            return _status_response(ApiError(500, "InternalError", f"Internal error occurred: {e}"))

    # -- simple endpoints --
    async def _version(self, request: web.Request) -> web.Response:
        return _json(version_info(self.git_version))

    async def _health(self, request: web.Request) -> web.Response:
        name = request.path.strip("/").split("/")[0]
        if "verbose" in request.query:
            checks = ["ping", "log", "etcd", "poststarthook/start-apiextensions-controllers",
                      "poststarthook/crd-informer-synced"]
            body = "".join(f"[+]{c} ok\n" for c in checks) + f"{name} check passed\n"
            return web.Response(text=body, content_type="text/plain")
        return web.Response(text="ok", content_type="text/plain")

    def _discovery_root_core(self, request: web.Request) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]}

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        for rt in self.store.registry.all():
            if rt.group:
                groups.setdefault(rt.group, set()).add(rt.version)
        return {g: sorted(vs, key=_version_rank, reverse=True) for g, vs in sorted(groups.items())}

    @staticmethod
    def _api_group(name: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        rts = [rt for rt in self.store.registry.all() if rt.group == group and rt.version == version]
        if not rts:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [r for rt in sorted(rts, key=lambda r: r.plural) for r in rt.discovery()]}

    # -- /api and /apis --
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        if segs[0] == "api":
            if len(segs) == 1:
                return _json(self._discovery_root_core(request))
            group, version, rest = "", segs[1], segs[2:]
        else:
            if len(segs) == 1:
                return _json({"kind": "APIGroupList", "apiVersion": "v1",
                              "groups": [self._api_group(g, vs) for g, vs in self._groups().items()]})
            group = segs[1]
            if len(segs) == 2:
                vs = self._groups().get(group)
                if not vs:
                    raise _no_resource()
                return _json({"kind": "APIGroup", "apiVersion": "v1", **self._api_group(group, vs)})
            version, rest = segs[2], segs[3:]
        if not rest:
            listing = self._resource_list(group, version)
            if listing is None or request.method != "GET":
                raise _no_resource()
            return _json(listing)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        rt = self.store.registry.get(group, version, plural)
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced) \
                or (rt.namespaced and namespace is None and name is not None):
            raise _no_resource()
        if sub is not None and sub not in rt.subresources:
            raise _no_resource()
        m = request.method
        if sub == "exec":
            if m not in ("GET", "POST"):
                raise ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource")
            return await self._exec(request, rt, namespace, name or "")
        if sub == "log" and m == "GET":
            return await self._log(request, rt, namespace, name or "")
        if name is None:
            if m == "GET":
                if _truthy(request.query.get("watch")):
                    return await self._watch(request, rt, namespace)
                return self._list(request, rt, namespace)
            if m == "POST":
                return await self._create(request, rt, namespace)
            if m == "DELETE":
                return await self._delete_collection(request, rt, namespace)
        else:
            if "dryRun" in request.query and m != "GET":
                raise bad_request("dryRun is not supported by the lab API server")
            if m == "GET":
                return self._render(request, rt, [self.store.get(rt, namespace, name)], single=True)
            if m == "PUT":
                body = await self._body(request)
                if not isinstance(body, dict):
                    raise bad_request("the body of an update must be an object")
                body.setdefault("metadata", {})
                if body["metadata"].get("name", name) != name:
                    raise bad_request("the name of the object does not match the name on the URL")
                body["metadata"]["name"], body["metadata"]["namespace"] = name, namespace
                return _json(self.store.replace(body, resource=rt))
            if m == "PATCH":
                return await self._patch(request, rt, namespace, name)
            if m == "DELETE":
                return await self._delete(request, rt, namespace, name)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        declared = "Content-Type" in request.headers
        if raw and declared and "json" not in request.content_type and "yaml" not in request.content_type:
            # kubectl's typed generators (create namespace, create deployment…) send protobuf, which
            # the lab cannot decode: refuse it plainly (kubectl create -f sends JSON and works).
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json, application/yaml")
        try:
            if "yaml" in request.content_type:
                return yaml.safe_load(raw)
            return json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the request body is not valid: {e}") from None

    @staticmethod
    def _table_version(request: web.Request) -> str | None:
        for part in request.headers.get("Accept", "").split(","):
            params = dict(p.strip().partition("=")[::2] for p in part.split(";")[1:])
            if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
                return params.get("v", "v1")
        return None

    def _render(self, request: web.Request, rt: ResourceType, objs: list[dict[str, Any]], *, single: bool = False,
                rv: str = "", extra_meta: dict[str, Any] | None = None) -> web.Response:
        tv = self._table_version(request)
        if tv:
            if single:
                rv = objs[0]["metadata"].get("resourceVersion", "")
            table = to_table(rt, objs, include=request.query.get("includeObject", "Metadata"),
                             resource_version=rv, table_version=tv)
            table["metadata"].update(extra_meta or {})
            return _json(table)
        if single:
            return _json(objs[0])
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                      "metadata": {"resourceVersion": rv, **(extra_meta or {})}, "items": objs})

    def _list(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
        q = request.query
        items, rv = self.store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        extra: dict[str, Any] = {}
        start = 0
        if q.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(q["continue"]))
                start, rv = int(token["start"]), str(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("invalid continue token") from None
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request(f"invalid limit: {q.get('limit')}") from None
        if limit > 0 and len(items) - start > limit:
            extra["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": rv, "start": start + limit}).encode()).decode()
            extra["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        return self._render(request, rt, items, rv=rv, extra_meta=extra)

    async def _watch(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.StreamResponse:
        q = request.query
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        tv = self._table_version(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        try:
            unsubscribe = self.store.watch(
                rt, lambda t, o: loop.call_soon_threadsafe(queue.put_nowait, (t, o)), namespace=namespace,
                label_selector=q.get("labelSelector"), field_selector=q.get("fieldSelector"),
                resource_version=q.get("resourceVersion"))
        except ApiError as e:
            if e.code != 410:
                raise
            # The apiserver reports an expired resourceVersion inside the watch stream.
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            return resp
        try:
            timeout = float(q.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            unsubscribe()
            raise bad_request(f"invalid timeoutSeconds: {q.get('timeoutSeconds')}") from None
        deadline = loop.time() + timeout
        task = asyncio.current_task()
        if task:
            self._streams.add(task)
        try:
            await resp.prepare(request)
            while not (self._closing and self._closing.is_set()):
                remaining = deadline - loop.time()
                if remaining <= 0 or request.transport is None or request.transport.is_closing():
                    break
                try:
                    etype, obj = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
                except asyncio.TimeoutError:
                    continue
                if tv:
                    obj = to_table(rt, [obj], include=q.get("includeObject", "Metadata"),
                                   resource_version=obj["metadata"].get("resourceVersion", ""), table_version=tv)
                line = json.dumps({"type": etype, "object": obj}, separators=(",", ":"))
                await resp.write(line.encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            unsubscribe()
            if task:
                self._streams.discard(task)
        return resp

    async def _create(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
        if "dryRun" in request.query:
            raise bad_request("dryRun is not supported by the lab API server")
        if rt.key == "selfsubjectaccessreviews.authorization.k8s.io":
            # kubectl auth can-i posts protobuf; the answer does not depend on the question.
            body = await self._body(request) if "json" in request.content_type else {"spec": {}}
            return _json({"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {},
                          "spec": body.get("spec", {}),
                          "status": {"allowed": True, "reason": "the lab token is bound to cluster-admin"}}, 201)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise bad_request("the body of a create must be an object")
        meta = body.setdefault("metadata", {})
        if namespace and meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        if rt.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(k, None)
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind
        if rt.key == "pods":
            return _json(await self._create_pod(body, namespace or "default"), 201)
        return _json(self.store.create(body, resource=rt, namespace=namespace), 201)

    async def _create_pod(self, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        pending = self.store.create(prepare_new_pod(body, namespace=namespace), resource="pods")
        name = pending["metadata"]["name"]
        loop = asyncio.get_running_loop()
        hook = getattr(self.hooks, "on_pod_create", None)
        try:
            placed = await loop.run_in_executor(None, hook, copy.deepcopy(pending)) if hook else None
            if placed is None:
                placed = self._default_place(copy.deepcopy(pending))
        except ApiError:
            self.store.delete("pods", namespace, name)
            raise
        except Exception as e:
            log.exception("on_pod_create hook failed for %s/%s", namespace, name)
            self.store.create(event_object(
                involved=pending, reason="FailedCreatePodSandBox", type_="Warning", component="kubelet",
                host=pending["spec"].get("nodeName", ""), when=datetime.now(timezone.utc),
                message=f"Failed to create pod sandbox: {e}"), resource="events")
            return self.store.get("pods", namespace, name)
        if placed is None:
            return pending
        placed.setdefault("metadata", {}).pop("resourceVersion", None)
        placed["metadata"]["name"], placed["metadata"]["namespace"] = name, namespace
        running = self.store.replace(placed, resource="pods")
        if running.get("status", {}).get("phase") == "Running":
            for ev in pod_lifecycle_events(running, kubelet_after=timedelta(0)):
                self.store.create(ev, resource="events")
        return running

    def _default_place(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """No hook: schedule on the named node or the least busy Ready node, pick a free IP."""
        nodes, _ = self.store.list("nodes")
        pods, _ = self.store.list("pods")
        ready = [n for n in nodes if _node_status(n) == "Ready"]
        wanted = pod["spec"].get("nodeName")
        if wanted:
            ready = [n for n in nodes if n["metadata"]["name"] == wanted]
        if not ready:
            return None
        node = min(ready, key=lambda n: (sum(p["spec"].get("nodeName") == n["metadata"]["name"] for p in pods),
                                         n["metadata"]["name"]))
        host_ip = _node_address(node, "InternalIP")
        if pod["spec"].get("hostNetwork"):
            ip = host_ip
        else:
            used = {p.get("status", {}).get("podIP", "") for p in pods} | {_node_address(n, "InternalIP")
                                                                          for n in nodes}
            cidr = node.get("spec", {}).get("podCIDR")
            ip = next_free_ip(cidr, used) if cidr else next_free_ip(f"{host_ip}/24", used, start_offset=100)
        return mark_pod_running(pod, node_name=node["metadata"]["name"], host_ip=host_ip, pod_ip=ip)

    async def _patch(self, request: web.Request, rt: ResourceType, namespace: str | None,
                     name: str) -> web.Response:
        ctype = request.content_type
        kinds = {"application/merge-patch+json": "merge", "application/strategic-merge-patch+json": "strategic",
                 "application/json-patch+json": "json"}
        if ctype not in kinds:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: {', '.join(kinds)}")
        body = await self._body(request)
        return _json(self.store.patch(rt, namespace, name, body, kinds[ctype]))

    async def _delete(self, request: web.Request, rt: ResourceType, namespace: str | None,
                      name: str) -> web.Response:
        obj = self.store.get(rt, namespace, name)
        if rt.key == "pods":
            return _json(await self._delete_pod(request, obj))
        if rt.key == "namespaces":
            self.store.patch(rt, None, name, {"status": {"phase": "Terminating"}})
            # Pods first: deleting them records Killing events, which must go with the namespace.
            for other in sorted(self.store.registry.all(), key=lambda r: r.key != "pods"):
                if other.namespaced:
                    for o in self.store.list(other, name)[0]:
                        if other.key == "pods":
                            await self._delete_pod(request, o)
                        else:
                            _ignore_missing(self.store.delete, other, name, o["metadata"]["name"])
        gone = self.store.delete(rt, namespace, name)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": {"name": name, "kind": rt.plural, "uid": gone["metadata"].get("uid", ""),
                                  **({"group": rt.group} if rt.group else {})}})

    async def _delete_pod(self, request: web.Request, pod: dict[str, Any]) -> dict[str, Any]:
        meta = pod["metadata"]
        grace = request.query.get("gracePeriodSeconds")
        if grace is None and request.can_read_body:
            opts = await self._body(request)
            if isinstance(opts, dict) and opts.get("gracePeriodSeconds") is not None:
                grace = str(opts["gracePeriodSeconds"])
        try:
            grace_s = int(grace if grace is not None else pod["spec"].get("terminationGracePeriodSeconds", 30))
        except ValueError:
            raise bad_request(f"invalid gracePeriodSeconds: {grace}") from None
        now = datetime.now(timezone.utc)

        def mark(o: dict[str, Any]) -> None:
            o["metadata"]["deletionTimestamp"] = ts(now + timedelta(seconds=grace_s))
            o["metadata"]["deletionGracePeriodSeconds"] = grace_s
        try:
            marked = self.store.mutate("pods", meta["namespace"], meta["name"], mark)
        except ApiError:
            return pod  # already gone (a concurrent delete)
        for c in marked["spec"].get("containers", []):
            if marked["spec"].get("nodeName"):
                self.store.create(event_object(
                    involved=marked, reason="Killing", component="kubelet", host=marked["spec"]["nodeName"],
                    message=f"Stopping container {c['name']}", when=now,
                    field_path=f"spec.containers{{{c['name']}}}"), resource="events")
        hook = getattr(self.hooks, "on_pod_delete", None)
        if hook:
            try:
                await asyncio.get_running_loop().run_in_executor(None, hook, copy.deepcopy(marked))
            except Exception:
                log.exception("on_pod_delete hook failed for %s/%s", meta["namespace"], meta["name"])
        _ignore_missing(self.store.delete, "pods", meta["namespace"], meta["name"])
        return marked

    async def _delete_collection(self, request: web.Request, rt: ResourceType,
                                 namespace: str | None) -> web.Response:
        q = request.query
        items, rv = self.store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        for o in items:
            if rt.key == "pods":
                await self._delete_pod(request, o)
            else:
                _ignore_missing(self.store.delete, rt, o["metadata"].get("namespace"), o["metadata"]["name"])
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                      "metadata": {"resourceVersion": self.store.resource_version}, "items": items})

    async def _log(self, request: web.Request, rt: ResourceType, namespace: str | None, name: str) -> web.Response:
        pod = self.store.get(rt, namespace, name)
        container = self._container(pod, request.query.get("container"), for_exec=False)
        hook = getattr(self.hooks, "pod_log", None)
        data: str | bytes = ""
        if hook:
            params = dict(request.query)
            data = await asyncio.get_running_loop().run_in_executor(None, hook, pod, container, params)
        body = data.encode() if isinstance(data, str) else data
        return web.Response(body=body, content_type="text/plain")

    @staticmethod
    def _container(pod: dict[str, Any], name: str | None, *, for_exec: bool = True) -> str:
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        all_names = names + [c["name"] for c in pod["spec"].get("initContainers", [])]
        pname = pod["metadata"]["name"]
        if not name:
            if len(names) == 1:
                return names[0]
            raise bad_request(f"a container name must be specified for pod {pname}, choose one of: "
                              f"[{' '.join(names)}]")
        if name not in (names if for_exec else all_names):
            raise bad_request(f"container {name} is not valid for pod {pname}")
        return name

    # -- exec --
    async def _exec(self, request: web.Request, rt: ResourceType, namespace: str | None,
                    name: str) -> web.StreamResponse:
        pod = self.store.get(rt, namespace, name)
        q = request.query
        command = q.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        container = self._container(pod, q.get("container"))
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        if phase != "Running":
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        hook = getattr(self.hooks, "exec_argv", None)
        if hook is None:
            raise ApiError(500, "InternalError", "Internal error occurred: exec is not available: "
                           "the lab API server has no exec hook")
        argv = await asyncio.get_running_loop().run_in_executor(None, hook, pod, container, list(command))
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, compress=False, autoping=True, heartbeat=None,
                                   max_msg_size=0)
        if not ws.can_prepare(request).ok:
            # kubectl falls back to SPDY when a websocket is refused; the lab only speaks websocket.
            raise bad_request("Upgrade request required: the lab API server only supports websocket exec")
        await ws.prepare(request)
        task = asyncio.current_task()
        if task:
            self._streams.add(task)
        try:
            await _ExecSession(ws, argv, command, stdin=_truthy(q.get("stdin")), stdout=_truthy(q.get("stdout")),
                               stderr=_truthy(q.get("stderr")), tty=_truthy(q.get("tty")),
                               procs=self._procs).run()
        except asyncio.CancelledError:
            pass
        finally:
            if task:
                self._streams.discard(task)
            if not ws.closed:
                await ws.close()
        return ws


async def _drain_loop() -> None:
    """Cancel what is left and let closing transports run their callbacks (else their sockets
    are only closed by the garbage collector, with a ResourceWarning)."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0.01)


def _ignore_missing(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except ApiError as e:
        if e.code != 404:
            raise


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _ExecSession:
    """One exec: a subprocess bridged to the websocket channel protocol (v4/v5)."""

    def __init__(self, ws: web.WebSocketResponse, argv: list[str], command: list[str], *, stdin: bool,
                 stdout: bool, stderr: bool, tty: bool, procs: set[asyncio.subprocess.Process]):
        self.ws, self.argv, self.command = ws, argv, command
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self.procs = procs
        self.v5 = ws.ws_protocol == "v5.channel.k8s.io"

    async def _send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            # Always binary frames: kubectl fails on a text frame.
            await self.ws.send_bytes(bytes([channel]) + data)

    async def _pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            await self._send(channel, chunk)

    async def _feed(self, proc: asyncio.subprocess.Process) -> None:
        """Client → process stdin, until the client closes the websocket."""
        async for msg in self.ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            # The Python client writes stdin as text frames (its channel byte is chr(0)).
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == _STDIN and proc.stdin and not proc.stdin.is_closing():
                try:
                    proc.stdin.write(payload)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            elif channel == _CLOSE and self.v5 and payload[:1] == bytes([_STDIN]) and proc.stdin:
                proc.stdin.close()

    async def run(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.stdout else asyncio.subprocess.DEVNULL,
                stderr=(asyncio.subprocess.STDOUT if self.tty else asyncio.subprocess.PIPE) if self.stderr
                else asyncio.subprocess.DEVNULL,
                start_new_session=True)
        except OSError as e:
            # What containerd reports when the binary cannot be started (exit code 126).
            msg = (f"OCI runtime exec failed: exec failed: unable to start container process: exec: "
                   f"\"{self.argv[0]}\": {e.strerror}: unknown\r\n")
            await self._send(_STDOUT if self.stdout else _STDERR, msg.encode())
            await self._finish(126)
            return
        self.procs.add(proc)
        pumps = [asyncio.create_task(self._pump(s, ch))
                 for s, ch in ((proc.stdout, _STDOUT), (proc.stderr, _STDERR)) if s is not None]
        feeder = asyncio.create_task(self._feed(proc))
        waiter = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({waiter, feeder}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                # The client went away first: do not leave the command running.
                _kill(proc)
                await waiter
                return
            # Background children may hold the pipes open; do not wait for them forever.
            done, pending = await asyncio.wait(pumps, timeout=2.0) if pumps else (set(), set())
            for t in pending:
                t.cancel()
            rc = proc.returncode if proc.returncode is not None else 1
            await self._finish(128 - rc if rc < 0 else rc)
        finally:
            for t in [*pumps, feeder]:
                t.cancel()
            await asyncio.gather(*pumps, feeder, return_exceptions=True)
            if proc.stdin and not proc.stdin.is_closing():
                proc.stdin.close()
            _kill(proc)
            if proc.returncode is None:
                await proc.wait()
            self.procs.discard(proc)

    async def _finish(self, code: int) -> None:
        if code == 0:
            status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        else:
            # causes[0] must be the ExitCode: the Python client reads only the first cause.
            status = {"metadata": {}, "status": "Failure",
                      "message": f"command terminated with non-zero exit code: error executing command "
                                 f"[{' '.join(self.command)}], exit code {code}",
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        try:
            await self._send(_STATUS, json.dumps(status).encode())
            # kubectl waits for the close after the status frame.
            await self.ws.close()
        except (ConnectionResetError, RuntimeError):
            pass


# -- kubeconfig -------------------------------------------------------------------------------

def write_kubeconfig(path: Path | str, server_url: str, ca_pem: str | bytes, token: str,
                     cluster_name: str = "netconform-lab", context_name: str = "netconform-lab",
                     user_name: str = "netconform-lab-admin", namespace: str = "default") -> Path:
    """Write a kubeconfig (mode 0600) pointing at the lab API with the CA inlined and the token."""
    pem = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    cfg = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": {
            "server": server_url, "certificate-authority-data": base64.b64encode(pem).decode()}}],
        "users": [{"name": user_name, "user": {"token": token}}],
        "contexts": [{"name": context_name, "context": {"cluster": cluster_name, "user": user_name,
                                                        "namespace": namespace}}],
        "current-context": context_name,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.chmod(path, 0o600)
    return path
