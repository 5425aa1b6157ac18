"""MeshTCPRoute: sending TCP connections to weighted backends (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import Errors, arr, as_dict, as_list, index, join, obj, unrouted_backends
from appliance.policies._targetref import (
    BACKEND_REF, DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_backend_ref,
    validate_target_ref,
)

KIND = "MeshTCPRoute"
PATH = "meshtcproutes"
SHORT_NAME = "mtcpr"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 200
HAS_PLUGIN = True

SPEC_SCHEMA: dict[str, Any] = obj({
    "targetRef": TARGET_REF,
    "to": arr(obj({
        # A TCP connection carries nothing to match on, so there is one rule at most.
        "rules": arr(obj({"default": obj({"backendRefs": arr(BACKEND_REF)})}, required=("default",)), maxItems=1),
        "targetRef": TARGET_REF,
    }, required=("rules", "targetRef")), minItems=1),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH_SERVICE, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)
_BACKEND_KINDS = (MESH_SERVICE, MESH_SERVICE_SUBSET, MESH_EXTERNAL_SERVICE, MESH_MULTI_ZONE_SERVICE)


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    top = as_dict(spec.get("targetRef")).get("kind") or MESH
    kinds = (MESH,) if top == MESH_GATEWAY else _TO_KINDS
    for i, item in enumerate(as_list(spec.get("to"))):
        path, item = index("spec.to", i), as_dict(item)
        out += validate_target_ref(item.get("targetRef"), join(path, "targetRef"), kinds)
        for j, rule in enumerate(as_list(item.get("rules"))):
            backends_path = join(index(join(path, "rules"), j), "default.backendRefs")
            backends = as_list(as_dict(as_dict(rule).get("default")).get("backendRefs"))
            if not backends:
                out.append((backends_path, "must be defined"))
            for k, backend in enumerate(backends):
                out += validate_target_ref(backend, index(backends_path, k), _BACKEND_KINDS)
                out += validate_backend_ref(backend, index(backends_path, k))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update, and ours for what is stored but not applied."""
    return top_level_deprecations(spec.get("targetRef")) + unrouted_backends(spec)


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
