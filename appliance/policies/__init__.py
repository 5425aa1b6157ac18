"""Policies: one folder each. Every folder's `schema` module has the same shape:

    KIND: str                 "MeshTrafficPermission"
    PATH: str                 "meshtrafficpermissions" (REST path segment)
    SHORT_NAME: str           "mtp" (KRI short name)
    TARGETS: dict[str, bool]  is_target_ref, has_to, has_from, has_rules, is_from_as_rules (GET /_resources)
    SPEC_SCHEMA: dict         structural schema of `spec` (OpenAPI subset, see core/validation.check_schema)
    validate(spec) -> list[tuple[str, str]]   semantic rules: (field path "spec....", reason) as Kuma says
    mesh_defaults(mesh) -> list[tuple[str, dict]]   policies Kuma creates with a new Mesh: (name, spec)
    deprecations(spec) -> list[str]   the `warnings` Kuma returns with a successful create or update

validate() assumes the spec passed check_schema (as Kuma runs kube-openapi first) and that the
policy has the "system" role, which every policy has on Universal.

A policy imports nothing from core/ or xds/; core/ registers these modules.
"""
from __future__ import annotations

from types import ModuleType

from appliance.policies.meshaccesslog import schema as meshaccesslog
from appliance.policies.meshcircuitbreaker import schema as meshcircuitbreaker
from appliance.policies.meshfaultinjection import schema as meshfaultinjection
from appliance.policies.meshhealthcheck import schema as meshhealthcheck
from appliance.policies.meshhttproute import schema as meshhttproute
from appliance.policies.meshloadbalancingstrategy import schema as meshloadbalancingstrategy
from appliance.policies.meshratelimit import schema as meshratelimit
from appliance.policies.meshretry import schema as meshretry
from appliance.policies.meshtcproute import schema as meshtcproute
from appliance.policies.meshtimeout import schema as meshtimeout
from appliance.policies.meshtrafficpermission import schema as meshtrafficpermission

ALL: tuple[ModuleType, ...] = (
    meshtrafficpermission,
    meshtimeout,
    meshretry,
    meshcircuitbreaker,
    meshhealthcheck,
    meshhttproute,
    meshtcproute,
    meshaccesslog,
    meshloadbalancingstrategy,
    meshfaultinjection,
    meshratelimit,
)
