"""MeshLoadBalancingStrategy: the balancing algorithm and zone locality towards destinations (Kuma v2.14.3)."""
from __future__ import annotations

from typing import Any

from appliance.policies._common import (
    DURATION, BOOL, Errors, INT, INT_OR_STR, STR, arr, as_dict, as_list, as_str, enum, index,
    integer_greater_than_zero_or_nil, join, obj, parse_decimal, percentage,
)
from appliance.policies._targetref import (
    DATAPLANE, MESH, MESH_EXTERNAL_SERVICE, MESH_GATEWAY, MESH_HTTP_ROUTE, MESH_MULTI_ZONE_SERVICE, MESH_SERVICE,
    MESH_SERVICE_SUBSET, MESH_SUBSET, TARGET_REF, top_level_deprecations, validate_target_ref,
)

KIND = "MeshLoadBalancingStrategy"
PATH = "meshloadbalancingstrategies"
SHORT_NAME = "mlbs"
TARGETS = {"is_target_ref": True, "has_to": True, "has_from": False, "has_rules": False, "is_from_as_rules": False}
# Kuma's `+kuma:policy:order`: plugins run in ascending order, each on what the previous ones built.
ORDER = 400
HAS_PLUGIN = True

_NAME = {"type": "string", "minLength": 1}
_HASH_POLICIES = arr(obj({
    "connection": obj({"sourceIP": BOOL}),
    "cookie": obj({"name": _NAME, "path": STR, "ttl": DURATION}, required=("name",)),
    "filterState": obj({"key": _NAME}, required=("key",)),
    "header": obj({"name": _NAME}, required=("name",)),
    "queryParameter": obj({"name": _NAME}, required=("name",)),
    "terminal": BOOL,
    "type": enum("Header", "Cookie", "Connection", "SourceIP", "QueryParameter", "FilterState"),
}, required=("type",)))
_CONF = obj({
    "hashPolicies": _HASH_POLICIES,
    "loadBalancer": obj({
        "leastRequest": obj({"activeRequestBias": INT_OR_STR, "choiceCount": {"type": "integer", "minimum": 2}}),
        "maglev": obj({"hashPolicies": _HASH_POLICIES,
                       "tableSize": {"type": "integer", "minimum": 1, "maximum": 5000011}}),
        "random": {"type": "object"},
        "ringHash": obj({
            "hashFunction": enum("XXHash", "MurmurHash2"),
            "hashPolicies": _HASH_POLICIES,
            "maxRingSize": {"type": "integer", "minimum": 1, "maximum": 8000000},
            "minRingSize": {"type": "integer", "minimum": 1, "maximum": 8000000},
        }),
        "roundRobin": {"type": "object"},
        "type": enum("RoundRobin", "LeastRequest", "RingHash", "Random", "Maglev"),
    }, required=("type",)),
    "localityAwareness": obj({
        "crossZone": obj({
            "failover": arr(obj({
                "from": obj({"zones": arr(STR)}, required=("zones",)),
                "to": obj({"type": enum("None", "Only", "Any", "AnyExcept"), "zones": arr(STR)}, required=("type",)),
            }, required=("to",))),
            "failoverThreshold": obj({"percentage": INT_OR_STR}, required=("percentage",)),
        }),
        "disabled": BOOL,
        "localZone": obj({"affinityTags": arr(obj({"key": STR, "weight": INT}, required=("key",)))}),
    }),
})
SPEC_SCHEMA: dict[str, Any] = obj({
    "targetRef": TARGET_REF,
    "to": arr(obj({"default": _CONF, "targetRef": TARGET_REF}, required=("targetRef",))),
})

_TOP_KINDS = (MESH, MESH_SUBSET, MESH_GATEWAY, MESH_SERVICE, MESH_SERVICE_SUBSET, DATAPLANE)
_TO_KINDS = (MESH, MESH_SERVICE, MESH_MULTI_ZONE_SERVICE, MESH_HTTP_ROUTE)
_ROUTE_ONLY = "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported"
_HASH_CONFIG = {"Header": "header", "Cookie": "cookie", "QueryParameter": "queryParameter",
                "FilterState": "filterState", "Connection": "connection", "SourceIP": "connection"}


