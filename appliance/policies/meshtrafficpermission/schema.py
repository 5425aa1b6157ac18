"""MeshTrafficPermission: which clients may talk to the proxies it targets (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import Errors, arr, as_dict, as_list, enum, index, join, obj
from appliance.policies._targetref import (
    DATAPLANE, MATCH, MESH, MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, affects_inbounds,
    top_level_deprecations, validate_match, validate_target_ref,
)

KIND = "MeshTrafficPermission"
PATH = "meshtrafficpermissions"
SHORT_NAME = "mtp"
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": True, "has_rules": True, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 1100
HAS_PLUGIN = True

SPEC_SCHEMA: dict[str, Any] = obj({
    "from": arr(obj({
        "default": obj({"action": enum("Allow", "Deny", "AllowWithShadowDeny")}),
        "targetRef": TARGET_REF,
    }, required=("targetRef",))),
    "rules": arr(obj({
        "default": obj({"allow": arr(MATCH), "allowWithShadowDeny": arr(MATCH), "deny": arr(MATCH)}),
    }, required=("default",))),
    "targetRef": TARGET_REF,
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_FROM_KINDS = (MESH, MESH_SUBSET, MESH_SERVICE, MESH_SERVICE_SUBSET)
_MATCH_LISTS = ("allow", "allowWithShadowDeny", "deny")


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, inbound=affects_inbounds(spec))
    froms, rules = as_list(spec.get("from")), as_list(spec.get("rules"))
    if froms and rules:
        out.append(("spec", "field 'from' must be empty when 'rules' is defined"))
    if not froms and not rules:
        out.append(("spec", "at least one of 'from' or 'rules' has to be defined"))
    for i, rule in enumerate(rules):
        path = index("spec.rules", i)
        conf = as_dict(as_dict(rule).get("default"))
        if not any(as_list(conf.get(name)) for name in _MATCH_LISTS):
            out.append((path, "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined"))
        for name in _MATCH_LISTS:
            for j, match in enumerate(as_list(conf.get(name))):
                out += validate_match(match, index(join(path, name), j))
    for i, item in enumerate(froms):
        path = index("spec.from", i)
        item = as_dict(item)
        out += validate_target_ref(item.get("targetRef"), join(path, "targetRef"), _FROM_KINDS)
        if not as_dict(item.get("default")).get("action"):
            out.append((join(path, "default.action"), "must be defined"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    froms = as_list(spec.get("from"))
    out = ["'from' field is deprecated and will be removed in 3.0, use 'rules' with MeshIdentity (spiffeId) instead"
           ] if froms else []
    out += ["MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead"
            for item in froms if as_dict(as_dict(item).get("targetRef")).get("kind") == MESH_SERVICE]
    return out + top_level_deprecations(spec.get("targetRef"))


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    # allow-all-<mesh> is only created with the legacy TrafficPermission, never as a MeshTrafficPermission.
    return []
