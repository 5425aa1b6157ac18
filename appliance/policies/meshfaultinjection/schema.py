"""MeshFaultInjection: HTTP aborts, delays and bandwidth limits for testing resilience (Kuma v2.14.3)."""
from __future__ import annotations

import re
from typing import Any

from appliance.policies._common import (
    DURATION, Errors, INT, INT_OR_STR, STR, arr, as_dict, as_list, duration_not_negative_or_nil, index, join, obj,
    percentage, status_code,
)
from appliance.policies._targetref import (
    DATAPLANE, MATCH, MESH, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF,
    affects_inbounds, includes_gateways, top_level_deprecations, validate_match, validate_target_ref,
)

KIND = "MeshFaultInjection"
PATH = "meshfaultinjections"
SHORT_NAME = "mfi"
# Kuma 2.14.3's descriptor (and GET /_resources) says hasRulesTargetRef: true.
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": True, "has_rules": True, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 800
HAS_PLUGIN = True

_CONF = obj({"http": arr(obj({
    "abort": obj({"httpStatus": INT, "percentage": INT_OR_STR}, required=("httpStatus", "percentage")),
    "delay": obj({"percentage": INT_OR_STR, "value": DURATION}, required=("percentage", "value")),
    "responseBandwidth": obj({"limit": STR, "percentage": INT_OR_STR}, required=("limit", "percentage")),
}))})
SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
    "rules": arr(obj({"default": _CONF, "matches": arr(MATCH)}, required=("default",))),
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_FROM_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE_SUBSET, MESH_SERVICE)
_GATEWAY_SCOPE = ("must not be defined when the scope includes a Gateway, select only proxyType Sidecar or "
                  "select only gateways and use spec.to")
# validators.BandwidthRegex, with Go's ASCII-only \d and \s spelled out.
_BANDWIDTH = re.compile(r"([0-9]*)[ \t\n\f\r]?([GMk]+bps)")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS,
                                   gateway_listener_tags=True, inbound=affects_inbounds(spec))
    top = spec.get("targetRef") if spec.get("targetRef") is not None else {"kind": MESH}
    to, froms, rules = as_list(spec.get("to")), as_list(spec.get("from")), as_list(spec.get("rules"))
    if froms and rules:
        out.append(("spec", "field 'from' must be empty when 'rules' is defined"))
    for i, rule in enumerate(rules):
        path, rule = index("spec.rules", i), as_dict(rule)
        for j, match in enumerate(as_list(rule.get("matches"))):
            out += validate_match(match, index(join(path, "matches"), j))
        out += _validate_default(join(path, "default"), rule.get("default"))
    # Gateways get faults through `to`, sidecars through `from`; a scope holding both is ambiguous.
    if froms and includes_gateways(top):
        out.append(("spec.from", _GATEWAY_SCOPE))
    else:
        for i, item in enumerate(froms):
            path = index("spec.from", i)
            out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), _FROM_KINDS)
            out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    if to and not includes_gateways(top):
        out.append(("spec.to", "must not be defined"))
    else:
        for i, item in enumerate(to):
            path = index("spec.to", i)
            out += validate_target_ref(as_dict(item).get("targetRef"), join(path, "targetRef"), (MESH,))
            out += _validate_default(join(path, "default"), as_dict(item).get("default"))
    return out


def _validate_default(path: str, conf: Any) -> Errors:
    out: Errors = []
    http_path = join(path, "http")
    for i, fault in enumerate(as_list(as_dict(conf).get("http"))):
        fault = as_dict(fault)
        # Kuma indexes after the fault kind ("http.abort[0]"), not after "http"; kept for equal paths.
        if fault.get("abort") is not None:
            abort, abort_path = as_dict(fault["abort"]), index(join(http_path, "abort"), i)
            out += status_code(join(abort_path, "httpStatus"), abort.get("httpStatus", 0))
            out += percentage(join(abort_path, "percentage"), _or_zero(abort.get("percentage")))
        if fault.get("delay") is not None:
            delay, delay_path = as_dict(fault["delay"]), index(join(http_path, "delay"), i)
            out += duration_not_negative_or_nil(join(delay_path, "value"), delay.get("value"))
            out += percentage(join(delay_path, "percentage"), _or_zero(delay.get("percentage")))
        if fault.get("responseBandwidth") is not None:
            bandwidth = as_dict(fault["responseBandwidth"])
            bandwidth_path = index(join(http_path, "responseBandwidth"), i)
            limit = bandwidth.get("limit") or ""
            if limit == "":
                out.append((join(bandwidth_path, "limit"), "must be defined"))
            elif not _BANDWIDTH.fullmatch(limit):
                out.append((join(bandwidth_path, "limit"), "must be in kbps/Mbps/Gbps units"))
            out += percentage(join(bandwidth_path, "percentage"), _or_zero(bandwidth.get("percentage")))
    return out


def _or_zero(value: Any) -> Any:
    """The percentages are plain IntOrString values in Go: absent reads as 0, which is allowed."""
    return 0 if value is None else value


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    from_message = "'from' field is deprecated, use 'rules' with SPIFFE-based 'matches' instead"
    out = [from_message] if as_list(spec.get("from")) else []
    return out + top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
