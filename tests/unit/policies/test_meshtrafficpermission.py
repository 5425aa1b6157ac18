"""MeshTrafficPermission validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshtrafficpermission import schema as mtp

VALID = {
    "every kind of client": """
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default: {action: Allow}
  - targetRef: {kind: MeshSubset, tags: {kuma.io/zone: us-east, env: dev}}
    default: {action: Deny}
  - targetRef: {kind: MeshService, name: backend}
    default: {action: Allow}
  - targetRef: {kind: MeshServiceSubset, name: backend, tags: {version: v1}}
    default: {action: Deny}
""",
    "MeshServiceSubset at the top": """
targetRef: {kind: MeshServiceSubset, name: backend, tags: {version: v2}}
from:
  - targetRef: {kind: Mesh}
    default: {action: Deny}
""",
    "rules with spiffe ids": """
targetRef: {kind: Mesh}
rules:
  - default:
      deny: [{spiffeID: {type: Exact, value: "spiffe://trust.domain/service"}}]
      allow: [{spiffeID: {type: Prefix, value: "spiffe://trust.domain"}}]
      allowWithShadowDeny: [{spiffeID: {type: Exact, value: "spiffe://trust.domain/service-2"}}]
""",
    "sni and spiffe id on a Dataplane section": """
targetRef: {kind: Dataplane, sectionName: ze-port}
rules:
  - default:
      allow:
        - spiffeID: {type: Exact, value: "spiffe://default/ns/backend-ns/sa/backend"}
          sni: {type: Exact, value: sni.extsvc.default.zone-1.aws-aurora.8443}
""",
    "no top-level targetRef": """
from:
  - targetRef: {kind: Mesh}
    default: {action: Allow}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mtp, text) == []


INVALID = {
    "empty from": ("""
targetRef: {kind: MeshService, name: backend}
from: []
""", [("spec", "at least one of 'from' or 'rules' has to be defined")]),
    "both from and rules": ("""
targetRef: {kind: Mesh}
from: [{targetRef: {kind: Mesh}, default: {action: Allow}}]
rules: [{default: {allow: [{spiffeID: {type: Exact, value: "spiffe://a/b"}}]}}]
""", [("spec", "field 'from' must be empty when 'rules' is defined")]),
    "sectionName without from or rules": ("""
targetRef: {kind: Dataplane, sectionName: test}
""", [("spec.targetRef.sectionName", "can only be used with inbound policies"),
      ("spec", "at least one of 'from' or 'rules' has to be defined")]),
    "unsupported kind in from": ("""
targetRef: {kind: MeshService, name: backend}
from:
  - targetRef: {kind: MeshGateway, name: gw-1}
    default: {action: Allow}
""", [("spec.from[0].targetRef.kind", "value 'MeshGateway' is not supported")]),
    "default without action": ("""
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
""", [("spec.from[0].default.action", "must be defined")]),
    "rule with nothing to match": ("""
targetRef: {kind: Mesh}
rules:
  - default: {deny: []}
""", [("spec.rules[0]", "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined")]),
    "invalid sni values": ("""
targetRef: {kind: Dataplane, sectionName: ze-port}
rules:
  - default:
      allow: [{sni: {type: Exact, value: ""}}]
      allowWithShadowDeny: [{sni: {type: Exact, value: not_valid}}]
""", [("spec.rules[0].allow[0].sni.value", "must be set"),
      ("spec.rules[0].allowWithShadowDeny[0].sni.value",
       "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
       "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
       "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]),
    "invalid spiffe ids": ("""
targetRef: {kind: Mesh}
rules:
  - default:
      deny: [{spiffeID: {type: Exact, value: some-service}}]
      allow: [{spiffeID: {type: Prefix, value: wrong}}]
      allowWithShadowDeny: [{spiffeID: {type: Exact, value: "spiffe://Upper/x"}}]
""", [("spec.rules[0].allow[0].spiffeID", "must be a valid Spiffe ID: scheme is missing or invalid"),
      ("spec.rules[0].allowWithShadowDeny[0].spiffeID",
       "must be a valid Spiffe ID: trust domain characters are limited to lowercase letters, numbers, dots, "
       "dashes, and underscores"),
      ("spec.rules[0].deny[0].spiffeID", "must be a valid Spiffe ID: scheme is missing or invalid")]),
    "Mesh kind with a name and tags": ("""
targetRef: {kind: Mesh, name: all, tags: {a: b}, proxyTypes: []}
from: [{targetRef: {kind: Mesh}, default: {action: Allow}}]
""", [("spec.targetRef.name", "using name with kind Mesh is not yet supported"),
      ("spec.targetRef.tags", "must not be set with kind Mesh"),
      ("spec.targetRef.proxyTypes", "must be undefined or have at least one element")]),
    "MeshService without name or labels": ("""
targetRef: {kind: MeshService}
from: [{targetRef: {kind: MeshSubset, tags: {"bad key!": "v", ok: ""}}, default: {action: Allow}}]
""", [("spec.targetRef", "name or labels must be set when kind is MeshService"),
      ('spec.from[0].targetRef.tags["bad key!"]',
       "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"),
      ('spec.from[0].targetRef.tags["ok"]', "tag value must be non-empty")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mtp, text) == expected


def test_schema_rejects_an_unknown_kind_and_action(check):
    assert check(mtp, """
targetRef: {kind: MeshGatewayRoute, name: 5}
from: [{targetRef: {kind: Mesh}, default: {action: Maybe}}]
""") == [
        'spec.targetRef.kind in body should be one of '
        '[Mesh MeshSubset MeshGateway MeshService MeshExternalService MeshMultiZoneService MeshServiceSubset '
        'MeshHTTPRoute Dataplane]',
        'spec.targetRef.name in body must be of type string: "number"',
        "spec.from[0].default.action in body should be one of [Allow Deny AllowWithShadowDeny]",
    ]


def test_no_defaults_with_a_mesh():
    assert mtp.mesh_defaults("default") == []


def test_deprecations_of_from_and_old_kinds():
    spec = {"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Allow"}}]}
    assert mtp.deprecations(spec) == [
        "'from' field is deprecated and will be removed in 3.0, use 'rules' with MeshIdentity (spiffeId) instead",
        "MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead",
        "MeshService value for 'targetRef.kind' is deprecated, use Dataplane with labels instead",
    ]
    assert mtp.deprecations({"targetRef": {"kind": "Mesh"}, "rules": []}) == []
