"""Fixtures for the CA tests: one mesh CA per session, since RSA key generation is the slow part.

The CA has Kuma's 2048-bit key so strict verifiers accept chains through it."""
from __future__ import annotations

import pytest

from appliance.ca import builtin


@pytest.fixture(scope="session")
def mesh_ca() -> tuple[bytes, bytes]:
    return builtin.new_root_ca("default", "ca-1")
