"""Shared fixtures live in tests/plugins/ (one module per kind of resource)."""

import pytest

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.stack",
    "tests.plugins.browser",
]


@pytest.fixture(autouse=True)
def test_job_kinds(monkeypatch):
    """The tests' own job kinds (tests/fixtures.py) beside the product's, for the test's duration."""
    from core.jobs.kinds import JOB_KINDS
    from tests.fixtures import TEST_JOB_KINDS

    for kind, entry in TEST_JOB_KINDS.items():
        monkeypatch.setitem(JOB_KINDS, kind, entry)
