"""Ties each check to its catalog entry: `@pytest.mark.check("dns.resolves")` on the test.

At collection every test under checks/ must name a catalog id (like prowler validating a check's
metadata); the entry's id, area and severity go onto the item for the reporters.
"""
from __future__ import annotations

import pytest

from netconform.catalog import CheckInfo, load_catalog
from plugins.targets import CHECKS_DIR

CHECK_KEY = pytest.StashKey[CheckInfo]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "check(id): the catalog id of a netconform check (checks/catalog.yaml)")


def check_info(item: pytest.Item) -> CheckInfo | None:
    return item.stash.get(CHECK_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    catalog = load_catalog()
    problems = []
    for item in items:
        if CHECKS_DIR not in item.path.parents:
            continue
        marker = item.get_closest_marker("check")
        if marker is None or not marker.args:
            problems.append(f"{item.nodeid}: no @pytest.mark.check(<id>)")
            continue
        info = catalog.get(marker.args[0])
        if info is None:
            problems.append(f"{item.nodeid}: check id {marker.args[0]!r} is not in checks/catalog.yaml")
            continue
        item.stash[CHECK_KEY] = info
        item.user_properties += [("check_id", info.id), ("severity", info.severity), ("area", info.area)]
    if problems:
        raise pytest.UsageError("checks without a catalog entry: " + "; ".join(problems))
