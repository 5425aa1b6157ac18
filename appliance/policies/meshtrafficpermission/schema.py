"""MeshTrafficPermission: who may talk to the proxies it targets."""
from __future__ import annotations

from typing import Any

KIND = "MeshTrafficPermission"
PATH = "meshtrafficpermissions"
SHORT_NAME = "mtp"
TARGETS = {"is_target_ref": True, "has_to": False, "has_from": True, "has_rules": True, "is_from_as_rules": False}

_TARGET_REF = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": ["Mesh", "MeshSubset", "MeshGateway", "MeshService",
                                            "MeshExternalService", "MeshMultiZoneService", "MeshServiceSubset",
                                            "MeshHTTPRoute", "Dataplane"]},
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "mesh": {"type": "string"},
        "proxyTypes": {"type": "array", "items": {"type": "string", "enum": ["Sidecar", "Gateway"]}},
        "sectionName": {"type": "string"},
    },
}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "targetRef": _TARGET_REF,
        "from": {"type": "array", "items": {"type": "object", "required": ["targetRef"], "properties": {
            "targetRef": _TARGET_REF,
            "default": {"type": "object", "properties": {
                "action": {"type": "string", "enum": ["Allow", "Deny", "AllowWithShadowDeny"]}}},
        }}},
        "rules": {"type": "array"},
    },
}


def validate(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return []


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
