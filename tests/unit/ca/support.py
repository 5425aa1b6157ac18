"""Shared constants for the CA tests."""
from __future__ import annotations

# Small keys keep the suite fast; the shape of the certificates does not depend on the size.
TEST_KEY_SIZE = 1024
