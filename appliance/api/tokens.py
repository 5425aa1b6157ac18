"""`POST /tokens/user`, `/tokens/dataplane`, `/tokens/zone`: signed tokens, for whom access.static allows.

The checks come where Kuma makes them: the user and zone token access before the request is read,
the dataplane token access after it is validated.
"""
from __future__ import annotations

from typing import Any, Callable

import falcon

from appliance.api import auth, codec
from appliance.api.errors import KumaError, bad_request
from appliance.core.validation import Violations
from appliance.gocompat import go_quote, parse_duration
from appliance.store import Store
from appliance.tokens import issuer, signing

TEN_YEARS = 10 * 365 * 24 * 3600.0


def _read(req: falcon.Request, what: str) -> dict[str, Any]:
    body = codec.parse_body(req.bounded_stream.read(codec.MAX_BODY + 1), req.content_type, what)
    if not isinstance(body, dict):
        raise bad_request(f"invalid {what}: expected a JSON object")
    return body


def _valid_for(body: dict[str, Any], found: Violations, default: float | None) -> float:
    """Seconds a token lives, read as Kuma reads it: Go's time.ParseDuration, whose int64 of
    nanoseconds caps it at about 292 years (longer is refused, never wrapped or stretched).

    `default` is Kuma's for dataplane and zone tokens (10 years); user tokens have none.
    """
    raw = body.get("validFor")
    if raw is None or raw == "":
        if default is None:
            found.add("validFor", "cannot be empty")
            return 0.0
        return default
    if not isinstance(raw, str):
        found.add("validFor", f"is invalid: time: invalid duration {go_quote(str(raw))}")
        return 0.0
    try:
        nanos = parse_duration(raw)
    except ValueError as e:
        found.add("validFor", f"is invalid: {e}")
        nanos = 0
    if nanos == 0 and default is None:
        found.add("validFor", "cannot be empty or nil")
    return nanos / 1e9


def _text(resp: falcon.Response, token: str) -> None:
    resp.content_type = "text/plain"
    resp.text = token


def _issued(issue: Callable[[], str]) -> str:
    """A token, or Kuma's answer when there is no key to sign it with (or the latest one is broken)."""
    try:
        return issue()
    except issuer.SigningKeyNotFound as e:
        raise KumaError(404, "Signing Key not found", str(e))
    except signing.InvalidToken as e:
        raise KumaError(500, "Could not issue a token", str(e))


class Tokens:
    def __init__(self, store: Store, issuer_enabled: bool) -> None:
        self.store = store
        self.enabled = issuer_enabled

    def _enabled(self) -> None:
        if not self.enabled:
            raise KumaError(400, "Could not issue a token", "issuing tokens using the control plane is disabled "
                                                            "(apiServer.authn.tokens.enableIssuer)")

    def on_post_user(self, req: falcon.Request, resp: falcon.Response) -> None:
        auth.require(req, auth.GENERATE_USER_TOKEN, "", reason="action not allowed")
        self._enabled()
        body = _read(req, "user token request")
        found = Violations()
        if not isinstance(body.get("name"), str) or not body["name"]:
            found.add("name", "cannot be empty")
        groups = body.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            found.add("groups", "must be a list of strings")
        valid_for = _valid_for(body, found, None)
        found.raise_if_any("Invalid request")
        _text(resp, _issued(lambda: issuer.issue_user_token(self.store, body["name"], groups, valid_for)))

    def on_post_dataplane(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._enabled()
        body = _read(req, "dataplane token request")
        found = Violations()
        mesh, name = body.get("mesh") or "", body.get("name") or ""
        if not isinstance(mesh, str) or not mesh:
            found.add("mesh", "cannot be empty")
        if not isinstance(name, str):
            found.add("name", "must be a string")
        valid_for = _valid_for(body, found, TEN_YEARS)
        proxy_type = body.get("type") or ""
        if proxy_type and proxy_type not in issuer.PROXY_TYPES:
            found.add("type", f"{proxy_type!r} is not valid. Available values are: {', '.join(issuer.PROXY_TYPES)}")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                                 for v in tags.values()):
            found.add("tags", "must be a map of tag names to lists of values")
        found.raise_if_any("Invalid request")
        auth.require(req, auth.GENERATE_DP_TOKEN, "generate dataplane token")
        _text(resp, _issued(lambda: issuer.issue_dataplane_token(self.store, mesh, name, tags, proxy_type,
                                                                 str(body.get("workload") or ""), valid_for)))

    def on_post_zone(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._enabled()
        body = _read(req, "zone token request")
        zone = body.get("zone") or ""
        auth.require(req, auth.GENERATE_ZONE_TOKEN, f"generate zone token for zone '{zone}'")
        found = Violations()
        scope = body.get("scope")
        if scope is None:
            found.add("scope", "cannot be empty")
        elif not isinstance(scope, list) or not all(s in ("ingress", "egress") for s in scope):
            found.add("scope", "must be a list of: ingress, egress")
        valid_for = _valid_for(body, found, TEN_YEARS)
        found.raise_if_any("Invalid request")
        _text(resp, _issued(lambda: issuer.issue_zone_token(self.store, str(zone), scope, valid_for)))


def add_routes(app: falcon.App, store: Store, issuer_enabled: bool) -> None:
    tokens = Tokens(store, issuer_enabled)
    app.add_route("/tokens/user", tokens, suffix="user")
    app.add_route("/tokens/dataplane", tokens, suffix="dataplane")
    app.add_route("/tokens/zone", tokens, suffix="zone")
    # kumactl < 2.x used /tokens for dataplane tokens
    app.add_route("/tokens", tokens, suffix="dataplane")
