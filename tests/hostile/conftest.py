"""Hostile-input suite: tallies every input tried across its tests and prints one line at the end."""

from __future__ import annotations

from tests.hostile.tally import TALLY


def pytest_terminal_summary(terminalreporter):
    if TALLY.tried:
        terminalreporter.write_line(f"hostile inputs: {TALLY.line()}")
