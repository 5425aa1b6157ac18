"""Dataplane, zone and user tokens: issued with, and verified against, signing keys kept as secrets.

Where the keys live (as Kuma 2.14): dataplane tokens use the Secret `dataplane-token-signing-key-<mesh>-<kid>`
in the mesh; zone tokens the GlobalSecret `zone-token-signing-key-<kid>`; user tokens the
GlobalSecret `user-token-signing-key-<kid>`.
"""
from __future__ import annotations

import base64
from typing import Any

from appliance.core.resources.model import Resource
from appliance.store import AlreadyExists, Store, WriteOp
from appliance.tokens import signing

ZONE_TOKEN_SIGNING_KEY_PREFIX = "zone-token-signing-key"
PROXY_TYPES = ("dataplane", "ingress", "egress")


class SigningKeyNotFound(Exception):
    pass


def _key(store: Store, type: str, mesh: str, prefix: str, key_id: str) -> bytes:
    name = signing.signing_key_name(prefix, key_id)
    secret = store.get(type, mesh, name)
    if secret is None:
        where = f"Secret of name \"{name}\" in mesh \"{mesh}\"" if mesh else f"GlobalSecret of name \"{name}\""
        raise SigningKeyNotFound(f"there is no signing key with KID {key_id}. {where} is not found. "
                                 "If signing key was rotated, regenerate the token")
    return base64.b64decode(secret.content["data"])


def ensure_global_key(store: Store, prefix: str) -> None:
    name = signing.signing_key_name(prefix)
    if store.get("GlobalSecret", "", name) is None:
        data = signing.signing_key_secret_data(signing.new_signing_key_pem())
        res = Resource("GlobalSecret", "", name, {"data": data},
                       {"kuma.io/origin": "zone", "kuma.io/zone": "default", "kuma.io/env": "universal"})
        try:
            store.write([WriteOp("create", res)])
        except AlreadyExists:
            pass


def issue_dataplane_token(store: Store, mesh: str, name: str, tags: dict[str, list[str]], proxy_type: str,
                          workload: str, valid_for: float) -> str:
    key = _key(store, "Secret", mesh, signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX + mesh, signing.DEFAULT_KEY_ID)
    claims = {"Name": name, "Mesh": mesh, "Tags": tags, "Type": proxy_type, "Workload": workload}
    return signing.sign(claims, key, signing.DEFAULT_KEY_ID, valid_for)


def verify_dataplane_token(store: Store, mesh: str, token: str) -> dict[str, Any]:
    key_id = signing.token_key_id(token)
    key = _key(store, "Secret", mesh, signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX + mesh, key_id)
    return signing.verify(token, key)


def issue_zone_token(store: Store, zone: str, scope: list[str], valid_for: float) -> str:
    ensure_global_key(store, ZONE_TOKEN_SIGNING_KEY_PREFIX)
    key = _key(store, "GlobalSecret", "", ZONE_TOKEN_SIGNING_KEY_PREFIX, signing.DEFAULT_KEY_ID)
    return signing.sign({"Zone": zone, "Scope": scope}, key, signing.DEFAULT_KEY_ID, valid_for)


def verify_zone_token(store: Store, token: str) -> dict[str, Any]:
    key = _key(store, "GlobalSecret", "", ZONE_TOKEN_SIGNING_KEY_PREFIX, signing.token_key_id(token))
    return signing.verify(token, key)