def validate(spec: dict[str, Any]) -> Errors:
    out: Errors = []
    if spec.get("targetRef") is not None:
        out += validate_target_ref(spec["targetRef"], "spec.targetRef", _TOP_KINDS, gateway_listener_tags=True)
    top = as_dict(spec.get("targetRef")).get("kind") or MESH
    for i, item in enumerate(as_list(spec.get("to"))):
        path, item = index("spec.to", i), as_dict(item)
        ref, conf = as_dict(item.get("targetRef")), as_dict(item.get("default"))
        kinds, unsupported = _TO_KINDS, ""
        if top == MESH_GATEWAY and conf.get("loadBalancer") is not None:
            kinds, unsupported = (MESH,), f"value '{top}' is not supported, only Mesh is allowed if loadBalancer is set"
        elif top == MESH_GATEWAY:
            kinds = (MESH, MESH_SERVICE, MESH_MULTI_ZONE_SERVICE)
        out += validate_target_ref(ref, join(path, "targetRef"), kinds, unsupported_message=unsupported)
        if ref.get("kind") == MESH_EXTERNAL_SERVICE and top != MESH:
            # The zone egress holds one cluster for all clients, so only a mesh-wide policy fits.
            out.append((join(path, "targetRef.kind"), "kind MeshExternalService is only allowed with targetRef.kind: "
                        "Mesh as it is configured on the Zone Egress and shared by all clients in the mesh"))
        out += _validate_conf(join(path, "default"), conf, ref)
    return out


def _validate_conf(path: str, conf: dict[str, Any], ref: dict[str, Any]) -> Errors:
    if ref.get("kind") == MESH_HTTP_ROUTE:
        out = _hash_policy_errors(join(path, "hashPolicies"), conf.get("hashPolicies"))
        out += [(join(path, name), _ROUTE_ONLY) for name in ("loadBalancer", "localityAwareness")
                if conf.get(name) is not None]
        return out
    out = _load_balancer_errors(join(path, "loadBalancer"), conf.get("loadBalancer"))
    out += _locality_errors(join(path, "localityAwareness"), conf.get("localityAwareness"), ref)
    out += _hash_policy_errors(join(path, "hashPolicies"), conf.get("hashPolicies"))
    balancer = as_dict(conf.get("loadBalancer"))
    if conf.get("hashPolicies") is not None and conf.get("loadBalancer") is not None:
        for kind in ("ringHash", "maglev"):
            if as_dict(balancer.get(kind)).get("hashPolicies") is not None:
                out.append((join(path, f"loadBalancer.{kind}.hashPolicies"),
                            "hashPolicies already specified in the root level"))
    return out


def _locality_errors(path: str, locality: Any, ref: dict[str, Any]) -> Errors:
    if locality is None:
        return []
    locality, out = as_dict(locality), []
    local_zone = locality.get("localZone")
    if local_zone is not None:
        tags = as_list(as_dict(local_zone).get("affinityTags"))
        tags_path = join(path, "localZone.affinityTags")
        weighted = 0
        for i, tag in enumerate(tags):
            tag = as_dict(tag)
            if not tag.get("key"):
                out.append((join(index(tags_path, i), "key"), "must not be empty"))
            if tag.get("weight") is not None:
                out += integer_greater_than_zero_or_nil(join(index(tags_path, i), "weight"), tag["weight"])
                weighted += 1
        if weighted and weighted != len(tags):
            out.append((tags_path, "all or none affinity tags should have weight"))
    cross_zone = locality.get("crossZone")
    if cross_zone is not None:
        out += _cross_zone_errors(join(path, "crossZone"), as_dict(cross_zone), ref)
    return out


