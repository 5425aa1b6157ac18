"""MeshRetry: when and how often a proxy retries a failed request to a destination (Kuma v2.14.3)."""
from __future__ import annotations

import re
from typing import Any

from appliance.policies._common import (
    DURATION, Errors, HEADER_MATCH, HEADER_NAME, HTTP_STATUS_CODES, INT, STR, STR_MAP, arr, as_dict, as_list, as_str,
    duration_greater_than_zero, enum, index, join, obj,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_HTTP_ROUTE, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_target_ref,
)

KIND = "MeshRetry"
PATH = "meshretries"
SHORT_NAME = "mr"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1400
HAS_PLUGIN = True

_GRPC_RETRY_ON = ("Canceled", "DeadlineExceeded", "Internal", "ResourceExhausted", "Unavailable")
_BACK_OFF = obj({"baseInterval": DURATION, "maxInterval": DURATION})
_RATE_LIMITED_BACK_OFF = obj({
    "maxInterval": DURATION,
    "resetHeaders": arr(obj({"format": enum("Seconds", "UnixTimestamp"), "name": HEADER_NAME},
                            required=("format", "name"))),
})
_CONF = obj({
    "grpc": obj({
        "backOff": _BACK_OFF,
        "numRetries": INT,
        "perTryTimeout": DURATION,
        "rateLimitedBackOff": _RATE_LIMITED_BACK_OFF,
        "retryOn": arr(enum(*_GRPC_RETRY_ON)),
    }),
    "http": obj({
        "backOff": _BACK_OFF,
        "hostSelection": arr(obj({
            "predicate": enum("OmitPreviousHosts", "OmitHostsWithTags", "OmitPreviousPriorities"),
            "tags": STR_MAP,
            "updateFrequency": {"type": "integer", "default": 2},
        }, required=("predicate",))),
        "hostSelectionMaxAttempts": INT,
        "numRetries": INT,
        "perTryTimeout": DURATION,
        "rateLimitedBackOff": _RATE_LIMITED_BACK_OFF,
        "retriableRequestHeaders": arr(HEADER_MATCH),
        "retriableResponseHeaders": arr(HEADER_MATCH),
        # Free strings: HTTP status codes are allowed too, so the validator checks the items.
        "retryOn": arr(STR),
    }),
    "tcp": obj({"maxConnectAttempt": INT}),
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_HTTP_ROUTE, DATAPLANE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE, MESH_HTTP_ROUTE)
_TO_KINDS_UNDER_GATEWAY = (MESH, MESH_EXTERNAL_SERVICE)
_HTTP_RETRY_ON = frozenset({
    "5xx", "GatewayError", "Reset", "Retriable4xx", "ConnectFailure", "EnvoyRatelimited", "RefusedStream",
    "Http3PostConnectFailure", "HttpMethodConnect", "HttpMethodDelete", "HttpMethodGet", "HttpMethodHead",
    "HttpMethodOptions", "HttpMethodPatch", "HttpMethodPost", "HttpMethodPut", "HttpMethodTrace",
})
_HTTP_FIELDS = ("numRetries", "perTryTimeout", "backOff", "retryOn", "retriableRequestHeaders",
                "retriableResponseHeaders", "rateLimitedBackOff", "hostSelection")
_GRPC_FIELDS = ("numRetries", "perTryTimeout", "backOff", "retryOn", "rateLimitedBackOff")
_GO_INT = re.compile(r"[+-]?[0-9]+")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    top = as_dict(spec.get("targetRef")).get("kind") or MESH
    kinds = _TO_KINDS_UNDER_GATEWAY if top in (MESH_GATEWAY, MESH_HTTP_ROUTE) else _TO_KINDS
    for i, item in enumerate(as_list(spec.get("to"))):
        path = index("spec.to", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), kinds)
        # Kuma roots the configuration errors at "default.conf", a name the API does not have.
        out += _validate_conf(join(path, "default.conf"), as_dict(as_dict(item).get("default")))
    return out


