"""Token signing keys with serial numbers (rotation without cutting anyone off) and revocation, as Kuma."""
from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest

from appliance.tokens import issuer, signing
from tests.support import LiveApi, live_api


def _new_key() -> str:
    """What `kumactl generate signing-key` prints (PEM, base64)."""
    return signing.signing_key_secret_data(signing.new_signing_key_pem())


def _user_token(api: LiveApi, name: str) -> str:
    r = api.post("/tokens/user", {"name": name, "validFor": "1h"})
    assert r.status_code == 200, r.text
    return r.text


def _who(api: LiveApi, token: str):
    return api.remote().get("/who-am-i", headers={"Authorization": f"Bearer {token}"})


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def _revoke(api: LiveApi, path: str, body: dict, *tokens: str) -> None:
    ids = ",".join(jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens)
    r = api.put(path, {**body, "data": base64.b64encode(ids.encode() + b"\n").decode()})
    assert r.status_code in (200, 201), r.text


def test_a_user_token_outlives_a_new_key_and_ends_with_its_own(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        old = _user_token(api, "alice")
        assert _kid(old) == "1"
        r = api.put("/global-secrets/user-token-signing-key-2",
                    {"type": "GlobalSecret", "name": "user-token-signing-key-2", "data": _new_key()})
        assert r.status_code == 201, r.text
        new = _user_token(api, "bob")
        assert _kid(new) == "2"
        assert _who(api, old).json()["name"] == "alice"
        assert _who(api, new).json()["name"] == "bob"
        # removing key 1 is the operator's decision: it ends the tokens it signed
        assert api.delete("/global-secrets/user-token-signing-key-1").status_code == 200
        r = _who(api, old)
        assert r.status_code == 401 and "there is no signing key with KID 1" in r.json()["detail"], r.text
        assert _who(api, new).json()["name"] == "bob"


def test_a_revoked_user_token_is_refused_at_its_next_request(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        revoked, kept = _user_token(api, "alice"), _user_token(api, "bob")
        assert _who(api, revoked).status_code == 200
        _revoke(api, "/global-secrets/user-token-revocations",
                {"type": "GlobalSecret", "name": "user-token-revocations"}, revoked)
        r = _who(api, revoked)
        assert r.status_code == 401 and "token is revoked" in r.json()["detail"], r.text
        assert _who(api, kept).json()["name"] == "bob"


def test_dataplane_and_zone_tokens_are_signed_with_the_highest_serial(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        old = api.post("/tokens/dataplane", {"mesh": "default", "name": "web-1"}).text
        # Kuma's own example names a rotated key with leading zeros: its serial is 2
        r = api.put("/meshes/default/secrets/dataplane-token-signing-key-default-0002",
                    {"type": "Secret", "mesh": "default", "name": "dataplane-token-signing-key-default-0002",
                     "data": _new_key()})
        assert r.status_code == 201, r.text
        new = api.post("/tokens/dataplane", {"mesh": "default", "name": "web-1"}).text
        assert (_kid(old), _kid(new)) == ("1", "2")
        for token in (old, new):
            assert issuer.verify_dataplane_token(api.store, "default", token)["Name"] == "web-1"
        zone_old = api.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}).text
        api.put("/global-secrets/zone-token-signing-key-7",
                {"type": "GlobalSecret", "name": "zone-token-signing-key-7", "data": _new_key()})
        zone_new = api.post("/tokens/zone", {"zone": "default", "scope": ["egress"]}).text
        assert (_kid(zone_old), _kid(zone_new)) == ("1", "7")
        _revoke(api, "/global-secrets/zone-token-revocations",
                {"type": "GlobalSecret", "name": "zone-token-revocations"}, zone_old)
        assert issuer.verify_zone_token(api.store, zone_new)["Scope"] == ["egress"]
        with pytest.raises(signing.InvalidToken, match="^token is revoked$"):
            issuer.verify_zone_token(api.store, zone_old)


def test_a_broken_signing_key_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with live_api(tmp_path, defaults=True) as api:
        api.put("/global-secrets/user-token-signing-key-3", {"type": "GlobalSecret", "name": "user-token-signing-key-3",
                                                             "data": base64.b64encode(b"not a key").decode()})
        r = api.post("/tokens/user", {"name": "alice", "validFor": "1h"})
        assert r.status_code == 500 and "not an RSA private key" in r.json()["detail"], r.text
        assert "Traceback" not in r.text
