"""MeshTCPRoute validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshtcproute import schema as mtcpr

VALID = {
    "one rule": """
targetRef: {kind: MeshService, name: frontend}
to:
  - targetRef: {kind: MeshService, name: backend}
    rules: [{default: {backendRefs: [{kind: MeshService, name: other}]}}]
""",
    "no rules": """
targetRef: {kind: MeshService, name: frontend}
to: [{targetRef: {kind: MeshService, name: backend}, rules: []}]
""",
    "MeshGateway with listener tags": """
targetRef: {kind: MeshGateway, name: edge, tags: {port: "6000"}}
to:
  - targetRef: {kind: Mesh}
    rules: [{default: {backendRefs: [{kind: MeshService, name: other}]}}]
""",
    "ports on MeshService and MeshMultiZoneService": """
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, name: backend, sectionName: "8080"}
    rules: [{default: {backendRefs: [{kind: MeshMultiZoneService, name: other, port: 8080}]}}]
  - targetRef: {kind: MeshMultiZoneService, name: other, sectionName: "8080"}
    rules: [{default: {backendRefs: [{kind: MeshService, name: backend, port: 8080}]}}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mtcpr, text) == []


BACKENDS = "spec.to[0].rules[0].default.backendRefs"
INVALID = {
    "Mesh is no destination": ("""
targetRef: {kind: MeshService, name: frontend}
to: [{targetRef: {kind: Mesh}, rules: []}]
""", [("spec.to[0].targetRef.kind", "value 'Mesh' is not supported")]),
    "MeshService under a MeshGateway": ("""
targetRef: {kind: MeshGateway, name: edge}
to: [{targetRef: {kind: MeshService, name: backend}, rules: []}]
""", [("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")]),
    "unsupported top-level kind": ("""
targetRef: {kind: MeshHTTPRoute, name: route}
to: [{targetRef: {kind: MeshService, name: backend}, rules: []}]
""", [("spec.targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
    "subset backend without a name": ("""
targetRef: {kind: MeshService, name: frontend}
to:
  - targetRef: {kind: MeshService, name: backend}
    rules: [{default: {backendRefs: [{kind: MeshServiceSubset, tags: {version: v1}}]}}]
""", [(f"{BACKENDS}[0].name", "must be set when kind is MeshServiceSubset")]),
    "MeshMultiZoneService backend without a port": ("""
to:
  - targetRef: {kind: MeshService, name: backend}
    rules: [{default: {backendRefs: [{kind: MeshMultiZoneService, name: test-server}]}}]
""", [(f"{BACKENDS}[0].port", "must be defined with kind MeshMultiZoneService")]),
    "rule without backends": ("""
to:
  - targetRef: {kind: MeshService, name: backend}
    rules: [{default: {}}]
""", [(BACKENDS, "must be defined")]),
    "backend name with invalid characters": ("""
to:
  - targetRef: {kind: MeshService, name: Backend}
    rules: [{default: {backendRefs: [{kind: MeshService, name: kuma.io/unresolved-backend, mesh: other}]}}]
""", [("spec.to[0].targetRef.name",
       "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'."),
      (f"{BACKENDS}[0].name",
       "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'."),
      (f"{BACKENDS}[0].mesh", "must not be set with kind MeshService")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mtcpr, text) == expected


def test_schema_allows_one_rule_and_needs_a_destination(check):
    assert check(mtcpr, """
to:
  - targetRef: {kind: MeshService, name: backend}
    rules: [{default: {}}, {default: {}}]
""") == ["spec.to[0].rules in body should have at most 1 items"]
    assert check(mtcpr, "to: []") == ["spec.to in body should have at least 1 items"]
