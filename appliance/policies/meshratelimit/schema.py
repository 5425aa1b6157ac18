"""MeshRateLimit: local HTTP request and TCP connection rate limits (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.gocompat import duration_or_none
from appliance.policies._common import (
    DURATION, BOOL, Errors, HEADER_KEY_VALUE, INT, arr, as_dict, as_list, index, integer_greater_than_zero_or_nil,
    join, obj,
)
from appliance.policies._targetref import (
    DATAPLANE, MATCH, MESH, MESH_GATEWAY, MESH_HTTP_ROUTE, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET,
    TARGET_REF, affects_inbounds, includes_gateways, top_level_deprecations, validate_rule_matches, validate_target_ref,
)

KIND = "MeshRateLimit"
PATH = "meshratelimits"
SHORT_NAME = "mrl"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": True, "has_rules": True, "is_from_as_rules": True}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 900
HAS_PLUGIN = True

_RATE = obj({"interval": DURATION, "num": INT}, required=("interval", "num"))
_CONF = obj({"local": obj({
    "http": obj({
        "disabled": BOOL,
        "onRateLimit": obj({
            "headers": obj({"add": arr(HEADER_KEY_VALUE, maxItems=16), "set": arr(HEADER_KEY_VALUE, maxItems=16)}),
            "status": INT,
        }),
        "requestRate": _RATE,
    }),
    "tcp": obj({"connectionRate": _RATE, "disabled": BOOL}),
})})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
    "rules": arr(obj({"default": _CONF, "matches": arr(MATCH)})),
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_HTTP_ROUTE, DATAPLANE)
_GATEWAY_SCOPE = ("must not be defined when the scope includes a Gateway, select only proxyType Sidecar or "
                  "select only gateways and use spec.to")
_SPIFFE_MESSAGE = ("can't be specified when matches contain spiffeID because this field cannot be "
                   "conditioned on source identity")
_MIN_INTERVAL_NS = 50_000_000


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    to, froms, rules = as_list(spec.get("to")), as_list(spec.get("from")), as_list(spec.get("rules"))
    if rules and (to or froms):
        out.append(("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"))
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS,
                                   gateway_listener_tags=True, inbound=affects_inbounds(spec))
    top = spec.get("targetRef") if spec.get("targetRef") is not None else {"kind": MESH}
    # Inbound limits (rules, from) apply on sidecars only; gateways are limited through `to`. A top-level
    # MeshHTTPRoute counts as a gateway scope, so Kuma's separate MeshHTTPRoute messages never show.
    if rules and includes_gateways(top):
        out.append(("spec.rules", "must not be defined"))
    else:
        for i, rule in enumerate(rules):
            out += _validate_rule(index("spec.rules", i), as_dict(rule))
    if froms and includes_gateways(top):
        out.append(("spec.from", _GATEWAY_SCOPE))
    else:
        for i, item in enumerate(froms):
            path = index("spec.from", i)
            out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
            out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    if to and not includes_gateways(top):
        out.append(("spec.to", "must not be defined"))
    else:
        for i, item in enumerate(to):
            path = index("spec.to", i)
            out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
            out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    return out


def _validate_rule(path: str, rule: dict[str, Any]) -> Errors:
    out: Errors = []
    errors, has_spiffe_id = validate_rule_matches(as_list(rule.get("matches")),
                                                  lambda i: index(join(path, "matches"), i))
    out += errors
    # A TCP connection limit is shared by all clients, so it cannot depend on who connects.
    if has_spiffe_id and as_dict(as_dict(rule.get("default")).get("local")).get("tcp") is not None:
        out.append((join(path, "default.local.tcp"), _SPIFFE_MESSAGE))
    return out + _validate_default(join(path, "default"), rule.get("default"))


def _validate_default(path: str, conf: Any) -> Errors:
    local_path = join(path, "local")
    local = as_dict(conf).get("local")
    if local is None:
        return [(local_path, "must be defined")]
    local = as_dict(local)
    out: Errors = []
    http, tcp = local.get("http"), local.get("tcp")
    if http is None and tcp is None:
        out.append((local_path, "must have at least one defined: tcp, http"))
    if http is not None:
        http, http_path = as_dict(http), join(local_path, "http")
        if all(http.get(name) is None for name in ("disabled", "requestRate", "onRateLimit")):
            out.append((http_path, "must have at least one defined: disabled, requestRate, onRateLimit"))
        else:
            if http.get("requestRate") is not None:
                out += _validate_rate(join(http_path, "requestRate"), as_dict(http["requestRate"]))
            if http.get("onRateLimit") is not None:
                out += integer_greater_than_zero_or_nil(join(http_path, "onRateLimit.status"),
                                                        as_dict(http["onRateLimit"]).get("status"))
    if tcp is not None:
        tcp, tcp_path = as_dict(tcp), join(local_path, "tcp")
        if tcp.get("disabled") is None and tcp.get("connectionRate") is None:
            out.append((tcp_path, "must have at least one defined: disabled, connectionRate"))
        elif tcp.get("connectionRate") is not None:
            out += _validate_rate(join(tcp_path, "connectionRate"), as_dict(tcp["connectionRate"]))
    return out


def _validate_rate(path: str, rate: dict[str, Any]) -> Errors:
    out: Errors = []
    num = rate.get("num")
    if not isinstance(num, int) or num <= 0:
        out.append((join(path, "num"), "must be greater than 0"))
    interval = duration_or_none(rate.get("interval")) if rate.get("interval") is not None else 0
    if interval is not None and interval <= _MIN_INTERVAL_NS:
        out.append((join(path, "interval"), "must be greater than: 50ms"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = ["'from' field is deprecated, use 'rules' instead"] if as_list(spec.get("from")) else []
    for section in ("from", "rules", "to"):
        for i, item in enumerate(as_list(spec.get(section))):
            local = as_dict(as_dict(item).get("default")).get("local")
            status = as_dict(as_dict(as_dict(local).get("http")).get("onRateLimit")).get("status")
            if local is not None and isinstance(status, int) and status < 400:
                # Kuma names requestRate in this path although the field is onRateLimit.status.
                out.append(f"'spec.{section}[{i}].default.local.http.requestRate.status' must be 400 or higher. "
                           "Please update your configuration.")
    return out + top_level_deprecations(spec.get("targetRef")) + _not_applied(spec)


def _not_applied(spec: dict[str, Any]) -> list[str]:
    """What this control plane stores but does not apply (nothing accepted may silently do nothing): limits
    per client identity need Envoy's set_filter_state on the TLS handshake, which our xDS types lack."""
    return [f"'spec.rules[{i}]' with matches is stored but not applied to proxies: only rules without matches "
            "(for every client) are" for i, rule in enumerate(as_list(spec.get("rules")))
            if as_list(as_dict(rule).get("matches"))]


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
