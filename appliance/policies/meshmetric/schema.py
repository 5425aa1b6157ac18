"""MeshMetric: which metrics a proxy publishes (Envoy's, the application's) and to which backends (Kuma v2.14.3).

A single-item policy (top-level targetRef + `default`): the policies selecting a proxy are merged in
precedence order. Prometheus backends are served by the proxy (plugin.py) and listed by the monitoring
assignment server (runtime/mads.py); kuma-dp pushes to OpenTelemetry backends given by `endpoint`. One given
by `backendRef` is stored with a warning: there is no MeshOpenTelemetryBackend here.
"""
from __future__ import annotations

import re
from typing import Any

from appliance.policies._common import (
    BOOL, DURATION, Errors, INT, STR, STR_MAP, arr, as_dict, as_list, as_str, enum, index, join, obj,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF,
    top_level_deprecations, validate_target_ref,
)

KIND = "MeshMetric"
PATH = "meshmetrics"
SHORT_NAME = "mm"
HAS_STATUS = True
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1500
HAS_PLUGIN = True

PROFILES = ("All", "Basic", "None")
SELECTOR_TYPES = ("Prefix", "Regex", "Exact", "Contains")
TLS_MODES = ("Disabled", "ProvidedTLS", "ActiveMTLSBackend")
DEFAULT_PORT = 5670
DEFAULT_PATH = "/metrics"

_SELECTOR = obj({"match": STR, "type": enum(*SELECTOR_TYPES)}, required=("match", "type"))
_CONF = obj({
    "applications": arr(obj({
        "address": STR, "name": STR, "path": {"type": "string", "default": DEFAULT_PATH}, "port": INT,
    }, required=("port",))),
    "backends": arr(obj({
        "openTelemetry": obj({
            "backendRef": obj({"kind": enum("MeshOpenTelemetryBackend"), "labels": STR_MAP}, required=("kind",)),
            "endpoint": {"type": "string", "default": ""},
            "refreshInterval": DURATION,
        }),
        "prometheus": obj({
            "clientId": STR,
            "path": {"type": "string", "default": DEFAULT_PATH},
            "port": {"type": "integer", "default": DEFAULT_PORT},
            "tls": obj({"mode": {"type": "string", "default": "Disabled", "enum": list(TLS_MODES)}}),
        }),
        "type": enum("Prometheus", "OpenTelemetry"),
    }, required=("type",))),
    "sidecar": obj({
        "includeUnused": BOOL,
        "profiles": obj({
            "appendProfiles": arr(obj({"name": enum(*PROFILES)}, required=("name",))),
            "exclude": arr(_SELECTOR),
            "include": arr(_SELECTOR),
        }),
    }),
})
SPEC_SCHEMA: dict[str, Any] = obj({"default": _CONF, "targetRef": TARGET_REF})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_GATEWAY, DATAPLANE)
_PORT_MESSAGE = "port must be a valid (1-65535)"


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    conf = as_dict(spec.get("default"))
    out += _validate_sidecar("spec.default.sidecar", conf.get("sidecar"))
    for i, app in enumerate(as_list(conf.get("applications"))):
        # Kuma's paths name the list item "application[i]" under "applications"
        out += _port(index("spec.default.applications.application", i), as_dict(app).get("port"))
    for i, backend in enumerate(as_list(conf.get("backends"))):
        out += _validate_backend(index("spec.default.backends.backend", i), as_dict(backend))
    return out


def _port(path: str, value: Any) -> Errors:
    return [] if isinstance(value, int) and 0 < value <= 65535 else [(path, _PORT_MESSAGE)]


