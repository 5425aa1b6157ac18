"""MeshTimeout: connection, idle and HTTP timeouts on both sides of a proxy (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import (
    DURATION, Errors, arr, as_dict, as_list, duration_greater_than_zero_or_nil, duration_not_negative_or_nil, index,
    join, obj,
)
from appliance.policies._targetref import (
    DATAPLANE, MATCH, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_HTTP_ROUTE, MESH_MULTI_ZONE_SERVICE,
    MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, affects_inbounds, top_level_deprecations,
    validate_rule_matches, validate_target_ref,
)

KIND = "MeshTimeout"
PATH = "meshtimeouts"
SHORT_NAME = "mt"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": True, "has_rules": True, "is_from_as_rules": True}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1000
HAS_PLUGIN = True

_HTTP_FIELDS = ("requestTimeout", "streamIdleTimeout", "maxStreamDuration", "maxConnectionDuration",
                "requestHeadersTimeout")
_CONF = obj({
    "connectionTimeout": DURATION,
    "http": obj({name: DURATION for name in sorted(_HTTP_FIELDS)}),
    "idleTimeout": DURATION,
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
    "rules": arr(obj({"default": _CONF, "matches": arr(MATCH)})),
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

# Universal has no namespaces, so every policy there has the "system" role and its wider kinds.
_TOP_KINDS = (MESH, MESH_SUBSET, DATAPLANE, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_HTTP_ROUTE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE, MESH_HTTP_ROUTE)
_TO_KINDS_UNDER_ROUTE = (MESH, MESH_EXTERNAL_SERVICE)
_ROUTE_MESSAGE = "can't be specified when top-level TargetRef is referencing MeshHTTPRoute"
_SPIFFE_MESSAGE = ("can't be specified when matches contain spiffeID because this field cannot be "
                   "conditioned on source identity")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS,
                                   gateway_listener_tags=True, inbound=affects_inbounds(spec))
    to, froms, rules = as_list(spec.get("to")), as_list(spec.get("from")), as_list(spec.get("rules"))
    if rules and (to or froms):
        out.append(("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"))
    if not rules and not to and not froms:
        out.append(("spec", "at least one of 'from', 'to' or 'rules' has to be defined"))
    top = as_dict(spec.get("targetRef")).get("kind") or MESH
    if top in (MESH_HTTP_ROUTE, MESH_GATEWAY):
        if froms:
            out.append(("spec.from", "must not be defined"))
    else:
        for i, item in enumerate(froms):
            path = index("spec.from", i)
            out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
            out += _validate_default(join(path, "default"), as_dict(item).get("default"), top)
    kinds = _TO_KINDS_UNDER_ROUTE if top in (MESH_HTTP_ROUTE, MESH_GATEWAY) else _TO_KINDS
    for i, item in enumerate(to):
        path = index("spec.to", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), kinds)
        out += _validate_default(join(path, "default"), as_dict(item).get("default"), top)
    for i, rule in enumerate(rules):
        path = index("spec.rules", i)
        rule = as_dict(rule)
        out += _validate_matches(join(path, "matches"), join(path, "default"), rule)
        out += _validate_default(join(path, "default"), rule.get("default"), top)
    return out


def _validate_matches(path: str, default_path: str, rule: dict[str, Any]) -> Errors:
    out: Errors = []
    errors, has_spiffe_id = validate_rule_matches(as_list(rule.get("matches")), lambda i: index(path, i))
    out += errors
    if has_spiffe_id:
        # Envoy applies these per connection or before the client is known, so no per-identity value.
        conf = as_dict(rule.get("default"))
        http = as_dict(conf.get("http"))
        out += [(join(default_path, name), _SPIFFE_MESSAGE) for name in ("connectionTimeout", "idleTimeout")
                if conf.get(name) is not None]
        out += [(join(default_path, f"http.{name}"), _SPIFFE_MESSAGE)
                for name in ("requestHeadersTimeout", "maxStreamDuration", "maxConnectionDuration")
                if conf.get("http") is not None and http.get(name) is not None]
    return out


def _validate_default(path: str, conf: Any, top: str) -> Errors:
    conf = as_dict(conf)
    if all(conf.get(name) is None for name in ("connectionTimeout", "idleTimeout", "http")):
        return [(path, "at least one timeout should be configured")]
    out: Errors = []
    http = conf.get("http")
    if top == MESH_HTTP_ROUTE:
        # A route only owns per-request timeouts; connection-level ones belong to the service.
        out += [(join(path, name), _ROUTE_MESSAGE) for name in ("connectionTimeout", "idleTimeout")
                if conf.get(name) is not None]
        if http is not None:
            out += [(join(path, f"http.{name}"), _ROUTE_MESSAGE)
                    for name in ("maxStreamDuration", "maxConnectionDuration") if as_dict(http).get(name) is not None]
    out += duration_greater_than_zero_or_nil(join(path, "connectionTimeout"), conf.get("connectionTimeout"))
    out += duration_not_negative_or_nil(join(path, "idleTimeout"), conf.get("idleTimeout"))
    if http is not None:
        http = as_dict(http)
        http_path = join(path, "http")
        if all(http.get(name) is None for name in _HTTP_FIELDS[:4]):
            out.append((http_path, "at least one timeout in this section should be configured"))
        for name in _HTTP_FIELDS:
            out += duration_not_negative_or_nil(join(http_path, name), http.get(name))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = ["'from' field is deprecated, use 'rules' instead"] if as_list(spec.get("from")) else []
    return out + top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    """pkg/defaults/mesh/meshtimeout.go; durations as Go's time.Duration.String() prints them."""
    sidecars = {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "connectionTimeout": "5s", "idleTimeout": "1h0m0s",
            "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m0s"}}}],
        # Inbound side: twice the outbound values, or disabled, so the caller's timeout fires first.
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {
            "connectionTimeout": "10s", "idleTimeout": "2h0m0s",
            "http": {"requestTimeout": "0s", "streamIdleTimeout": "1h0m0s", "maxStreamDuration": "0s"}}}],
    }
    gateways = {
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "idleTimeout": "1h0m0s", "http": {"streamIdleTimeout": "5s"}}}],
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {
            "idleTimeout": "5m0s", "http": {"streamIdleTimeout": "5s", "requestHeadersTimeout": "500ms"}}}],
    }
    return [(f"mesh-gateways-timeout-all-{mesh}", gateways), (f"mesh-timeout-all-{mesh}", sidecars)]
