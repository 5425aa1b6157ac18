"""Which secrets are token signing keys (and their serials) and which decide the tokens of proxies."""
from __future__ import annotations

import pytest

from appliance.tokens import issuer


@pytest.mark.parametrize("name, serial", [
    ("user-token-signing-key-1", 1),
    ("user-token-signing-key-0002", 2),       # Kuma's own rotation example
    ("user-token-signing-key-+3", 3),         # as Go's Atoi reads it
    ("user-token-signing-key", None),         # Kuma 1.3's unnumbered key: not ours to sign with
    ("user-token-signing-key-two", None),
    ("user-token-signing-key--1", None),
    ("user-token-signing-key-1-old", None),
    ("admin-user-token", None),
])
def test_key_serial(name: str, serial: int | None) -> None:
    assert issuer.key_serial(name, issuer.USER_TOKENS.key_prefix) == serial


@pytest.mark.parametrize("type, mesh, name, decides", [
    ("Secret", "default", "dataplane-token-revocations-default", "default"),
    ("Secret", "default", "dataplane-token-signing-key-default-2", "default"),
    ("Secret", "default", "dataplane-token-signing-key-other-2", None),   # another mesh's name, misplaced
    ("Secret", "default", "db-password", None),
    ("GlobalSecret", "", "zone-token-revocations", ""),
    ("GlobalSecret", "", "zone-token-signing-key-3", ""),
    ("GlobalSecret", "", "user-token-revocations", None),    # user tokens are checked per API request
    ("Mesh", "", "default", None),
])
def test_the_secrets_that_decide_proxy_tokens(type: str, mesh: str, name: str, decides: str | None) -> None:
    assert issuer.proxy_tokens_of(type, mesh, name) == decides
