"""The remote payload: exactly the pod-side code, byte-identical across builds, and enough on its
own: every probe module imports from the zip in an interpreter that has nothing else."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from netconform.remote import payload as payload_mod
from netconform.remote.payload import PayloadError, build_payload, payload

REPO = Path(__file__).resolve().parents[2]
PROBES = sorted(p.stem for p in (REPO / "netconform" / "probes").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def built():
    return payload()


def test_contents(built):
    names = set(built.files)
    ours = {n for n in names if n.startswith("netconform/")}
    expected = {"netconform/__init__.py", "netconform/errors.py", "netconform/pids.py",
                "netconform/runners/__init__.py", "netconform/runners/base.py", "netconform/runners/local.py",
                "netconform/runners/_worker.py", "netconform/remote/__init__.py", "netconform/remote/hub.py",
                "netconform/probes/__init__.py", *(f"netconform/probes/{p}.py" for p in PROBES)}
    assert expected <= ours
    # Anything else of ours is there because a probe imports it (the analysis modules).
    assert {n.rsplit("/", 1)[0] for n in ours - expected} <= {"netconform/analysis"}, sorted(ours - expected)
    assert "netconform/analysis/resolvconf.py" in ours  # probes/dns.py imports it
    assert {"dns/__init__.py", "dns/message.py", "dns/rdtypes/IN/A.py", "pyroute2/__init__.py",
            "pyroute2/iproute/linux.py"} <= names
    assert {"licenses/dnspython/LICENSE", "netconform_payload.json"} <= names
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"netconform", "dns", "pyroute2", "licenses", "netconform_payload.json"}
    assert not [n for n in names if n.endswith((".pyc", ".so", ".pyd"))]
    assert not [n for n in names if n.startswith(("netconform/lab/", "netconform/remote/debugpod",
                                                 "netconform/remote/node", "netconform/remote/transport",
                                                 "netconform/remote/payload", "netconform/runners/remote"))]
    assert built.versions == {"dnspython": "2.9.2", "pyroute2": "0.9.7"}
    with zipfile.ZipFile(io.BytesIO(built.data)) as zf:
        assert sorted(zf.namelist()) == sorted(built.files) == zf.namelist()
        assert json.loads(zf.read("netconform_payload.json"))["files"] == len(built.files)
        assert zf.read("netconform/pids.py") == (REPO / "netconform" / "pids.py").read_bytes()
        infos = zf.infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}


def test_hash_is_stable_and_the_size_sane(built, record_property):
    again = build_payload()
    assert again.data == built.data and again.sha256 == built.sha256
    assert payload() is built  # built once per process
    print(f"\nremote payload: {built.size} bytes ({built.size / 1e6:.2f} MB) deflated, {len(built.files)} files, "
          f"sha256 {built.sha256[:16]}")
    record_property("payload_bytes", built.size)
    # ~1 MB; scapy (2.7 MB zipped) or a stray virtualenv would show here
    assert 300_000 < built.size < 2_500_000


_IMPORT_ALL = r"""
import importlib, json, os, sys, sysconfig
zip_path = sys.argv[1]
sys.path.insert(0, zip_path)
names = json.loads(sys.argv[2])
for name in names:
    importlib.import_module(name)
stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
outside = sorted(n for n, m in list(sys.modules.items())
                 if getattr(m, "__file__", None) and not m.__file__.startswith(zip_path + os.sep)
                 and not any(os.path.realpath(m.__file__).startswith(s + os.sep) for s in stdlib))
try:
    import cryptography
    crypto = True
except ImportError:
    crypto = False
print(json.dumps({"outside": outside, "cryptography": crypto, "sys_path": sys.path,
                  "site": "site" in sys.modules}))
"""


def test_every_pod_module_imports_from_the_zip_alone(built, tmp_path):
    """The proof of the file list: a fresh interpreter with no site-packages (-I -S) and only the
    zip added imports every probe module, the hub and the runner, and nothing from elsewhere."""
    zip_path = tmp_path / "payload.zip"
    zip_path.write_bytes(built.data)
    names = [f"netconform.probes.{p}" for p in PROBES] + [
        "netconform.remote.hub", "netconform.runners.local", "netconform.runners._worker", "netconform.pids",
        "dns.message", "dns.name", "dns.rdatatype", "dns.rcode", "dns.flags", "dns.rdtypes.IN.A",
        "dns.rdtypes.ANY.SOA", "pyroute2", "pyroute2.iproute"]
    out = subprocess.run([sys.executable, "-I", "-S", "-c", _IMPORT_ALL, str(zip_path), json.dumps(names)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["outside"] == [] and not got["site"]
    assert got["cryptography"] is False  # the pod has none: https.py must not need it


def _copy_tree(dst: Path) -> Path:
    shutil.copytree(REPO / "netconform", dst / "netconform",
                    ignore=shutil.ignore_patterns("__pycache__", "lab", "*.pyc"))
    return dst


def test_an_unshippable_import_fails_the_build(tmp_path):
    root = _copy_tree(tmp_path / "a")
    (root / "netconform" / "probes" / "needs_requests.py").write_text("def f():\n    import requests\n")
    with pytest.raises(PayloadError, match="netconform.probes.needs_requests imports 'requests'"):
        build_payload(root)


@pytest.mark.parametrize("line", ["from scapy.all import sr1", "import kubernetes.client",
                                  "from netconform.lab import dataplane"])
def test_forbidden_code_fails_the_build(tmp_path, line):
    root = _copy_tree(tmp_path / "b")
    (root / "netconform" / "lab").mkdir(exist_ok=True)
    (root / "netconform" / "lab" / "__init__.py").write_text("")
    (root / "netconform" / "lab" / "dataplane.py").write_text("")
    (root / "netconform" / "probes" / "bad.py").write_text(f"def f():\n    {line}\n")
    with pytest.raises(PayloadError):
        build_payload(root)


def test_a_copied_tree_builds_the_same_payload(built, tmp_path):
    """Only file contents count: another checkout of the same sources gives the same bytes."""
    root = _copy_tree(tmp_path / "c")
    assert build_payload(root).sha256 == built.sha256


def test_building_imports_nothing_it_ships():
    code = ("import sys; from netconform.remote.payload import build_payload; build_payload();"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dns', 'pyroute2', 'scapy', 'cryptography')"
            " or m.startswith('netconform.probes') or m.startswith('netconform.runners')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_source_root_is_this_checkout():
    assert payload_mod._source_root() == REPO
