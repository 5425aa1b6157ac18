"""Policies: one folder each, `schema.py` (what the API accepts) and, once it takes effect, `plugin.py`.

Every folder's `schema` module has the same shape:

    KIND: str                 "MeshTrafficPermission"
    PATH: str                 "meshtrafficpermissions" (REST path segment)
    SHORT_NAME: str           "mtp" (KRI short name)
    TARGETS: dict[str, bool]  is_target_ref, has_to, has_from, has_rules, is_from_as_rules (GET /_resources)
    SPEC_SCHEMA: dict         structural schema of `spec` (OpenAPI subset, see core/validation.check_schema)
    validate(spec) -> list[tuple[str, str]]   semantic rules: (field path "spec....", reason) as Kuma says
    mesh_defaults(mesh) -> list[tuple[str, dict]]   policies Kuma creates with a new Mesh: (name, spec)
    deprecations(spec) -> list[str]   the `warnings` Kuma returns with a successful create or update
    ORDER: int                Kuma's plugin order (`+kuma:policy:order`): plugins run in ascending ORDER
    HAS_PLUGIN: bool          whether `plugin.py` applies the policy to proxies (else it is stored only)
    admin_only(spec) -> list[tuple[str, str]]   optional: fields set that only admins may set, as
                              (field path, what setting it makes happen), e.g. a file Envoy writes
    not_applied(spec) -> list[str]   optional: `warnings` for parts of a spec the plugin stores but does not apply

Every `plugin` module has the same shape (xds/generate calls them, in ORDER, for each proxy):

    match(snapshot, proxy) -> Matched       what the policies of this kind say for this proxy (pure data, compared
                                            with ==: equal matches must have equal effects)
    apply(matched, resources) -> None       edit the generated Envoy resources in place, reading nothing but them
                                            and `matched`
    Matched.to_key                          equal keys: equal effect on outbound resources, which may be shared
    apply_to_proxy(matched, resources)      optional: runs once more, after every plugin's apply, on all of the
                                            proxy's resources (outbound ones included, which may be shared: it
                                            replaces what it changes with a copy); raises GenerationError if it
                                            cannot apply, and the proxy keeps its last good config
    INBOUND_ONLY = True                     optional: `apply` edits inbound listeners only, never an outbound's
                                            resources (which then outlive a change of this kind's policies)
    OWN_ONLY = True                         optional: `apply` adds to or edits the proxy's own resources only, never
                                            an outbound's: it is not run on those (a proxy's metrics endpoints)
    OUTBOUND_ONLY = True                    optional: `apply` edits the resources of outbounds only: it is not run
                                            on the proxy's own resources (inbounds, transparent capture, DNS),
                                            which then outlive a change of this kind's policies
    outbound_view(matched, place) -> Any   optional: what `apply` reads when it edits the resources of the outbound
                                            at `place` (address, port); equal views, equal effect on them (else the
                                            whole match is compared)
    edits_own_resources(matched) -> bool    optional: whether `apply_to_proxy` may edit the proxy's own (inbound)
                                            resources; those are then built afresh for it, their inline route
                                            configurations going to RDS after it

A schema may also set `ADMIN_WRITES = True`: only admins may create, change or delete a policy of that type.

validate() assumes the spec passed check_schema (as Kuma runs kube-openapi first) and that the
policy has the "system" role, which every policy has on Universal.

A policy imports nothing from core/ or xds/; core/ registers the schemas, xds/generate runs the plugins,
and both meet the policies on the neutral types of appliance.model.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType
from typing import Any

from appliance.policies.meshaccesslog import schema as meshaccesslog
from appliance.policies.meshcircuitbreaker import schema as meshcircuitbreaker
from appliance.policies.meshfaultinjection import schema as meshfaultinjection
from appliance.policies.meshhealthcheck import schema as meshhealthcheck
from appliance.policies.meshhttproute import schema as meshhttproute
from appliance.policies.meshloadbalancingstrategy import schema as meshloadbalancingstrategy
from appliance.policies.meshmetric import schema as meshmetric
from appliance.policies.meshpassthrough import schema as meshpassthrough
from appliance.policies.meshproxypatch import schema as meshproxypatch
from appliance.policies.meshratelimit import schema as meshratelimit
from appliance.policies.meshretry import schema as meshretry
from appliance.policies.meshtcproute import schema as meshtcproute
from appliance.policies.meshtimeout import schema as meshtimeout
from appliance.policies.meshtls import schema as meshtls
from appliance.policies.meshtrace import schema as meshtrace
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
    meshmetric,
    meshpassthrough,
    meshtls,
    meshtrace,
    meshproxypatch,
)


# The policies that configure builtin gateway proxies (xds/generate/gateway.py, the plugins' apply_to_gateway);
# the others warn when they target one.
GATEWAY_KINDS = ("MeshHTTPRoute", "MeshTCPRoute", "MeshTimeout", "MeshRetry", "MeshCircuitBreaker", "MeshHealthCheck",
                 "MeshAccessLog", "MeshRateLimit", "MeshFaultInjection", "MeshLoadBalancingStrategy", "MeshTrace",
                 "MeshProxyPatch")


def not_applied_warning(kind: str) -> str:
    """The `warnings` entry of a successful create or update of a policy type that has no plugin yet."""
    return f"{kind} is stored but not yet applied to proxies by this control plane"


def not_applied(module: ModuleType, spec: dict[str, Any]) -> list[str]:
    """Our `warnings` (beside Kuma's deprecations) for what a write stores that no plugin applies."""
    if not module.HAS_PLUGIN:
        return [not_applied_warning(module.KIND)]
    spec = spec if isinstance(spec, dict) else {}
    out = list(getattr(module, "not_applied", lambda _: [])(spec))
    top = spec.get("targetRef") or {}
    gateways_only = top.get("kind") in ("Mesh", "MeshSubset") and top.get("proxyTypes") == ["Gateway"]
    if module.KIND not in GATEWAY_KINDS and (top.get("kind") == "MeshGateway" or gateways_only):
        out.append(f"a {module.KIND} for gateways (top-level targetRef MeshGateway, or proxyTypes [Gateway]) is stored "
                   "but not yet applied to builtin gateway proxies by this control plane (only "
                   f"{', '.join(GATEWAY_KINDS)} configure them; DELEGATED gateways get it on their outbounds)")
    if (spec.get("targetRef") or {}).get("kind") == "MeshHTTPRoute":
        out.append(f"a {module.KIND} with top-level targetRef.kind MeshHTTPRoute is stored but not yet applied to "
                   "proxies by this control plane: use MeshHTTPRoute in spec.to[].targetRef")
    for i, item in enumerate(spec.get("to") or []):
        kind = ((item.get("targetRef") if isinstance(item, dict) else None) or {}).get("kind")
        if kind in ("MeshExternalService", "MeshMultiZoneService"):
            out.append(f"'spec.to[{i}].targetRef' of kind {kind} is stored but not yet applied to proxies by this "
                       "control plane")
    return out


@lru_cache(maxsize=1)
def plugins() -> tuple[ModuleType, ...]:
    """The plugins of the policies that have one, in Kuma's order. Imported on first use: the API and
    kumactl read only the schemas and need not load the Envoy types."""
    ordered = sorted((m for m in ALL if m.HAS_PLUGIN), key=lambda m: m.ORDER)
    return tuple(importlib.import_module(m.__name__.rsplit(".", 1)[0] + ".plugin") for m in ordered)
