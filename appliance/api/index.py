"""`GET /`, `/config`, `/_resources`, `/who-am-i`, `/_kri/{kri}` and `POST /tokens/user`."""
from __future__ import annotations

import socket
from typing import Any

import falcon

from appliance import PRODUCT, __version__
from appliance.api import auth, codec
from appliance.api.errors import KumaError, bad_request
from appliance.api.resources import _reply
from appliance.config import Config
from appliance.config.loader import parse_duration
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.store import Store
from appliance.tokens import signing


class Index:
    def __init__(self, instance_id: str) -> None:
        self.hostname = socket.gethostname()
        self.instance_id = instance_id

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _reply(resp, {"hostname": self.hostname, "product": PRODUCT, "version": __version__,
                      "instanceId": self.instance_id, "clusterId": self.instance_id.split("-")[0],
                      "gui": "", "basedOnKuma": "2.14.3"})


class ConfigDump:
    def __init__(self, config: Config) -> None:
        self.config = config

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        auth.require_admin(req, "control-plane metadata")
        _reply(resp, self.config.as_nested())


class WhoAmI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user: auth.User = req.context.user
        _reply(resp, {"name": user.name, "groups": list(user.groups)})


class ResourceTypes:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        out = []
        for t in sorted(registry.ALL_TYPES, key=lambda t: t.name):
            item: dict[str, Any] = {"includeInFederation": t.include_in_federation, "name": t.name, "path": t.path,
                                    "pluralDisplayName": t.plural, "readOnly": t.read_only, "scope": t.scope,
                                    "shortName": t.short_name, "singularDisplayName": t.singular}
            if t.policy:
                p = t.policy
                item["policy"] = {"hasFromTargetRef": p.has_from, "hasRulesTargetRef": p.has_rules,
                                  "hasToTargetRef": p.has_to, "isFromAsRules": p.is_from_as_rules,
                                  "isTargetRef": p.is_target_ref}
            out.append(item)
        _reply(resp, {"resources": out})


class KriLookup:
    """`GET /_kri/kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>`."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def on_get(self, req: falcon.Request, resp: falcon.Response, kri: str) -> None:
        parts = kri.split("_")
        if len(parts) < 2 or parts[0] != "kri":
            raise bad_request(f"bad request: invalid KRI {kri!r}: it has to start with kri_")
        rtype = registry.BY_SHORT_NAME.get(parts[1])
        if rtype is None:
            raise bad_request(f"bad request: unknown short name of resource type: \"{parts[1]}\"")
        if len(parts) != 7:
            raise bad_request(f"bad request: invalid KRI {kri!r}: expected "
                              "kri_<type>_<mesh>_<zone>_<namespace>_<name>_<sectionName>")
        mesh, name = parts[2], parts[5]
        if rtype.admin_only:
            auth.require_admin(req, f"the resource of type \"{rtype.name}\"")
        res = self.manager.get(rtype.name, mesh if rtype.scope == "Mesh" else "", name)
        if res is None:
            raise KumaError(404, "Could not retrieve a resource", "Not found")
        _reply(resp, codec.present(rtype, res))


class UserTokens:
    """`POST /tokens/user` {"name", "groups", "validFor"}: a user token signed by the CP (admins only)."""

    def __init__(self, store: Store, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        auth.require_admin(req, "the user token issuer")
        if not self.enabled:
            raise KumaError(400, "Could not issue a token", "issuing tokens using the control plane is disabled "
                                                            "(apiServer.authn.tokens.enableIssuer)")
        body = codec.parse_body(req.bounded_stream.read(codec.MAX_BODY + 1), req.content_type, "token request")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise bad_request("bad request: name must be a non-empty string")
        groups = body.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise bad_request("bad request: groups must be a list of strings")
        try:
            valid_for = _duration(body.get("validFor") or "24h")
        except ValueError as e:
            raise bad_request(f"bad request: validFor: {e}")
        key = auth.user_token_key(self.store, signing.DEFAULT_KEY_ID)
        if key is None:
            raise KumaError(404, "Signing Key not found", "there is no signing key with KID 1. GlobalSecret of "
                            "name \"user-token-signing-key-1\" is not found")
        token = signing.sign({"Name": body["name"], "Groups": groups}, key, signing.DEFAULT_KEY_ID, valid_for)
        resp.content_type = "text/plain"
        resp.text = token


def _duration(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration like 24h")
    return parse_duration(text)