def _cross_zone_errors(path: str, cross_zone: dict[str, Any], ref: dict[str, Any]) -> Errors:
    out: Errors = []
    if ref.get("kind") == MESH_SERVICE and (ref.get("sectionName") or ref.get("labels")):
        out.append((path, "must not be set: MeshService traffic is local"))
    for i, failover in enumerate(as_list(cross_zone.get("failover"))):
        failover, failover_path = as_dict(failover), index(join(path, "failover"), i)
        if failover.get("from") is not None:
            zones = as_list(as_dict(failover["from"]).get("zones"))
            if not zones:
                out.append((join(failover_path, "from.zones"), "must not be empty"))
            out += [(index(join(failover_path, "from.zones"), j), "must not be empty")
                    for j, zone in enumerate(zones) if zone == ""]
        to = as_dict(failover.get("to"))
        kind, zones = to.get("type") or "", as_list(to.get("zones"))
        if kind in ("Any", "None"):
            if zones:
                out.append((join(failover_path, "to.zones"), f"must be empty when type is {kind}"))
        elif kind in ("AnyExcept", "Only"):
            if not zones:
                out.append((join(failover_path, "to.zones"), f"must not be empty when type is {kind}"))
        else:
            out.append((join(failover_path, "to.type"), "unrecognized type"))
    threshold = cross_zone.get("failoverThreshold")
    if threshold is not None:
        value = as_dict(threshold).get("percentage")
        out += percentage(join(path, "failoverThreshold.percentage"), 0 if value is None else value, allow_zero=False)
    return out


def _load_balancer_errors(path: str, balancer: Any) -> Errors:
    if balancer is None:
        return []
    balancer = as_dict(balancer)
    kind = balancer.get("type")
    if kind in ("RingHash", "Maglev"):
        field = "ringHash" if kind == "RingHash" else "maglev"
        if balancer.get(field) is not None:
            return _hash_policy_errors(join(path, f"{field}.hashPolicies"),
                                       as_dict(balancer[field]).get("hashPolicies"))
    if kind == "LeastRequest" and balancer.get("leastRequest") is not None:
        bias = as_dict(balancer["leastRequest"]).get("activeRequestBias")
        if bias is not None:
            number = parse_decimal(bias)
            bias_path = join(path, "leastRequest.activeRequestBias")
            if number is None:
                return [(bias_path, "string must be a valid number")]
            if number < 0:
                return [(bias_path, "must be greater or equal then: 0")]
    return []


def _hash_policy_errors(path: str, policies: Any) -> Errors:
    out: Errors = []
    for i, policy in enumerate(as_list(policies)):
        policy = as_dict(policy)
        field = _HASH_CONFIG.get(as_str(policy.get("type")))
        if field is None:
            continue
        if policy.get(field) is None:
            out.append((join(index(path, i), field), "must be defined"))
        elif field == "cookie":
            cookie_path = as_dict(policy["cookie"]).get("path")
            if cookie_path is not None and not str(cookie_path).startswith("/"):
                out.append((join(index(path, i), "cookie.path"), "must be an absolute path"))
    return out


def deprecations(spec: dict[str, Any]) -> list[str]:
    """Warnings Kuma returns with a successful create or update."""
    out: list[str] = []
    for i, item in enumerate(as_list(spec.get("to"))):
        balancer = as_dict(as_dict(item).get("default")).get("loadBalancer")
        field = {"RingHash": "ringHash", "Maglev": "maglev"}.get(as_str(as_dict(balancer).get("type")))
        policies = as_dict(as_dict(balancer).get(field or "")).get("hashPolicies")
        if balancer is None or field is None or policies is None:
            continue
        out.append(f"configuration 'spec.to[{i}].default.loadBalancer.{field}.hashPolicies' is deprecated, "
                   f"use 'spec.to[{i}].default.hashPolicies' instead")
        out += [f"SourceIP type for 'spec.to[{i}].default.loadBalancer.{field}.hashPolicies[{j}].type' is "
                "deprecated, use Connection instead"
                for j, policy in enumerate(as_list(policies)) if as_dict(policy).get("type") == "SourceIP"]
    return out + top_level_deprecations(spec.get("targetRef")) + _not_applied(spec)


def _not_applied(spec: dict[str, Any]) -> list[str]:
    """What this control plane stores but does not apply (nothing accepted may silently do nothing)."""
    out = []
    for i, item in enumerate(as_list(spec.get("to"))):
        item = as_dict(item)
        locality = as_dict(as_dict(item.get("default")).get("localityAwareness"))
        if as_list(as_dict(locality.get("localZone")).get("affinityTags")):
            out.append(f"'spec.to[{i}].default.localityAwareness.localZone.affinityTags' is stored but not "
                       "applied to proxies: it needs endpoint weights per caller")
    return out


def mesh_defaults(mesh: str) -> list[tuple[str, dict[str, Any]]]:
    return []
