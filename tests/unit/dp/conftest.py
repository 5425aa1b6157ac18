"""Fixtures for kuma-dp's tests: a stub control plane per test."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.unit.dp.stub import StubCp


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubCp]:
    cp = StubCp(tmp_path).start()
    try:
        yield cp
    finally:
        cp.stop()
