"""Shared pytest setup: one real PostgreSQL per session (started only when a test asks for it), and a
one-line summary of the Kuma fixture replay (run / passed / skipped)."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.support import PostgresServer

# kuma-cp serves the HTTPS API on :5682 by default (as Kuma). Control planes that tests start by
# hand would all want that port; CpProcess turns it back on, on a free port.
os.environ.setdefault("KUMA_API_SERVER_HTTPS_ENABLED", "false")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session; give each module its own `postgres_server.database()`."""
    server = PostgresServer()
    yield server
    server.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts PostgreSQL is `slow`, so `make test-fast` (-m "not slow") leaves it out: it asks
    for `postgres_server`, or runs with the parameter "postgres" (store fixtures that ask for it by name)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "postgres_server" in getattr(item, "fixturenames", ()) or (
                callspec is not None and "postgres" in callspec.params.values()):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    """One line per store: the replay must pass and skip the same fixtures on each."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_kuma_fixtures.py::test_fixture[" not in nodeid:
                continue
            params = nodeid.split("[", 1)[1].rstrip("]").split("-")
            store = next((p for p in (params[0], params[-1]) if p in ("sqlite", "postgres")), "?")
            by_outcome = counts.setdefault(store, {"passed": 0, "failed": 0, "skipped": 0})
            by_outcome[outcome] += 1
    for store, c in sorted(counts.items()):
        terminalreporter.write_line(
            f"Kuma 2.14 REST fixtures ({store}): {sum(c.values())} run, {c['passed']} passed, "
            f"{c['failed']} failed, {c['skipped']} skipped")
