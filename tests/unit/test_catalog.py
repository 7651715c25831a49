"""checks/catalog.yaml and the checks stay in step: every check id has an entry, every entry a check."""
from __future__ import annotations

import ast
from pathlib import Path

from netconform.catalog import CATALOG_PATH, SEVERITIES, load_catalog

CHECKS_DIR = Path(__file__).resolve().parents[2] / "checks"


def check_ids_in_code(checks_dir: Path = CHECKS_DIR) -> dict[str, list[str]]:
    """check id -> test functions marked with it (`@pytest.mark.check("id")`), read from the source."""
    found: dict[str, list[str]] = {}
    for path in sorted(checks_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "check" and \
                    isinstance(func.value, ast.Attribute) and func.value.attr == "mark":
                assert node.args and isinstance(node.args[0], ast.Constant), \
                    f"{path.name}:{node.lineno}: check id must be a string literal"
                found.setdefault(node.args[0].value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_every_check_has_an_entry_and_every_entry_a_check():
    in_code = check_ids_in_code()
    catalog = load_catalog()
    assert in_code, "no @pytest.mark.check found under checks/"
    missing = sorted(set(in_code) - set(catalog))
    orphans = sorted(set(catalog) - set(in_code))
    assert not missing, f"checks without a catalog entry: {', '.join(f'{m} ({in_code[m][0]})' for m in missing)}"
    assert not orphans, f"catalog entries with no check: {', '.join(orphans)} (in {CATALOG_PATH})"


def test_entries_are_complete():
    for cid, info in load_catalog().items():
        assert info.severity in SEVERITIES
        assert info.title and info.meaning and info.remediation, cid
        assert all(link.startswith("https://") for link in info.links), cid


def test_the_scanner_sees_a_mark(tmp_path):
    (tmp_path / "test_x.py").write_text('import pytest\n@pytest.mark.check("dns.new")\ndef test_x():\n    pass\n')
    assert check_ids_in_code(tmp_path) == {"dns.new": ["test_x.py:2"]}
