"""Shared fixtures live in tests/plugins/ (one module per kind of resource)."""

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.stack",
    "tests.plugins.browser",
]
