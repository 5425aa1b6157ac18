"""MeshAccessLog: where proxies write access logs and in which format (Kuma v2.14.3)."""
from __future__ import annotations

import json
import re
from typing import Any

from appliance.policies._common import (
    Errors, STR, STR_MAP, arr, as_dict, as_list, as_str, enum, index, is_file_path, join, obj, otel_endpoint_or_ref,
)
from appliance.policies._targetref import (
    DATAPLANE, MATCH, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_HTTP_ROUTE, MESH_MULTI_ZONE_SERVICE,
    MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, affects_inbounds, top_level_deprecations,
    validate_match, validate_target_ref,
)
from appliance.policies.meshaccesslog._address import is_url

KIND = "MeshAccessLog"
PATH = "meshaccesslogs"
SHORT_NAME = "mal"
HAS_STATUS = True  # Kuma 2.14 gives MeshAccessLog an (empty) status
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": True, "has_rules": True, "is_from_as_rules": True}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 600
HAS_PLUGIN = True

_FORMAT = obj({
    "json": arr(obj({"key": STR, "value": STR}, required=("key", "value"))),
    "omitEmptyValues": {"type": "boolean", "default": False},
    "plain": STR,
    "type": enum("Plain", "Json"),
}, required=("type",))
_CONF = obj({"backends": arr(obj({
    "file": obj({"format": _FORMAT, "path": {"type": "string", "minLength": 1}}, required=("path",)),
    "openTelemetry": obj({
        "attributes": arr(obj({
            "key": {"type": "string", "pattern": "^[a-z]([a-z0-9]|[._][a-z0-9])*$"},
            "value": STR,
        }, required=("key", "value"))),
        "backendRef": obj({"kind": enum("MeshOpenTelemetryBackend"), "labels": STR_MAP}, required=("kind",)),
        "body": {},  # any JSON: an OpenTelemetry log body template
        "endpoint": {"type": "string", "default": ""},
    }),
    "tcp": obj({"address": {"type": "string", "minLength": 1}, "format": _FORMAT}, required=("address",)),
    "type": enum("Tcp", "File", "OpenTelemetry"),
}, required=("type",)))})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("default", "targetRef"))),
    "rules": arr(obj({"default": _CONF, "matches": arr(MATCH)}, required=("default",))),
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("default", "targetRef"))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE, MESH_HTTP_ROUTE)


def validate(spec: dict[str, Any]) -> Errors:
    # Kuma checks the top-level targetRef even when absent, as the implicit `kind: Mesh`.
    top_ref = spec.get("targetRef") if spec.get("targetRef") is not None else {"kind": MESH}
    out = validate_target_ref(top_ref, "spec.targetRef", _TOP_KINDS,
                              gateway_listener_tags=True, inbound=affects_inbounds(spec))
    to, froms, rules = as_list(spec.get("to")), as_list(spec.get("from")), as_list(spec.get("rules"))
    if rules and (to or froms):
        out.append(("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"))
    if not rules and not to and not froms:
        out.append(("spec", "at least one of 'from', 'to' or 'rules' has to be defined"))
    kinds = (MESH,) if as_dict(top_ref).get("kind") == MESH_GATEWAY else _TO_KINDS
    for i, item in enumerate(to):
        path, item = index("spec.to", i), as_dict(item)
        out += validate_target_ref(item.get("targetRef"), join(path, "targetRef"), kinds)
        out += _validate_default(join(path, "default"), as_dict(item.get("default")))
    for i, item in enumerate(froms):
        path, item = index("spec.from", i), as_dict(item)
        out += validate_target_ref(item.get("targetRef"), join(path, "targetRef"), (MESH,))
        out += _validate_default(join(path, "default"), as_dict(item.get("default")))
    for i, rule in enumerate(rules):
        path, rule = index("spec.rules", i), as_dict(rule)
        for j, match in enumerate(as_list(rule.get("matches"))):
            out += validate_match(match, index(join(path, "matches"), j))
        out += _validate_default(join(path, "default"), as_dict(rule.get("default")))
    return out


def _validate_default(path: str, conf: dict[str, Any]) -> Errors:
    if conf.get("backends") is None:
        return [(join(path, "backends"), "must be defined")]
    out: Errors = []
    for i, backend in enumerate(as_list(conf["backends"])):
        out += _validate_backend(index(join(path, "backends"), i), as_dict(backend))
    return out


