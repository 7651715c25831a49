"""Registers netconform's pytest plugins (the suite's code lives in plugins/ and fixtures/)."""
pytest_plugins = [
    "plugins.options",
    "plugins.lab",
    "plugins.targets",
    "plugins.scheduling",
    "plugins.catalog",
    "fixtures.probing",
    "plugins.remote",
    "plugins.prefetch",
    "plugins.report",
]
