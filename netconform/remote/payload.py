"""The code a debug pod runs, as one deterministic zip: netconform's pod-side modules and the
pure-Python packages they import.

The pod has only a stock python3 (DESIGN.md, "Where probes run"); boot.py receives this zip over
the exec stream, checks its sha256 and imports from it with zipimport. What goes in:

- the pod-side roots (`POD_MODULES`, every `netconform.probes.*` module) and every netconform
  module they import, found by reading their import statements (function-level ones included);
- `SHIPPED_PACKAGES` whole, `.py` only (both import their own submodules by name at run time,
  e.g. `dns.rdtypes.IN.A`, so an import walk would miss files), with their license files;
- `netconform_payload.json`: the file list and the shipped distributions' versions.

Never a C extension (zipimport cannot load one), never `NEVER_SHIPPED` (scapy, kubernetes, boto3,
pytest, cryptography, the lab). An import of anything else that is not stdlib fails the build
(PayloadError), so a new dependency of a probe is a decision, not a silent `ImportError` on a node.

Building imports nothing it ships: files are located with `PathFinder` (no `__init__` runs), so
the controller needs no working pyroute2 (a laptop on macOS).

>>> p = build_payload()
>>> p.size, p.sha256[:12]            # doctest: +SKIP
(1012644, '5b0e3c0a9d1f')
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from importlib import machinery, metadata
from pathlib import Path

__all__ = ["NEVER_SHIPPED", "OPTIONAL_IMPORTS", "POD_MODULES", "SHIPPED_PACKAGES", "Payload", "PayloadError",
           "build_payload", "payload"]

POD_MODULES = ("netconform", "netconform.errors", "netconform.pids", "netconform.runners",
               "netconform.runners.base", "netconform.runners.local", "netconform.runners._worker",
               "netconform.remote", "netconform.remote.hub")
# top-level import name -> distribution (for its version and license files)
SHIPPED_PACKAGES = {"dns": "dnspython", "pyroute2": "pyroute2"}
# Imported by pod-side code only where present (https.py's certificate parser, _worker's warm-up).
OPTIONAL_IMPORTS = frozenset({"cryptography"})
NEVER_SHIPPED = frozenset({"scapy", "kubernetes", "boto3", "botocore", "pytest", "_pytest", "cryptography",
                           "moto", "netconform.lab"})
MANIFEST = "netconform_payload.json"
# Zip entries carry no build time or file mode from this checkout: equal sources, equal bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MODE = 0o644 << 16
_LEVEL = 9


class PayloadError(Exception):
    """The payload cannot be built as asked (a module is missing, or imports what cannot ship)."""


@dataclass(frozen=True)
class Payload:
    data: bytes
    sha256: str
    files: tuple[str, ...]  # arcnames, sorted
    versions: dict[str, str]  # distribution -> version, of the shipped packages

    @property
    def size(self) -> int:
        return len(self.data)


def _source_root() -> Path:
    """The directory holding this checkout's (or installation's) `netconform` package."""
    return Path(__file__).resolve().parent.parent.parent


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every absolute module name `path` may import (`from a import b` gives `a` and `a.b`)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _never(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in NEVER_SHIPPED)


def _walk_netconform(root: Path) -> tuple[dict[str, Path], set[str]]:
    """(netconform module -> file, top-level third-party names imported) from the pod roots."""
    probes = sorted(p.stem for p in (root / "netconform" / "probes").glob("*.py") if p.stem != "__init__")
    todo = [*POD_MODULES, "netconform.probes", *(f"netconform.probes.{p}" for p in probes)]
    modules: dict[str, Path] = {}
    third_party: dict[str, str] = {}  # top-level name -> first importer, for the error message
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        if _never(name):
            raise PayloadError(f"{name} must never ship to a debug pod, but the pod-side code imports it")
        path = _module_file(root, name)
        if path is None:
            raise PayloadError(f"pod-side module {name} not found under {root}")
        modules[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for imported in _imports(path, name):
            top = imported.partition(".")[0]
            if top == "netconform":
                if _module_file(root, imported) is not None:
                    todo.append(imported)
                elif _never(imported):
                    raise PayloadError(f"{name} imports {imported}, which must never ship to a debug pod")
            elif top and top not in sys.stdlib_module_names:
                third_party.setdefault(top, name)
    for top, importer in sorted(third_party.items()):
        if top not in SHIPPED_PACKAGES and top not in OPTIONAL_IMPORTS:
            raise PayloadError(
                f"{importer} imports {top!r}, which is neither stdlib nor shipped: add it to "
                "netconform.remote.payload.SHIPPED_PACKAGES if it is pure Python, or import it only where present "
                "(OPTIONAL_IMPORTS)")
    return modules, set(third_party) & set(SHIPPED_PACKAGES)


def _package_files(top: str) -> list[tuple[str, Path]]:
    # PathFinder, not importlib.import_module: locating a package must not run its __init__.
    spec = machinery.PathFinder.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise PayloadError(f"package {top!r} (distribution {SHIPPED_PACKAGES[top]}) is not installed here; "
                           "remote mode ships it to the debug pod")
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    files = []
    for path in sorted(pkg_dir.rglob("*")):
        if path.is_file() and not any(part == "__pycache__" for part in path.parts):
            if path.suffix in (".so", ".pyd", ".dylib"):
                raise PayloadError(f"{path} is a C extension: {top} cannot be shipped in a zip")
            if path.suffix == ".py":
                files.append((path.relative_to(pkg_dir.parent).as_posix(), path))
    return files


def _distribution(top: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(version, [(arcname, license text)]) of the distribution that provides `top`."""
    dist_name = SHIPPED_PACKAGES[top]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return "unknown", []
    licenses = []
    for f in dist.files or ():
        name = Path(str(f)).name
        if name.upper().startswith(("LICENSE", "COPYING", "NOTICE")):
            licenses.append((f"licenses/{dist_name}/{name}", Path(dist.locate_file(f)).read_bytes()))
    return dist.version, sorted(licenses)


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for arcname, data in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever builds it
            info.external_attr = _MODE
            zf.writestr(info, data, compresslevel=_LEVEL)
    return buf.getvalue()


def build_payload(root: str | Path | None = None) -> Payload:
    """Build the payload from the netconform package under `root` (default: this one)."""
    root = Path(root) if root is not None else _source_root()
    modules, packages = _walk_netconform(root)
    entries = {path.relative_to(root).as_posix(): path.read_bytes() for path in modules.values()}
    versions = {}
    for top in sorted(packages):
        for arcname, path in _package_files(top):
            entries[arcname] = path.read_bytes()
        version, licenses = _distribution(top)
        versions[SHIPPED_PACKAGES[top]] = version
        entries.update(licenses)
    names = sorted([*entries, MANIFEST])
    entries[MANIFEST] = json.dumps({"files": len(names), "versions": versions}, sort_keys=True).encode()
    data = _zip(list(entries.items()))
    return Payload(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(names), versions=versions)


@functools.lru_cache(maxsize=1)
def payload() -> Payload:
    """This process's payload, built once (about 1 MB; building it takes a fraction of a second)."""
    return build_payload()