def _validate_conf(path: str, conf: dict[str, Any]) -> Errors:
    out: Errors = []
    if all(conf.get(name) is None for name in ("tcp", "http", "grpc")):
        out.append((path, "at least one of the 'tcp', 'http', 'grpc' must be specified"))
    if conf.get("tcp") is not None:
        attempts = as_dict(conf["tcp"]).get("maxConnectAttempt")
        if attempts is None:
            out.append((join(path, "tcp"), "must not be empty"))
        elif attempts == 0:
            out.append((join(path, "tcp.maxConnectAttempt"), "must be greater than 0"))
    if conf.get("http") is not None:
        out += _validate_http(join(path, "http"), as_dict(conf["http"]))
    if conf.get("grpc") is not None:
        out += _validate_grpc(join(path, "grpc"), as_dict(conf["grpc"]))
    return out


def _validate_http(path: str, http: dict[str, Any]) -> Errors:
    out: Errors = []
    if all(http.get(name) is None for name in _HTTP_FIELDS):
        out.append((path, "must not be empty"))
    out += _validate_back_offs(path, http)
    if http.get("retryOn") is not None:
        for i, item in enumerate(as_list(http["retryOn"])):
            if as_str(item) not in _HTTP_RETRY_ON and not _is_known_status(item):
                out.append((index(join(path, "retryOn"), i), f"unknown item '{item}'"))
    if http.get("hostSelection") is not None:
        priorities_seen = False
        for i, predicate in enumerate(as_list(http["hostSelection"])):
            predicate = as_dict(predicate)
            item_path = index(join(path, "hostSelection"), i)
            kind = predicate.get("predicate")
            if kind == "OmitHostsWithTags":
                if predicate.get("tags") is None:
                    out.append((join(item_path, "tags"), "must be defined"))
            elif kind == "OmitPreviousPriorities":
                if priorities_seen:
                    out.append((join(item_path, "predicate"), f"{kind} must only be specified once"))
                frequency = predicate.get("updateFrequency")
                if not isinstance(frequency, int) or frequency <= 0:
                    out.append((join(item_path, "updateFrequency"), "must be defined and greater than zero"))
                priorities_seen = True
            elif kind != "OmitPreviousHosts":
                out.append((join(item_path, "predicate"), f"unknown predicate type '{kind or ''}'"))
    return out


def _is_known_status(item: Any) -> bool:
    return isinstance(item, str) and bool(_GO_INT.fullmatch(item)) and int(item) in HTTP_STATUS_CODES


def _validate_grpc(path: str, grpc: dict[str, Any]) -> Errors:
    out: Errors = []
    if all(grpc.get(name) is None for name in _GRPC_FIELDS):
        out.append((path, "must not be empty"))
    out += _validate_back_offs(path, grpc)
    if grpc.get("retryOn") is not None:
        out += [(index(join(path, "retryOn"), i), f"unknown item '{item}'")
                for i, item in enumerate(as_list(grpc["retryOn"])) if item not in _GRPC_RETRY_ON]
    return out


def _validate_back_offs(path: str, conf: dict[str, Any]) -> Errors:
    out: Errors = []
    if conf.get("backOff") is not None:
        back_off = as_dict(conf["backOff"])
        if back_off.get("baseInterval") is None and back_off.get("maxInterval") is None:
            out.append((join(path, "backOff"), "must not be empty"))
    if conf.get("rateLimitedBackOff") is not None:
        limited = as_dict(conf["rateLimitedBackOff"])
        limited_path = join(path, "rateLimitedBackOff")
        if limited.get("maxInterval") is not None:
            out += duration_greater_than_zero(join(limited_path, "maxInterval"), limited["maxInterval"])
        if limited.get("resetHeaders") is None:
            out.append((join(limited_path, "resetHeaders"), "must be defined"))
        else:
            out += [(join(index(join(limited_path, "resetHeaders"), i), "name"), "must be defined")
                    for i, header in enumerate(as_list(limited["resetHeaders"]))
                    if not as_dict(header).get("name")]
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    return top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    """pkg/defaults/mesh/meshretry.go; durations as Go's time.Duration.String() prints them."""
    back_off = {"baseInterval": "25ms", "maxInterval": "250ms"}
    return [(f"mesh-retry-all-{mesh}", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "tcp": {"maxConnectAttempt": 5},
            "http": {"numRetries": 5, "perTryTimeout": "16s", "backOff": dict(back_off)},
            "grpc": {"numRetries": 5, "perTryTimeout": "16s", "backOff": dict(back_off)},
        }}],
    })]
