"""MeshCircuitBreaker: connection limits and outlier detection towards destinations (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import (
    DURATION, BOOL, Errors, INT, INT_OR_STR, arr, as_dict, as_list, duration_greater_than_zero_or_nil, index,
    integer_greater_than_zero_or_nil, join, obj, parse_decimal, percentage, uint_percentage_or_nil,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, affects_inbounds, top_level_deprecations, validate_target_ref,
)

KIND = "MeshCircuitBreaker"
PATH = "meshcircuitbreakers"
SHORT_NAME = "mcb"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": True, "has_rules": True, "is_from_as_rules": True}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1300
HAS_PLUGIN = True

_LIMITS = ("maxConnections", "maxConnectionPools", "maxPendingRequests", "maxRetries", "maxRequests")
_CONSECUTIVE = obj({"consecutive": INT})
_CONF = obj({
    "connectionLimits": obj({name: INT for name in sorted(_LIMITS)}),
    "outlierDetection": obj({
        "baseEjectionTime": DURATION,
        "detectors": obj({
            "failurePercentage": obj({"minimumHosts": INT, "requestVolume": INT, "threshold": INT}),
            "gatewayFailures": _CONSECUTIVE,
            "localOriginFailures": _CONSECUTIVE,
            "successRate": obj({"minimumHosts": INT, "requestVolume": INT, "standardDeviationFactor": INT_OR_STR}),
            "totalFailures": _CONSECUTIVE,
        }),
        "disabled": BOOL,
        "healthyPanicThreshold": INT_OR_STR,
        "interval": DURATION,
        "maxEjectionPercent": INT,
        "splitExternalAndLocalErrors": BOOL,
    }),
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
    "rules": arr(obj({"default": _CONF})),
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE, MESH_GATEWAY, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)
_DETECTORS = ("totalFailures", "gatewayFailures", "localOriginFailures", "successRate", "failurePercentage")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS,
                                   gateway_listener_tags=True, inbound=affects_inbounds(spec))
    to, froms, rules = as_list(spec.get("to")), as_list(spec.get("from")), as_list(spec.get("rules"))
    if not rules and not to and not froms:
        out.append(("spec", "at least one of 'from', 'to' or 'rules' has to be defined"))
    if rules and (to or froms):
        out.append(("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"))
    for i, rule in enumerate(rules):
        # Kuma reports rule errors under "from[i]", not "rules[i]"; kept so messages match.
        out += _validate_default(join(index("spec.from", i), "default"), as_dict(rule).get("default"))
    for i, item in enumerate(froms):
        path = index("spec.from", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
        out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    for i, item in enumerate(to):
        path = index("spec.to", i)
        out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), _TO_KINDS)
        out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    return out


def _validate_default(path: str, conf: Any) -> Errors:
    conf = as_dict(conf)
    limits, outlier = conf.get("connectionLimits"), conf.get("outlierDetection")
    if limits is None and outlier is None:
        return [(path, "at least one of: 'connectionLimits' or 'outlierDetection' should be configured")]
    out: Errors = []
    if limits is not None:
        limits_path = join(path, "connectionLimits")
        for name in _LIMITS:
            out += integer_greater_than_zero_or_nil(join(limits_path, name), as_dict(limits).get(name))
    if outlier is not None:
        out += _validate_outlier_detection(join(path, "outlierDetection"), as_dict(outlier))
    return out


def _validate_outlier_detection(path: str, outlier: dict[str, Any]) -> Errors:
    out = duration_greater_than_zero_or_nil(join(path, "interval"), outlier.get("interval"))
    out += duration_greater_than_zero_or_nil(join(path, "baseEjectionTime"), outlier.get("baseEjectionTime"))
    out += uint_percentage_or_nil(join(path, "maxEjectionPercent"), outlier.get("maxEjectionPercent"))
    out += percentage(join(path, "healthyPanicThreshold"), outlier.get("healthyPanicThreshold"))
    detectors_path = join(path, "detectors")
    detectors = outlier.get("detectors")
    if detectors is None:
        return out + [(detectors_path, "must be defined")]
    detectors = as_dict(detectors)
    if all(detectors.get(name) is None for name in _DETECTORS):
        return out + [(detectors_path, "must have at least one defined: " + ", ".join(_DETECTORS))]
    for name in ("totalFailures", "gatewayFailures", "localOriginFailures"):
        if detectors.get(name) is not None:
            out += integer_greater_than_zero_or_nil(join(detectors_path, f"{name}.consecutive"),
                                                    as_dict(detectors[name]).get("consecutive"))
    if detectors.get("successRate") is not None:
        rate, rate_path = as_dict(detectors["successRate"]), join(detectors_path, "successRate")
        out += integer_greater_than_zero_or_nil(join(rate_path, "minimumHosts"), rate.get("minimumHosts"))
        out += integer_greater_than_zero_or_nil(join(rate_path, "requestVolume"), rate.get("requestVolume"))
        factor = rate.get("standardDeviationFactor")
        if factor is not None:
            number = parse_decimal(factor)
            if number is None:
                out.append((join(rate_path, "standardDeviationFactor"), "invalid number"))
            elif number <= 0:
                out.append((join(rate_path, "standardDeviationFactor"), "must be greater than 0"))
    if detectors.get("failurePercentage") is not None:
        failure, failure_path = as_dict(detectors["failurePercentage"]), join(detectors_path, "failurePercentage")
        out += integer_greater_than_zero_or_nil(join(failure_path, "minimumHosts"), failure.get("minimumHosts"))
        out += integer_greater_than_zero_or_nil(join(failure_path, "requestVolume"), failure.get("requestVolume"))
        out += uint_percentage_or_nil(join(failure_path, "threshold"), failure.get("threshold"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out = ["'from' field is deprecated, use 'rules' instead"] if as_list(spec.get("from")) else []
    return out + top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    """pkg/defaults/mesh/meshcircuitbreaker.go."""
    return [(f"mesh-circuit-breaker-all-{mesh}", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {
            "maxConnections": 1024, "maxPendingRequests": 1024, "maxRetries": 3, "maxRequests": 1024}}}],
    })]
