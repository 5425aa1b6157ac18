"""RSA signing keys (stored as secrets, PEM in base64, as Kuma does) and JWT tokens signed with them."""
from __future__ import annotations

import base64
import functools
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_KEY_ID = "1"
USER_TOKEN_SIGNING_KEY_PREFIX = "user-token-signing-key"
DATAPLANE_TOKEN_SIGNING_KEY_PREFIX = "dataplane-token-signing-key-"


class InvalidToken(Exception):
    pass


def new_signing_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def signing_key_secret_data(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def signing_key_name(prefix: str, key_id: str = DEFAULT_KEY_ID) -> str:
    return f"{prefix}-{key_id}"


def sign(claims: dict[str, Any], key_pem: bytes, key_id: str, valid_for: float) -> str:
    now = int(time.time())
    payload = {**claims, "iat": now, "nbf": now, "exp": now + int(valid_for), "jti": str(uuid.uuid4())}
    return jwt.encode(payload, _private_key(key_pem, key_id), algorithm="RS256", headers={"kid": key_id})


def token_key_id(token: str) -> str:
    try:
        return str(jwt.get_unverified_header(token).get("kid", ""))
    except jwt.PyJWTError as e:
        raise InvalidToken(f"could not parse token: {e}") from e


@functools.lru_cache(maxsize=256)
def _loaded(key_pem: bytes) -> Any:
    # loading an RSA private key costs tens of ms; every proxy stream verifies a token
    return serialization.load_pem_private_key(key_pem, password=None)


def _private_key(key_pem: bytes, key_id: str) -> rsa.RSAPrivateKey:
    try:
        key = _loaded(key_pem)
    except (ValueError, TypeError) as e:
        raise InvalidToken(f"the signing key with KID {key_id} is not an RSA private key in PEM: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidToken(f"the signing key with KID {key_id} is not an RSA private key")
    return key


def verify(token: str, key_pem: bytes) -> dict[str, Any]:
    public = _private_key(key_pem, token_key_id(token)).public_key()
    try:
        return jwt.decode(token, public, algorithms=["RS256"], options={"require": ["exp"]})  # type: ignore[arg-type]
    except jwt.PyJWTError as e:
        raise InvalidToken(f"could not verify token: {e}") from e
