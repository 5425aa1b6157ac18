"""Shared pytest setup: one real PostgreSQL per session (started only when a test asks for it), and a
one-line summary of the Kuma fixture replay (run / passed / skipped)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session; give each module its own `postgres_server.database()`."""
    server = PostgresServer()
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "test_kuma_fixtures.py::test_fixture[" in getattr(report, "nodeid", ""):
                counts[outcome] += 1
    total = sum(counts.values())
    if total:
        terminalreporter.write_line(
            f"Kuma 2.14 REST fixtures: {total} run, {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped")
