"""Who is calling: localhost is admin (apiServer.authn.localhostIsAdmin); others show a user token.

Rules (Kuma's defaults, plus the one the project asks for):
- secrets (Secret, GlobalSecret), `/config` and token issuing are for admins only;
- any other write needs an authenticated user (a valid `Authorization: Bearer <user token>`);
- only admins may write a data source the control plane resolves itself, `secret` (Secrets are
  admins' to read) or `file` (a file on the control plane's host): others give such data inline;
- only admins may set a field that makes proxies write files on their hosts (MeshHealthCheck eventLogPath);
- only admins may see proxies' Envoy admin views (config dump, stats, clusters: `require_view`);
- reads are open.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Iterable

import falcon

from appliance.api.errors import KumaError
from appliance.store import Store
from appliance.tokens import signing

ADMIN_GROUP = "mesh-system:admin"
ANONYMOUS = "mesh-system:anonymous/mesh-system:unauthenticated"
_LOCALHOST = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def authenticated(self) -> bool:
        return self.name != "mesh-system:anonymous"

    def __str__(self) -> str:
        return f"{self.name}/{','.join(self.groups)}" if self.authenticated else ANONYMOUS


LOCAL_ADMIN = User("mesh-system:admin", (ADMIN_GROUP, "mesh-system:authenticated"))
ANONYMOUS_USER = User("mesh-system:anonymous", ("mesh-system:unauthenticated",))


def user_token_key(store: Store, key_id: str) -> bytes | None:
    secret = store.get("GlobalSecret", "", signing.signing_key_name(signing.USER_TOKEN_SIGNING_KEY_PREFIX, key_id))
    if secret is None:
        return None
    return base64.b64decode(secret.content["data"])


def require_admin_for_fields(req: falcon.Request, fields: list[tuple[str, str]]) -> None:
    """A non-admin cannot set a field that reaches beyond the mesh, e.g. one that makes proxies write a file."""
    user: User = req.context.user
    if fields and not user.is_admin:
        path, effect = fields[0]
        raise KumaError(403, "Access Denied", f"user \"{user}\" cannot set {path}: only admins may {effect}")


class Authenticator:
    """falcon middleware: sets req.context.user."""

    def __init__(self, store: Store, localhost_is_admin: bool) -> None:
        self.store = store
        self.localhost_is_admin = localhost_is_admin

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header("Authorization") or ""
        if header.startswith("Bearer "):
            req.context.user = self._from_token(header[len("Bearer "):].strip())
        elif self.localhost_is_admin and req.remote_addr in _LOCALHOST:
            req.context.user = LOCAL_ADMIN
        else:
            req.context.user = ANONYMOUS_USER

    def _from_token(self, token: str) -> User:
        try:
            key = user_token_key(self.store, signing.token_key_id(token))
            if key is None:
                raise signing.InvalidToken("there is no signing key for this token")
            claims = signing.verify(token, key)
        except signing.InvalidToken as e:
            raise KumaError(401, "Unauthenticated", f"invalid authentication data: {e}")
        groups = tuple(claims.get("Groups") or ()) + ("mesh-system:authenticated",)
        return User(str(claims.get("Name", "")), groups)


def require_admin(req: falcon.Request, what: str) -> None:
    user: User = req.context.user
    if not user.is_admin:
        raise KumaError(403, "Access Denied", f"user \"{user}\" cannot access {what}")


# Kuma's access lists for a proxy's Envoy admin views (access.static.viewConfigDump|viewStats|viewClusters)
ENVOY_ADMIN_VIEWS = ("viewConfigDump", "viewStats", "viewClusters")


def require_view(req: falcon.Request, view: str) -> None:
    """May the caller see this Envoy admin view of a proxy? For now only admins may see any of them (Kuma
    lets everybody by default: a config dump shows every route, a stats page every peer)."""
    if view not in ENVOY_ADMIN_VIEWS:
        raise ValueError(f"unknown Envoy admin view {view!r}")
    require_admin(req, "envoy proxy info")


def require_writer(req: falcon.Request) -> None:
    user: User = req.context.user
    if not user.authenticated:
        raise KumaError(403, "Access Denied", f"user \"{user}\" cannot modify resources: "
                                              "send a user token (Authorization: Bearer ...)")


def require_admin_for_data_sources(req: falcon.Request, sources: Iterable[tuple[str, Any]]) -> None:
    """A non-admin cannot make the control plane read a Secret or a file on their behalf (into a proxy's config)."""
    user: User = req.context.user
    if user.is_admin:
        return
    for path, source in sources:
        if not isinstance(source, dict):
            continue
        for kind, what in (("file", "a file on its host"), ("secret", "a Secret")):
            if source.get(kind) is not None:
                raise KumaError(403, "Access Denied", f"user \"{user}\" cannot use {path}.{kind}: only admins may "
                                f"make the control plane read {what}; give the data inline (inline or inlineString)")
