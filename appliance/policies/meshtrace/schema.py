"""MeshTrace: distributed tracing to Zipkin, Datadog or OpenTelemetry, with sampling and tags (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from appliance.policies._common import (
    INT_OR_STR, STR, STR_MAP, Errors, arr, as_dict, as_list, as_str, enum, index, join, obj, otel_endpoint_or_ref,
    parse_decimal,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF,
    top_level_deprecations, validate_target_ref,
)
from appliance.policies.meshaccesslog._address import is_url

KIND = "MeshTrace"
PATH = "meshtraces"
SHORT_NAME = "mtr"
HAS_STATUS = True
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 700
HAS_PLUGIN = True

_BACKEND = obj({
    "datadog": obj({"splitService": {"type": "boolean", "default": False}, "url": STR}, required=("url",)),
    "openTelemetry": obj({
        "backendRef": obj({"kind": enum("MeshOpenTelemetryBackend"), "labels": STR_MAP}, required=("kind",)),
        "endpoint": {"type": "string", "default": ""},
    }),
    "type": enum("Zipkin", "Datadog", "OpenTelemetry"),
    "zipkin": obj({
        "apiVersion": {"type": "string", "default": "httpJson", "enum": ["httpJson", "httpProto"]},
        "sharedSpanContext": {"type": "boolean", "default": True},
        "traceId128bit": {"type": "boolean", "default": False},
        "url": STR,
    }, required=("url",)),
}, required=("type",))
_CONF = obj({
    "backends": arr(_BACKEND, maxItems=1),
    "sampling": obj({"client": INT_OR_STR, "overall": INT_OR_STR, "random": INT_OR_STR}),
    "tags": arr(obj({
        "header": obj({"default": STR, "name": STR}, required=("name",)),
        "literal": STR,
        "name": STR,
    }, required=("name",))),
})
SPEC_SCHEMA: dict[str, Any] = obj({"default": _CONF, "targetRef": TARGET_REF})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS)
    return out + _validate_default("spec.default", as_dict(spec.get("default")))


def _validate_default(path: str, conf: dict[str, Any]) -> Errors:
    out: Errors = []
    backends_path = join(path, "backends")
    if conf.get("backends") is None:
        out.append((backends_path, "must be defined"))
    backends = as_list(conf.get("backends"))
    if len(backends) == 1:
        out += _validate_backend(index(backends_path, 0), as_dict(backends[0]))
    elif len(backends) > 1:
        out.append((backends_path, "must have zero or one backend defined"))
    for i, tag in enumerate(as_list(conf.get("tags"))):
        tag, tag_path = as_dict(tag), index(join(path, "tags"), i)
        if as_str(tag.get("name")) == "":
            out.append((join(tag_path, "name"), "must not be empty"))
        if (tag.get("header") is not None) == (tag.get("literal") is not None):
            out.append((tag_path, "tag must have only one type defined: header, literal"))
    sampling = as_dict(conf.get("sampling"))
    for name in ("client", "random", "overall"):
        if sampling.get(name) is not None:
            out += _validate_sampling(join(path, f"sampling.{name}"), sampling[name])
    return out


def _validate_sampling(path: str, value: Any) -> Errors:
    number = parse_decimal(value)
    if number is None:
        return [(path, "string is not a number")]
    if number < 0 or number > 100:
        return [(path, "must be between 0 and 100")]
    return []


def _validate_backend(path: str, backend: dict[str, Any]) -> Errors:
    kind = backend.get("type")
    if kind == "Datadog":
        if backend.get("datadog") is None:
            return [(join(path, "datadog"), "must be defined")]
        return _validate_datadog_url(join(path, "datadog.url"), as_str(as_dict(backend["datadog"]).get("url")))
    if kind == "Zipkin":
        if backend.get("zipkin") is None:
            return [(join(path, "zipkin"), "must be defined")]
        url = as_str(as_dict(backend["zipkin"]).get("url"))
        if url == "":
            return [(join(path, "zipkin.url"), "must not be empty")]
        return [] if is_url(url) else [(join(path, "zipkin.url"), "must be a valid url")]
    if kind == "OpenTelemetry":
        if backend.get("openTelemetry") is None:
            return [(join(path, "openTelemetry"), "must be defined")]
        return otel_endpoint_or_ref(join(path, "openTelemetry"), as_dict(backend["openTelemetry"]))
    return []


def _validate_datadog_url(path: str, url: str) -> Errors:
    """net/url.ParseRequestURI, then: scheme http, a valid port, and no user, path or query (a `#` is part of
    the path for ParseRequestURI)."""
    if not url or (":" not in url and not url.startswith("/")):
        return [(path, "must be a valid url")]
    try:
        parts = urlsplit(url.replace("#", "%23"))
    except ValueError:
        return [(path, "must be a valid url")]
    host = parts.netloc.rpartition("@")[2]
    port = host.rpartition("]")[2].rpartition(":")[2] if ":" in host.rpartition("]")[2] else ""
    if port and not port.isdigit():
        return [(path, "must be a valid url")]
    out: Errors = []
    if parts.scheme != "http":
        out.append((path, "scheme must be http"))
    if port == "":
        out.append((path, "port must be defined"))
    elif not 0 < int(port) <= 65535:
        out.append((path, "port must be a valid (1-65535)"))
    opaque = bool(parts.scheme) and not parts.netloc and not parts.path.startswith("/")
    for name, present in (("opaque", opaque), ("user", "@" in parts.netloc),
                          ("path", parts.path != "" and not opaque), ("query", parts.query != "")):
        if present:
            out.append((path, f"{name} must not be defined"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = []
    backends = [as_dict(b) for b in as_list(as_dict(spec.get("default")).get("backends"))]
    if any(as_dict(b.get("openTelemetry")).get("endpoint") and as_dict(b.get("openTelemetry")).get("backendRef") is None
           for b in backends if b.get("openTelemetry") is not None):
        out.append("openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a MeshOpenTelemetryBackend "
                   "resource instead")
    return out + top_level_deprecations(spec.get("targetRef")) + _not_applied(spec, backends)


def _not_applied(spec: dict[str, Any], backends: list[dict[str, Any]]) -> list[str]:
    """Nothing accepted silently does nothing: what this control plane stores but does not apply."""
    out = []
    if any(b.get("type") == "OpenTelemetry" and as_dict(b.get("openTelemetry")).get("backendRef") for b in backends):
        out.append("'spec.default.backends[0].openTelemetry.backendRef' is stored but not applied to proxies by this "
                   "control plane (MeshOpenTelemetryBackend is not served): use openTelemetry.endpoint")
    return out


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
