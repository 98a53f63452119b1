"""Shared pytest plumbing: counts that tests report go to the terminal summary."""

from __future__ import annotations

import pytest

_REPORTS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="session")
def peer_counts() -> dict[str, dict[str, int]]:
    """A dict a test fills with named counts; printed at the end of the run."""
    return _REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTS:
        return
    terminalreporter.section("FAISS peer: code classes (level, kind; d 1-16, K 16 and 256)")
    for name, counts in _REPORTS.items():
        line = "  ".join(f"{k}={v}" for k, v in counts.items())
        terminalreporter.write_line(f"{name}  {line}")
