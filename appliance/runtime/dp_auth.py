"""Who may be served: dataplane and zone tokens checked on a stream's first request and at bootstrap,
and checked again on every open stream when a signing key or a revocation changes."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol

from appliance.api.errors import KumaError
from appliance.core.events import Change
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.runtime import dp_definition
from appliance.tokens import claims, issuer, signing
from appliance.xds.server import Recheck

log = logging.getLogger("appliance.dataplanes")


class Rechecks(Protocol):
    """A server of proxy streams (ADS, HDS) that can close the ones whose token no longer passes."""
    def recheck(self, check: Recheck, meshes: set[str]) -> int: ...


class DataplaneAuth:
    def __init__(self, manager: ResourceManager, enabled: bool, zone: str) -> None:
        """`enabled`: tokens are required (dpServer.authn.dpProxy.type is not "none").
        `zone`: a zone token must be for this zone (or for none)."""
        self.manager = manager
        self.store = manager.store
        self.enabled = enabled
        self.zone = zone

    # As Kuma (pkg/xds/auth): a stream is authenticated on its first request, against the Dataplane
    # its node metadata carries (kuma-dp --dataplane-file) and against the stored one. The stored one
    # is what the stream is served (its certificate, its config), so the token must allow it even
    # when the proxy brings a definition of its own.
    def authenticate(self, node: object, metadata: dict[str, str]) -> tuple[str, str]:
        """A sidecar's node id is `<mesh>.<name>`; a zone egress's is `.<name>` (it belongs to no mesh)."""
        node_id = getattr(node, "id", "")
        mesh, sep, name = node_id.partition(".")
        if not sep or not name:
            raise PermissionError(f"node id {node_id!r} is not <mesh>.<name>")
        token = bearer(metadata)
        if self.enabled and not token:
            raise PermissionError("authentication failed: no dataplane token (kuma-dp --dataplane-token-file)")
        if not mesh:
            if self.enabled:
                self.check_zone_token(token, "egress")
            return mesh, name
        raw = dp_definition.node_definition(node)
        try:
            definition = dp_definition.decode(raw, "Dataplane", mesh, name, exact=True) if raw else None
        except KumaError as e:
            raise PermissionError(f"authentication failed: {e.detail}") from None
        stored = self.store.get("Dataplane", mesh, name)
        if self.enabled:
            if definition is None and stored is None:
                raise PermissionError(f'resource "{mesh}.{name}" not found; create a Dataplane in Kuma CP first or '
                                      "pass it as an argument to kuma-dp")
            self.check_token(token, mesh, name, definition, stored)
        if definition is not None:
            try:   # the definition is registered from this stream: the API's rules apply to it
                dp_definition.check_rules(self.manager, definition, stored)
            except KumaError as e:
                raise PermissionError("the Dataplane in the node metadata is not valid: "
                                      f"{dp_definition.explain(e)}") from None
        return mesh, name

    def verified(self, mesh: str, token: str) -> dict[str, Any]:
        """The claims of a dataplane token (zone token for mesh "") that is signed, current and not revoked."""
        try:
            if mesh:
                return issuer.verify_dataplane_token(self.store, mesh, token)
            return issuer.verify_zone_token(self.store, token)
        except (signing.InvalidToken, issuer.SigningKeyNotFound) as e:
            hint = "" if mesh else " (a zone egress needs a zone token: kumactl generate zone-token --scope egress)"
            raise PermissionError(f"authentication failed: {e}{hint}")

    def check_zone_token(self, token: str, scope: str) -> None:
        """Kuma's zone-entity check: a zone token whose scope includes `scope`, for this zone."""
        token_claims = self.verified("", token)
        scopes = token_claims.get("Scope") or []
        if scopes and scope not in scopes:
            raise PermissionError(f"authentication failed: token cannot be used to authenticate zone entity "
                                  f"({scope} is out of token's scope: {scopes})")
        if token_claims.get("Zone") and self.zone and token_claims["Zone"] != self.zone:
            raise PermissionError(f"authentication failed: zone from requestor: {self.zone} is different than "
                                  f"in token: {token_claims['Zone']}")

    def check_token(self, token: str, mesh: str, name: str, definition: Resource | None,
                    stored: Resource | None) -> None:
        """The dataplane token must allow the proxy's own definition and the Dataplane stored under its
        name (Kuma's validateUpsert: a token that may not manage the registered proxy cannot replace it)."""
        token_claims = self.verified(mesh, token)
        try:
            if definition is not None:
                claims.check_dataplane(token_claims, mesh, name, definition.content, definition.labels)
        except claims.TokenMismatch as e:
            raise PermissionError(f"authentication failed: {e}")
        try:
            if stored is not None and (definition is None or (stored.content, stored.labels)
                                       != (definition.content, definition.labels)):
                claims.check_dataplane(token_claims, mesh, name, stored.content, stored.labels)
        except claims.TokenMismatch as e:
            prefix = "you are trying to override existing proxy to which you don't have an access.: " if definition else ""
            raise PermissionError(f"authentication failed: {prefix}{e}")

    def authorize_bootstrap(self, token: str, mesh: str, name: str, definition: Resource | None,
                            current: Resource | None) -> None:
        """The token check of a stream, answered as the bootstrap endpoint answers (401)."""
        try:
            if mesh:
                self.check_token(token, mesh, name, definition, current)
            else:
                self.check_zone_token(token, "egress")
        except PermissionError as e:
            raise KumaError(401, "Unauthenticated", str(e))

    # A token is checked again, on every open stream it opened, when a secret that decides it changes
    # (its mesh's revocations or signing keys): a revoked token loses its stream at once, not at the
    # proxy's next reconnect. Claims are not checked again: they did not change.
    def watch(self, loop: asyncio.AbstractEventLoop, *servers: Rechecks) -> Callable[[], None]:
        """Recheck the tokens of the servers' streams (ADS, HDS; on `loop`) after each such change; returns the
        unsubscribe."""
        def from_writer_thread(changes: list[Change]) -> None:
            meshes = {mesh for c in changes if (mesh := issuer.proxy_tokens_of(c.type, c.mesh, c.name)) is not None}
            if meshes and self.enabled:
                loop.call_soon_threadsafe(self._recheck, servers, meshes)
        return self.store.hub.subscribe(from_writer_thread)

    def _recheck(self, servers: tuple[Rechecks, ...], meshes: set[str]) -> None:
        def check(key: tuple[str, str], metadata: dict[str, str]) -> None:
            self.verified(key[0], bearer(metadata))
        closed = sum(server.recheck(check, meshes) for server in servers)
        if closed:
            log.info("closed %d xDS stream(s) whose token is no longer valid", closed)


def bearer(metadata: dict[str, str]) -> str:
    """The token a stream's gRPC metadata carries (kuma-dp sends `authorization: <token>`)."""
    return metadata.get("authorization", "").removeprefix("Bearer ").strip()
