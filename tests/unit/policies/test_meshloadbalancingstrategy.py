"""MeshLoadBalancingStrategy validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshloadbalancingstrategy import schema as mlbs

VALID = {
    "locality aware ring hash": """
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default:
      localityAwareness:
        localZone: {affinityTags: [{key: k8s.io/node, weight: 9}, {key: k8s.io/az, weight: 1}]}
        crossZone:
          failover:
            - {from: {zones: [zone-1]}, to: {type: Only, zones: [zone-2]}}
            - to: {type: Any}
          failoverThreshold: {percentage: "70.5"}
      loadBalancer:
        type: RingHash
        ringHash:
          hashFunction: MurmurHash2
          minRingSize: 64
          hashPolicies:
            - {type: Cookie, cookie: {name: session, ttl: 1h, path: /}}
            - {type: SourceIP, connection: {sourceIP: true}}
""",
    "MeshHTTPRoute with only hash policies": """
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshHTTPRoute, name: route-1}
    default: {hashPolicies: [{type: Header, header: {name: x-header-name}}]}
""",
    "MeshGateway without a load balancer": """
targetRef: {kind: MeshGateway, name: edge}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default: {localityAwareness: {disabled: true}}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mlbs, text) == []


DEFAULT = "spec.to[0].default"
CROSS = f"{DEFAULT}.localityAwareness.crossZone"
INVALID = {
    "to errors": ("""
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshServiceSubset, name: svc-2, tags: {version: v1}}
  - targetRef: {kind: MeshService, name: real-mesh-service, sectionName: http}
    default: {localityAwareness: {crossZone: {}}}
""", [("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported"),
      ("spec.to[1].default.localityAwareness.crossZone", "must not be set: MeshService traffic is local")]),
    "hash policies without their configuration": ("""
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshService, name: svc-2}
    default:
      loadBalancer:
        type: RingHash
        ringHash:
          hashPolicies: [{type: Header}, {type: Cookie}, {type: Connection}, {type: QueryParameter},
                         {type: FilterState}, {type: Cookie, cookie: {name: c, path: relative-path}}]
""", [(f"{DEFAULT}.loadBalancer.ringHash.hashPolicies[{i}].{field}", "must be defined")
      for i, field in enumerate(("header", "cookie", "connection", "queryParameter", "filterState"))]
     + [(f"{DEFAULT}.loadBalancer.ringHash.hashPolicies[5].cookie.path", "must be an absolute path")]),
    "negative active request bias": ("""
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshService, name: svc-2}
    default: {loadBalancer: {type: LeastRequest, leastRequest: {activeRequestBias: -1}}}
""", [(f"{DEFAULT}.loadBalancer.leastRequest.activeRequestBias", "must be greater or equal then: 0")]),
    "affinity tags": ("""
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default:
      localityAwareness:
        localZone: {affinityTags: [{key: k8s/node, weight: 0}, {key: "", weight: 10}, {key: k8s/az}]}
""", [(f"{DEFAULT}.localityAwareness.localZone.affinityTags[0].weight", "must be greater than 0"),
      (f"{DEFAULT}.localityAwareness.localZone.affinityTags[1].key", "must not be empty"),
      (f"{DEFAULT}.localityAwareness.localZone.affinityTags", "all or none affinity tags should have weight")]),
    "failover rules": ("""
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default:
      localityAwareness:
        crossZone:
          failover:
            - {from: {zones: [zone-1]}, to: {type: None, zones: [zone-1]}}
            - {from: {zones: [zone-1, ""]}, to: {type: Any}}
            - {from: {zones: []}, to: {type: Only, zones: []}}
            - to: {type: AnyExcept}
          failoverThreshold: {percentage: 0}
""", [(f"{CROSS}.failover[0].to.zones", "must be empty when type is None"),
      (f"{CROSS}.failover[1].from.zones[1]", "must not be empty"),
      (f"{CROSS}.failover[2].from.zones", "must not be empty"),
      (f"{CROSS}.failover[2].to.zones", "must not be empty when type is Only"),
      (f"{CROSS}.failover[3].to.zones", "must not be empty when type is AnyExcept"),
      (f"{CROSS}.failoverThreshold.percentage", "must be greater than 0")]),
    "threshold that is not a number": ("""
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default: {localityAwareness: {crossZone: {failoverThreshold: {percentage: hello}}}}
""", [(f"{CROSS}.failoverThreshold.percentage", "string must be a valid number")]),
    "load balancer under a MeshGateway": ("""
targetRef: {kind: MeshGateway, name: edge-gateway}
to:
  - targetRef: {kind: MeshService, name: svc-1}
    default: {loadBalancer: {type: LeastRequest, leastRequest: {activeRequestBias: "1.3"}}}
""", [("spec.to[0].targetRef.kind",
       "value 'MeshGateway' is not supported, only Mesh is allowed if loadBalancer is set")]),
    "hash policies twice": ("""
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshService, name: svc-2}
    default:
      hashPolicies: [{type: Header, header: {name: x-header-name}}]
      loadBalancer:
        type: Maglev
        maglev: {hashPolicies: [{type: Cookie, cookie: {name: session_id}}]}
        ringHash: {hashPolicies: [{type: Cookie, cookie: {name: session_id}}]}
""", [(f"{DEFAULT}.loadBalancer.ringHash.hashPolicies", "hashPolicies already specified in the root level"),
      (f"{DEFAULT}.loadBalancer.maglev.hashPolicies", "hashPolicies already specified in the root level")]),
    "MeshHTTPRoute with more than hash policies": ("""
targetRef: {kind: MeshService, name: svc-1}
to:
  - targetRef: {kind: MeshHTTPRoute, name: route-1}
    default: {loadBalancer: {type: RoundRobin}, localityAwareness: {disabled: true}}
""", [(f"{DEFAULT}.loadBalancer",
       "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported"),
      (f"{DEFAULT}.localityAwareness",
       "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mlbs, text) == expected


def test_external_service_needs_a_mesh_wide_policy():
    # MeshExternalService is not among the supported kinds, so Kuma reports both problems.
    spec = {"targetRef": {"kind": "MeshService", "name": "a"},
            "to": [{"targetRef": {"kind": "MeshExternalService", "name": "ext"}, "default": {}}]}
    assert mlbs.validate(spec) == [
        ("spec.to[0].targetRef.kind", "value 'MeshExternalService' is not supported"),
        ("spec.to[0].targetRef.kind", "kind MeshExternalService is only allowed with targetRef.kind: Mesh as it is "
                                      "configured on the Zone Egress and shared by all clients in the mesh"),
    ]


def test_deprecations_of_hash_policies_inside_the_balancer():
    spec = {"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {
        "type": "Maglev", "maglev": {"hashPolicies": [{"type": "SourceIP", "connection": {}}]}}}}]}
    assert mlbs.deprecations(spec) == [
        "configuration 'spec.to[0].default.loadBalancer.maglev.hashPolicies' is deprecated, "
        "use 'spec.to[0].default.hashPolicies' instead",
        "SourceIP type for 'spec.to[0].default.loadBalancer.maglev.hashPolicies[0].type' is deprecated, "
        "use Connection instead",
    ]