def _validate_sidecar(path: str, sidecar: Any) -> Errors:
    profiles = as_dict(as_dict(sidecar).get("profiles"))
    out: Errors = []
    for field in ("exclude", "include"):
        for i, selector in enumerate(as_list(profiles.get(field))):
            selector = as_dict(selector)
            where = index(join(path, f"profiles.{field}"), i)
            kind = as_str(selector.get("type"))
            if kind == "Regex":
                if _regex_error(as_str(selector.get("match"))):
                    out.append((join(where, "match"), "invalid regex"))
            elif kind not in SELECTOR_TYPES:
                out.append((join(where, "type"),
                            f"unrecognized type '{kind}' - 'Regex', 'Prefix', 'Exact' are supported"))
    for i, profile in enumerate(as_list(profiles.get("appendProfiles"))):
        name = as_str(as_dict(profile).get("name"))
        if name not in PROFILES:
            out.append((join(index(join(path, "profiles.appendProfiles"), i), "name"),
                        f"unrecognized profile name '{name}' - 'All', 'None', 'Basic' are supported"))
    return out


def _regex_error(expr: str) -> bool:
    try:
        re.compile(expr)
    except re.error:
        return True
    return False


def _validate_backend(path: str, backend: dict[str, Any]) -> Errors:
    kind = backend.get("type")
    if kind == "Prometheus":
        prometheus = backend.get("prometheus")
        if prometheus is None:
            return [(join(path, "prometheus"), "must be defined")]
        return _port(join(path, "port"), as_dict(prometheus).get("port", DEFAULT_PORT))
    if kind == "OpenTelemetry":
        otel = backend.get("openTelemetry")
        otel_path = join(path, "openTelemetry")
        if otel is None:
            return [(otel_path, "must be defined")]
        otel = as_dict(otel)
        endpoint, ref = as_str(otel.get("endpoint")), otel.get("backendRef")
        if endpoint and ref is not None:
            return [(otel_path, "openTelemetry must have only one type defined: endpoint, backendRef")]
        if not endpoint and ref is None:
            return [(otel_path, "openTelemetry must have exactly one defined: endpoint, backendRef")]
        if ref is not None:
            if not as_dict(ref).get("labels"):
                return [(join(otel_path, "backendRef"), "backendRef must have exactly one defined: labels")]
            return []
        if any(c in endpoint for c in "/?#"):
            return [(join(otel_path, "endpoint"), "must be in host:port format, not a URL")]
        if not _host_port(endpoint):
            return [(join(otel_path, "endpoint"), "must be in host:port format")]
        return []
    return [(path, "unrecognized type")]


def _host_port(value: str) -> bool:
    """net.SplitHostPort accepts it."""
    if value.startswith("["):
        return bool(re.fullmatch(r"\[[^\]]*\]:[^:]*", value))
    return value.count(":") == 1


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []


def deprecations(spec: dict[str, Any]) -> list[str]:
    out = []
    for backend in as_list(as_dict(spec.get("default")).get("backends")):
        otel = as_dict(as_dict(backend).get("openTelemetry"))
        if otel.get("endpoint") and otel.get("backendRef") is None:
            out.append("openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a "
                       "MeshOpenTelemetryBackend resource instead")
            break
    return out + top_level_deprecations(spec.get("targetRef"))


def not_applied(spec: dict[str, Any]) -> list[str]:
    """Our `warnings`: what this control plane stores without applying."""
    out = []
    for i, backend in enumerate(as_list(as_dict(spec.get("default")).get("backends"))):
        backend = as_dict(backend)
        if backend.get("type") == "OpenTelemetry" and as_dict(backend.get("openTelemetry")).get("backendRef"):
            out.append(f"'spec.default.backends[{i}].openTelemetry.backendRef' is stored but not yet applied to "
                       "proxies by this control plane (it has no MeshOpenTelemetryBackend): use "
                       "openTelemetry.endpoint")
        elif as_dict(as_dict(backend.get("prometheus")).get("tls")).get("mode") == "ActiveMTLSBackend":
            # Kuma 2.14 would serve plaintext here; we serve nothing rather than fail open
            out.append(f"'spec.default.backends[{i}].prometheus.tls.mode' ActiveMTLSBackend is stored but not "
                       "applied: the proxy serves no Prometheus endpoint for this backend (use ProvidedTLS or "
                       "Disabled)")
    return out
