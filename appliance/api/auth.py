"""Who is calling, and what they may do.

Who: localhost is admin (apiServer.authn.localhostIsAdmin); others show a user token, verified as
Kuma does (signing key by kid, revocations) in appliance/tokens/issuer.py.

What (Kuma's static access, `access.static.<action>.users|groups`; its defaults give
mesh-system:admin everything):
- adminResources: Secrets and GlobalSecrets; also, on any resource, a data source the control plane
  resolves itself, `secret` (Secrets are theirs to read) or `file` (a file on the control plane's
  host), a field that makes proxies write files on their hosts (MeshHealthCheck eventLogPath), and
  writes of a type that can rewrite proxies' Envoy config at will (MeshProxyPatch:
  ResourceType.admin_writes), as it can make Envoy read or write any file or call anywhere;
- generateDpToken, generateUserToken, generateZoneToken: the token endpoints;
- viewConfigDump: a proxy's xDS config (`_config`); controlPlaneMetadata: `GET /config`;
- any other write needs an authenticated user (a valid `Authorization: Bearer <user token>`);
- other reads are open.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import falcon

from appliance.api.errors import KumaError
from appliance.config import Config
from appliance.config.schema import ACCESS_ACTIONS
from appliance.store import Store
from appliance.tokens import issuer, signing

ADMIN_GROUP = "mesh-system:admin"
# the actions of Kuma's static access (the names of their settings under access.static)
ADMIN_RESOURCES = "adminResources"
GENERATE_DP_TOKEN = "generateDpToken"
GENERATE_USER_TOKEN = "generateUserToken"
GENERATE_ZONE_TOKEN = "generateZoneToken"
VIEW_CONFIG_DUMP = "viewConfigDump"
CONTROL_PLANE_METADATA = "controlPlaneMetadata"
ANONYMOUS = "mesh-system:anonymous/mesh-system:unauthenticated"
_LOCALHOST = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @property
    def authenticated(self) -> bool:
        return self.name != "mesh-system:anonymous"

    def __str__(self) -> str:
        return f"{self.name}/{','.join(self.groups)}" if self.authenticated else ANONYMOUS


LOCAL_ADMIN = User("mesh-system:admin", (ADMIN_GROUP, "mesh-system:authenticated"))
ANONYMOUS_USER = User("mesh-system:anonymous", ("mesh-system:unauthenticated",))


@dataclass(frozen=True)
class StaticAccess:
    """Kuma's static access: for each action, the users and the groups allowed (a user is allowed
    when their name is listed or one of their groups is)."""
    lists: dict[str, tuple[frozenset[str], frozenset[str]]]

    @classmethod
    def from_config(cls, config: Config) -> "StaticAccess":
        return cls({action: (frozenset(config[f"access.static.{action}.users"]),
                             frozenset(config[f"access.static.{action}.groups"]))
                    for action, *_ in ACCESS_ACTIONS})

    def allows(self, user: User, action: str) -> bool:
        users, groups = self.lists[action]
        return user.name in users or any(group in groups for group in user.groups)


def may(req: falcon.Request, action: str) -> bool:
    return req.context.access.allows(req.context.user, action)


def require(req: falcon.Request, action: str, what: str, reason: str = "") -> None:
    """403 in Kuma's words unless the caller may do `action`: `user "<name>/<groups>" cannot access <what>`
    (or `reason`, where Kuma says something else)."""
    if not may(req, action):
        raise KumaError(403, "Access Denied", reason or f"user \"{req.context.user}\" cannot access {what}")


def require_admin_for_fields(req: falcon.Request, fields: list[tuple[str, str]]) -> None:
    """Only who may access admin resources can set a field that reaches beyond the mesh, e.g. one that
    makes proxies write a file."""
    if fields and not may(req, ADMIN_RESOURCES):
        path, effect = fields[0]
        raise KumaError(403, "Access Denied", f"user \"{req.context.user}\" cannot set {path}: only admins may "
                                              f"{effect}")


class Authenticator:
    """falcon middleware: sets req.context.user."""

    def __init__(self, store: Store, localhost_is_admin: bool, access: StaticAccess) -> None:
        self.store = store
        self.localhost_is_admin = localhost_is_admin
        self.access = access

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.access = self.access
        header = req.get_header("Authorization") or ""
        if header.startswith("Bearer "):
            req.context.user = self._from_token(header[len("Bearer "):].strip())
        elif self.localhost_is_admin and req.remote_addr in _LOCALHOST:
            req.context.user = LOCAL_ADMIN
        else:
            req.context.user = ANONYMOUS_USER

    def _from_token(self, token: str) -> User:
        try:
            claims = issuer.verify_user_token(self.store, token)
        except (signing.InvalidToken, issuer.SigningKeyNotFound) as e:
            raise KumaError(401, "Unauthenticated", f"invalid authentication data: {e}")
        groups = tuple(claims.get("Groups") or ()) + ("mesh-system:authenticated",)
        return User(str(claims.get("Name", "")), groups)


def require_writer(req: falcon.Request) -> None:
    user: User = req.context.user
    if not user.authenticated:
        raise KumaError(403, "Access Denied", f"user \"{user}\" cannot modify resources: "
                                              "send a user token (Authorization: Bearer ...)")


def require_admin_for_data_sources(req: falcon.Request, sources: Iterable[tuple[str, Any]]) -> None:
    """A non-admin cannot make the control plane read a Secret or a file on their behalf (into a proxy's config)."""
    if may(req, ADMIN_RESOURCES):
        return
    user: User = req.context.user
    for path, source in sources:
        if not isinstance(source, dict):
            continue
        for kind, what in (("file", "a file on its host"), ("secret", "a Secret")):
            if source.get(kind) is not None:
                raise KumaError(403, "Access Denied", f"user \"{user}\" cannot use {path}.{kind}: only admins may "
                                f"make the control plane read {what}; give the data inline (inline or inlineString)")
