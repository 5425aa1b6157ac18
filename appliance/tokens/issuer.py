"""Dataplane, zone and user tokens: issued with, and verified against, signing keys kept as secrets.

As Kuma 2.14 (pkg/core/tokens): each kind of token has a family of signing keys, secrets named
`<prefix>-<serial>`, several of which may live at once so that a key can be rotated without cutting
anyone off. A new token is signed with the key of the highest serial and carries that serial as its
`kid`; a token is verified with the key its `kid` names, however many newer keys exist. Removing
a key is how its tokens are cut off. A token whose ID (`jti`) is listed in the kind's revocations
secret (its data: comma-separated IDs) is refused.

| tokens    | keys (serial n)                                        | revocations                               |
| dataplane | Secret `dataplane-token-signing-key-<mesh>-n` in <mesh> | Secret `dataplane-token-revocations-<mesh>` |
| zone      | GlobalSecret `zone-token-signing-key-n`                 | GlobalSecret `zone-token-revocations`     |
| user      | GlobalSecret `user-token-signing-key-n`                 | GlobalSecret `user-token-revocations`     |
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from appliance.core.resources.model import Resource
from appliance.gocompat import atoi
from appliance.store import AlreadyExists, ListQuery, Store, WriteOp
from appliance.tokens import signing

ZONE_TOKEN_SIGNING_KEY_PREFIX = "zone-token-signing-key"
DATAPLANE_TOKEN_REVOCATIONS_PREFIX = "dataplane-token-revocations-"
USER_TOKEN_REVOCATIONS = "user-token-revocations"
ZONE_TOKEN_REVOCATIONS = "zone-token-revocations"
PROXY_TYPES = ("dataplane", "ingress", "egress")


class SigningKeyNotFound(Exception):
    pass


@dataclass(frozen=True)
class TokenKind:
    """Where one kind of token keeps its signing keys and its revocations."""
    type: str           # Secret (dataplane tokens, in their mesh) or GlobalSecret
    mesh: str
    key_prefix: str
    revocations: str    # the name of the revocations secret

    def is_key(self, name: str) -> bool:
        return key_serial(name, self.key_prefix) is not None


def dataplane_tokens(mesh: str) -> TokenKind:
    return TokenKind("Secret", mesh, signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX + mesh,
                     DATAPLANE_TOKEN_REVOCATIONS_PREFIX + mesh)


USER_TOKENS = TokenKind("GlobalSecret", "", signing.USER_TOKEN_SIGNING_KEY_PREFIX, USER_TOKEN_REVOCATIONS)
ZONE_TOKENS = TokenKind("GlobalSecret", "", ZONE_TOKEN_SIGNING_KEY_PREFIX, ZONE_TOKEN_REVOCATIONS)


def key_serial(name: str, prefix: str) -> int | None:
    """The serial of a signing key's secret `<prefix>-<serial>` (`0002` is 2, as Kuma's Atoi reads it)."""
    if not name.startswith(prefix + "-"):
        return None
    try:
        serial = atoi(name[len(prefix) + 1:])
    except ValueError:
        return None
    return serial if serial >= 0 else None


def _not_found(kind: TokenKind, key_id: str) -> SigningKeyNotFound:
    name = signing.signing_key_name(kind.key_prefix, key_id)
    where = (f"Secret of name \"{name}\" in mesh \"{kind.mesh}\"" if kind.mesh
             else f"GlobalSecret of name \"{name}\"")
    return SigningKeyNotFound(f"there is no signing key with KID {key_id}. {where} is not found. "
                              "If signing key was rotated, regenerate the token")


def _key_data(secret: Resource) -> bytes:
    try:
        return base64.b64decode(secret.content.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyNotFound(f"{secret.type} \"{secret.name}\" does not hold a signing key "
                                 "(data must be a base64 PEM: kumactl generate signing-key)") from None


def signing_keys(store: Store, kind: TokenKind) -> list[tuple[int, Resource]]:
    page = store.list(ListQuery(type=kind.type, mesh=kind.mesh, name_contains=kind.key_prefix))
    return [(serial, res) for res in page.items
            if (serial := key_serial(res.name, kind.key_prefix)) is not None]


def latest_key(store: Store, kind: TokenKind) -> tuple[str, bytes]:
    """(kid, PEM) of the key new tokens are signed with: the highest serial."""
    keys = signing_keys(store, kind)
    if not keys:
        raise _not_found(kind, signing.DEFAULT_KEY_ID)
    serial, secret = max(keys, key=lambda k: k[0])
    return str(serial), _key_data(secret)


def key_for(store: Store, kind: TokenKind, key_id: str) -> bytes:
    """The key a token's kid names: `<prefix>-<kid>`, or the key whose serial is that number
    (a key named `...-0002` signs tokens with kid 2)."""
    secret = store.get(kind.type, kind.mesh, signing.signing_key_name(kind.key_prefix, key_id))
    if secret is None:
        try:
            wanted = atoi(key_id)
        except ValueError:
            raise _not_found(kind, key_id) from None
        secret = next((res for serial, res in signing_keys(store, kind) if serial == wanted), None)
        if secret is None:
            raise _not_found(kind, key_id)
    return _key_data(secret)


def ensure_key(store: Store, kind: TokenKind) -> None:
    """Create key 1 when the kind has no signing key at all (never next to rotated keys)."""
    if signing_keys(store, kind):
        return
    data = signing.signing_key_secret_data(signing.new_signing_key_pem())
    res = Resource(kind.type, kind.mesh, signing.signing_key_name(kind.key_prefix), {"data": data},
                   {"kuma.io/origin": "zone", "kuma.io/zone": "default", "kuma.io/env": "universal"})
    try:
        store.write([WriteOp("create", res)])
    except AlreadyExists:
        pass


def revoked_ids(store: Store, kind: TokenKind) -> frozenset[str]:
    """The token IDs listed in the kind's revocations secret (Kuma: data is `id1,id2,...`, a final
    newline ignored). Unreadable revocations refuse every token rather than none."""
    secret = store.get(kind.type, kind.mesh, kind.revocations)
    if secret is None:
        return frozenset()
    try:
        text = base64.b64decode(secret.content.get("data") or "").decode()
    except (binascii.Error, ValueError):
        raise signing.InvalidToken(f"could not check if the token is revoked: {secret.type} "
                                   f"\"{kind.revocations}\" does not hold comma-separated token IDs") from None
    return frozenset(text.removesuffix("\n").split(",")) - {""}


def proxy_tokens_of(type: str, mesh: str, name: str) -> str | None:
    """The mesh whose proxies' tokens a secret decides (a signing key or the revocations of
    dataplane tokens there; "" for zone tokens, which zone egresses show), or None."""
    if type == "Secret":
        kind = dataplane_tokens(mesh)
        return mesh if name == kind.revocations or kind.is_key(name) else None
    if type == "GlobalSecret" and (name == ZONE_TOKENS.revocations or ZONE_TOKENS.is_key(name)):
        return ""
    return None


def issue(store: Store, kind: TokenKind, claims: dict[str, Any], valid_for: float) -> str:
    key_id, key = latest_key(store, kind)
    return signing.sign(claims, key, key_id, valid_for)


def verify(store: Store, kind: TokenKind, token: str) -> dict[str, Any]:
    """The token's claims if it is signed by the key its kid names, current, and not revoked;
    else InvalidToken or SigningKeyNotFound, with Kuma's reason."""
    key_id = signing.token_key_id(token)
    if not key_id:
        raise signing.InvalidToken("JWT token must have kid header")
    claims = signing.verify(token, key_for(store, kind, key_id))
    if str(claims.get("jti", "")) in revoked_ids(store, kind):
        raise signing.InvalidToken("token is revoked")
    return claims


def issue_dataplane_token(store: Store, mesh: str, name: str, tags: dict[str, list[str]], proxy_type: str,
                          workload: str, valid_for: float) -> str:
    claims = {"Name": name, "Mesh": mesh, "Tags": tags, "Type": proxy_type, "Workload": workload}
    return issue(store, dataplane_tokens(mesh), claims, valid_for)


def verify_dataplane_token(store: Store, mesh: str, token: str) -> dict[str, Any]:
    return verify(store, dataplane_tokens(mesh), token)


def issue_zone_token(store: Store, zone: str, scope: list[str], valid_for: float) -> str:
    ensure_key(store, ZONE_TOKENS)
    return issue(store, ZONE_TOKENS, {"Zone": zone, "Scope": scope}, valid_for)


def verify_zone_token(store: Store, token: str) -> dict[str, Any]:
    return verify(store, ZONE_TOKENS, token)


def issue_user_token(store: Store, name: str, groups: list[str], valid_for: float) -> str:
    return issue(store, USER_TOKENS, {"Name": name, "Groups": groups}, valid_for)


def verify_user_token(store: Store, token: str) -> dict[str, Any]:
    return verify(store, USER_TOKENS, token)