def _validate_backend(path: str, backend: dict[str, Any]) -> Errors:
    field = {"File": "file", "Tcp": "tcp", "OpenTelemetry": "openTelemetry"}.get(as_str(backend.get("type")))
    if field is None:
        return []  # the schema's enum already refused it
    root = join(path, field)
    if backend.get(field) is None:
        return [(root, "must be defined")]
    conf = as_dict(backend[field])
    out: Errors = []
    if field in ("file", "tcp") and conf.get("format") is not None:
        out += _validate_format(join(root, "format"), as_dict(conf["format"]))
    if field == "file" and not is_file_path(as_str(conf.get("path"))):
        out.append((join(root, "path"), "file backend requires a valid path"))
    if field == "tcp" and not is_url(as_str(conf.get("address"))):
        out.append((join(root, "address"), "tcp backend requires valid address"))
    if field == "openTelemetry":
        out += _validate_otel(root, conf)
    return out


def _validate_otel(root: str, conf: dict[str, Any]) -> Errors:
    out = otel_endpoint_or_ref(root, conf)
    for i, attribute in enumerate(as_list(conf.get("attributes"))):
        out += _otel_attribute_name(join(index(join(root, "attributes"), i), "key"),
                                    as_str(as_dict(attribute).get("key")))
    return out


_OTEL_ATTRIBUTE = re.compile(r"[a-z](?:[a-z0-9]|[._][a-z0-9])*")


def _otel_attribute_name(path: str, key: str) -> Errors:
    if key == "":
        return [(path, "must be defined")]
    if "%" in key:
        return [(path, "must be a static OpenTelemetry attribute name; placeholders are only supported in values")]
    if key.startswith("otel."):
        return [(path, "must not use the reserved OpenTelemetry prefix 'otel.'")]
    if not _OTEL_ATTRIBUTE.fullmatch(key):
        return [(path, "must start with a lowercase letter, use only lowercase letters, digits, '.' or '_', "
                       "avoid consecutive delimiters, and end with a letter or digit")]
    return []


def _validate_format(path: str, fmt: dict[str, Any]) -> Errors:
    if fmt.get("type") == "Plain":
        if fmt.get("plain") is None:
            return [(join(path, "plain"), "must be defined")]
        return [(join(path, "plain"), "must not be empty")] if fmt["plain"] == "" else []
    if fmt.get("type") != "Json":
        return []
    if fmt.get("json") is None:
        return [(join(path, "json"), "must be defined")]
    entries = as_list(fmt["json"])
    out: Errors = [] if entries else [(join(path, "json"), "must not be empty")]
    for i, entry in enumerate(entries):
        entry_path = index(join(path, "json"), i)
        name, value = as_str(as_dict(entry).get("key")), as_str(as_dict(entry).get("value"))
        if name == "":
            out.append((join(entry_path, "key"), "key cannot be empty"))
        if value == "":
            out.append((join(entry_path, "value"), "value cannot be empty"))
        # Kuma pastes key and value between quotes unescaped, so a quote or backslash breaks the object.
        try:
            json.loads(f'{{"{name}": "{value}"}}')
        except ValueError:
            out.append((entry_path, "is not a valid JSON object"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = ["'from' field is deprecated, use 'rules' instead"] if as_list(spec.get("from")) else []
    backends = [as_dict(backend) for section in ("to", "from", "rules") for item in as_list(spec.get(section))
                for backend in as_list(as_dict(as_dict(item).get("default")).get("backends"))]
    if any(as_dict(b.get("openTelemetry")).get("endpoint") and as_dict(b.get("openTelemetry")).get("backendRef") is None
           for b in backends if b.get("openTelemetry") is not None):
        out.append("openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a MeshOpenTelemetryBackend "
                   "resource instead")
    return out + top_level_deprecations(spec.get("targetRef")) + _not_applied(spec)


def _backend_paths(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"spec.{section}[{i}].default.backends[{j}]", as_dict(backend))
            for section in ("to", "from", "rules") for i, item in enumerate(as_list(spec.get(section)))
            for j, backend in enumerate(as_list(as_dict(as_dict(item).get("default")).get("backends")))]


def _not_applied(spec: dict[str, Any]) -> list[str]:
    """Nothing accepted silently does nothing: this control plane serves no MeshOpenTelemetryBackend, so a
    backend that names one logs nothing."""
    out = [f"'{path}.openTelemetry.backendRef' is stored but not applied to proxies by this control plane "
           "(MeshOpenTelemetryBackend is not served): use openTelemetry.endpoint"
           for path, backend in _backend_paths(spec)
           if backend.get("type") == "OpenTelemetry" and as_dict(backend.get("openTelemetry")).get("backendRef")]
    return out


def admin_only(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Fields only an admin may set: (field path, what setting it makes happen). A `file` backend makes the
    Envoy of every selected proxy create and append to that path on its host, as the proxy's user: one who
    may only write policies must not be able to write files there (or fill a disk)."""
    return [(f"{path}.file.path", "make proxies write a file on their hosts")
            for path, backend in _backend_paths(spec)
            if backend.get("type") == "File" and as_dict(backend.get("file")).get("path") is not None]


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
