"""MeshHealthCheck: active health checking of the endpoints of a destination (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import (
    DURATION, BOOL, Errors, HEADER_KEY_VALUE, INT, INT_OR_STR, STR, arr, as_dict, as_list,
    duration_greater_than_zero_or_nil, index, int_percentage_or_nil, is_file_path, join, obj, percentage,
    status_code, value_greater_than_zero_or_nil,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_target_ref,
)

KIND = "MeshHealthCheck"
PATH = "meshhealthchecks"
SHORT_NAME = "mhc"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1200
HAS_PLUGIN = True

# Headers are a list keyed by name (x-kubernetes-list-type: map) and at most 16 long.
_HEADERS = arr(HEADER_KEY_VALUE, maxItems=16)
_CONF = obj({
    "alwaysLogHealthCheckFailures": BOOL,
    "eventLogPath": STR,
    "failTrafficOnPanic": BOOL,
    "grpc": obj({"authority": STR, "disabled": BOOL, "serviceName": STR}),
    "healthyPanicThreshold": INT_OR_STR,
    "healthyThreshold": INT,
    "http": obj({
        "disabled": BOOL,
        "expectedStatuses": arr(INT),
        "path": STR,
        "requestHeadersToAdd": obj({"add": _HEADERS, "set": _HEADERS}),
    }),
    "initialJitter": DURATION,
    "interval": DURATION,
    "intervalJitter": DURATION,
    "intervalJitterPercent": INT,
    "noTrafficInterval": DURATION,
    "reuseConnection": BOOL,
    "tcp": obj({"disabled": BOOL, "receive": arr(STR), "send": STR}),
    "timeout": DURATION,
    "unhealthyThreshold": INT,
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    for i, item in enumerate(as_list(spec.get("to"))):
        path = index("spec.to", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), _TO_KINDS)
        out += _validate_default(join(path, "default"), as_dict(as_dict(item).get("default")))
    return out


def _validate_default(path: str, conf: dict[str, Any]) -> Errors:
    out = duration_greater_than_zero_or_nil(join(path, "interval"), conf.get("interval"))
    out += duration_greater_than_zero_or_nil(join(path, "timeout"), conf.get("timeout"))
    out += value_greater_than_zero_or_nil(join(path, "unhealthyThreshold"), conf.get("unhealthyThreshold"))
    out += value_greater_than_zero_or_nil(join(path, "healthyThreshold"), conf.get("healthyThreshold"))
    out += duration_greater_than_zero_or_nil(join(path, "initialJitter"), conf.get("initialJitter"))
    out += duration_greater_than_zero_or_nil(join(path, "intervalJitter"), conf.get("intervalJitter"))
    out += int_percentage_or_nil(join(path, "intervalJitterPercent"), conf.get("intervalJitterPercent"))
    out += percentage(join(path, "healthyPanicThreshold"), conf.get("healthyPanicThreshold"))
    out += duration_greater_than_zero_or_nil(join(path, "noTrafficInterval"), conf.get("noTrafficInterval"))
    log_path = conf.get("eventLogPath")
    if isinstance(log_path, str) and not is_file_path(log_path):
        out.append((join(path, "eventLogPath"), "must be a valid path when defined"))
    http = conf.get("http")
    if http is not None:
        http, http_path = as_dict(http), join(path, "http")
        if http.get("path") is not None and http["path"] == "":
            out.append((join(http_path, "path"), "must be defined"))
        for i, status in enumerate(as_list(http.get("expectedStatuses"))):
            out += status_code(index(join(http_path, "expectedStatuses"), i), status)
    # tcp and grpc need no checks of their own: every field in them is optional.
    if all(conf.get(name) is None for name in ("http", "tcp", "grpc")):
        out.append((path, "must have at least one defined: http, tcp, grpc"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = top_level_deprecations(spec.get("targetRef"))
    out += ["healthyPanicThreshold for 'to[].default' is deprecated. The setting has been moved to MeshCircuitBreaker "
            "policy, please use MeshCircuitBreaker policy instead."
            for item in as_list(spec.get("to"))
            if as_dict(as_dict(item).get("default")).get("healthyPanicThreshold") is not None]
    return out


def admin_only(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Fields only an admin may set: (field path, what setting it makes happen). An eventLogPath makes the
    Envoy of every selected proxy create and append to that file on its host, as the proxy's user: one
    who may only write policies must not be able to write files there (or fill a disk)."""
    return [(join(index("spec.to", i), "default.eventLogPath"), "make proxies write a file on their hosts")
            for i, item in enumerate(as_list(spec.get("to")))
            if as_dict(as_dict(item).get("default")).get("eventLogPath") is not None]


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
