"""MeshHTTPRoute: matching HTTP requests and sending them to weighted backends (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import (
    BOOL, Errors, HEADER_KEY_VALUE, HEADER_MATCH, INT_OR_STR, STR, arr, as_dict, as_list, as_str,
    dns1123_subdomain_errors, enum, index, is_ip, join, obj, unrouted_backends,
)
from appliance.policies._targetref import (
    BACKEND_REF, DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_backend_ref,
    validate_target_ref,
)

KIND = "MeshHTTPRoute"
PATH = "meshhttproutes"
SHORT_NAME = "mhttpr"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 100
HAS_PLUGIN = True

_HEADER_MODIFIER = obj({
    "add": arr(HEADER_KEY_VALUE, maxItems=16),
    "remove": arr(STR, maxItems=16),
    "set": arr(HEADER_KEY_VALUE, maxItems=16),
})
_PRECISE_HOSTNAME = {"type": "string", "minLength": 1, "maxLength": 253,
                     "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_PATH_REWRITE = obj({
    "replaceFullPath": STR,
    "replacePrefixMatch": STR,
    "type": enum("ReplaceFullPath", "ReplacePrefixMatch"),
}, required=("type",))
_FILTER = obj({
    "requestHeaderModifier": _HEADER_MODIFIER,
    "requestMirror": obj({"backendRef": BACKEND_REF, "percentage": INT_OR_STR}, required=("backendRef",)),
    "requestRedirect": obj({
        "hostname": _PRECISE_HOSTNAME,
        "path": _PATH_REWRITE,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "scheme": enum("http", "https"),
        "statusCode": {"type": "integer", "default": 302, "enum": [301, 302, 303, 307, 308]},
    }),
    "responseHeaderModifier": _HEADER_MODIFIER,
    "type": enum("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
                 "RequestMirror"),
    "urlRewrite": obj({"hostToBackendHostname": BOOL, "hostname": _PRECISE_HOSTNAME, "path": _PATH_REWRITE}),
}, required=("type",))
_MATCH = obj({
    "headers": arr(HEADER_MATCH),
    "method": enum("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"),
    "path": obj({
        "type": enum("Exact", "PathPrefix", "RegularExpression"),
        "value": {"type": "string", "minLength": 1},
    }, required=("type", "value")),
    "queryParams": arr(obj({
        "name": {"type": "string", "minLength": 1},
        "type": enum("Exact", "RegularExpression"),
        "value": STR,
    }, required=("name", "type", "value"))),
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "targetRef": TARGET_REF,
    "to": arr(obj({
        "hostnames": arr(STR),
        "rules": arr(obj({
            "default": obj({"backendRefs": arr(BACKEND_REF), "filters": arr(_FILTER)}),
            "matches": arr(_MATCH, minItems=1),
        }, required=("default", "matches"))),
        "targetRef": TARGET_REF,
    }, required=("rules", "targetRef"))),
})

_TOP_KINDS = (MESH, MESH_GATEWAY, MESH_SUBSET, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)
_BACKEND_KINDS = (MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)
# Gateway API conversion names a backend it could not resolve like this, slash and all.
_UNRESOLVED_BACKEND = "kuma.io/unresolved-backend"


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    top = as_dict(spec.get("targetRef")).get("kind") or MESH
    for i, item in enumerate(as_list(spec.get("to"))):
        path, item = index("spec.to", i), as_dict(item)
        kinds = (MESH,) if top == MESH_GATEWAY else _TO_KINDS
        out += validate_target_ref(item.get("targetRef"), join(path, "targetRef"), kinds)
        for j, rule in enumerate(as_list(item.get("rules"))):
            out += _validate_rule(index(join(path, "rules"), j), as_dict(rule), top)
        if top != MESH_GATEWAY and as_list(item.get("hostnames")):
            out.append((join(path, "hostnames"), "must not be defined"))
    return out


def _validate_rule(path: str, rule: dict[str, Any], top: str) -> Errors:
    out: Errors = []
    matches = as_list(rule.get("matches"))
    for i, match in enumerate(matches):
        out += _validate_match(index(join(path, "matches"), i), as_dict(match))
    conf = as_dict(rule.get("default"))
    filters = conf.get("filters")
    if filters is not None:
        for i, item in enumerate(as_list(filters)):
            out += _validate_filter(index(join(path, "default.filters"), i), as_dict(item), matches, top)
    backends_path = join(path, "default.backendRefs")
    backends = as_list(conf.get("backendRefs"))
    # A redirect answers the request itself, so only then may a gateway rule have no backend.
    redirects = any(as_dict(f).get("type") == "RequestRedirect" for f in as_list(filters))
    if not backends and top == MESH_GATEWAY and not redirects:
        out.append((backends_path, "must not be empty"))
    for i, backend in enumerate(backends):
        out += validate_target_ref(backend, index(backends_path, i), _BACKEND_KINDS,
                                   allowed_invalid_names=(_UNRESOLVED_BACKEND,))
        out += validate_backend_ref(backend, index(backends_path, i))
    return out


def _validate_match(path: str, match: dict[str, Any]) -> Errors:
    out: Errors = []
    if match.get("path") is not None:
        kind, value = as_dict(match["path"]).get("type"), as_str(as_dict(match["path"]).get("value"))
        value_path = join(path, "path.value")
        if kind == "PathPrefix" and value != "/":
            if value.endswith("/"):
                out.append((value_path, "does not need a trailing slash because only a `/`-separated prefix or "
                                        "an entire path is matched"))
            if not value.startswith("/"):
                out.append((value_path, "must be an absolute path"))
        elif kind == "Exact" and not value.startswith("/"):
            out.append((value_path, "must be an absolute path"))
    seen: set[str] = set()
    for i, param in enumerate(as_list(match.get("queryParams"))):
        name = as_str(as_dict(param).get("name"))
        if name in seen:
            out.append((join(index(join(path, "queryParams"), i), "name"), f"multiple entries for name {name}"))
        seen.add(name)
    for i, header in enumerate(as_list(match.get("headers"))):
        header = as_dict(header)
        if header.get("type") in ("Present", "Absent") and header.get("value"):
            out.append((join(index(join(path, "headers"), i), "value"), "must not be defined"))
    return out


def _prefix_only(matches: list[Any]) -> bool:
    """Prefix replacement needs a matched prefix; no matches at all means the "/" prefix."""
    return all(as_dict(as_dict(m).get("path")).get("type") == "PathPrefix" for m in matches)


def _validate_filter(path: str, item: dict[str, Any], matches: list[Any], top: str) -> Errors:
    kind = item.get("type")
    if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        field = "requestHeaderModifier" if kind == "RequestHeaderModifier" else "responseHeaderModifier"
        if item.get(field) is None:
            return [(join(path, field), "must be defined")]
        return _validate_header_modifier(join(path, field), as_dict(item[field]))
    if kind in ("RequestRedirect", "URLRewrite"):
        field = "requestRedirect" if kind == "RequestRedirect" else "urlRewrite"
        if item.get(field) is None:
            return [(join(path, field), "must be defined")]
        conf, field_path = as_dict(item[field]), join(path, field)
        out: Errors = []
        if as_dict(conf.get("path")).get("replacePrefixMatch") is not None and not _prefix_only(matches):
            out.append((join(field_path, "path.replacePrefixMatch"),
                        "can only appear if all matches match a path prefix"))
        hostname = conf.get("hostname")
        if isinstance(hostname, str):
            if is_ip(hostname):
                out.append((join(field_path, "hostname"), "cannot be an IP address"))
            else:
                out += [(join(field_path, "hostname"), problem) for problem in dns1123_subdomain_errors(hostname)]
        if kind == "URLRewrite" and conf.get("hostToBackendHostname") is True:
            if top != MESH_GATEWAY:
                out.append((join(field_path, "hostToBackendHostname"), "can only be set with MeshGateway"))
            if hostname is not None:
                out.append((join(field_path, "hostToBackendHostname"), "cannot be set together with hostname"))
        return out
    if kind == "RequestMirror":
        if item.get("requestMirror") is None:
            return [(join(path, "requestMirror"), "must be defined")]
        return validate_target_ref(as_dict(item["requestMirror"]).get("backendRef"),
                                   join(path, "requestMirror.backendRef"), (MESH_SERVICE, MESH_SERVICE_SUBSET))
    return []


def _validate_header_modifier(path: str, modifier: dict[str, Any]) -> Errors:
    if all(modifier.get(name) is None for name in ("set", "add", "remove")):
        return [(path, "must have at least one defined: set, add, remove")]
    out: Errors = []
    seen: set[str] = set()
    for field in ("set", "add", "remove"):
        for i, entry in enumerate(as_list(modifier.get(field))):
            name = as_str(entry if field == "remove" else as_dict(entry).get("name"))
            if name in seen:
                out.append((join(index(join(path, field), i), "name"), "duplicate header name"))
            seen.add(name)
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update, and ours for what is stored but not applied."""
    return top_level_deprecations(spec.get("targetRef")) + unrouted_backends(spec)


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []

