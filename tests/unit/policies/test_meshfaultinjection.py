"""MeshFaultInjection validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshfaultinjection import schema as mfi

VALID = {
    "faults from a service": """
targetRef: {kind: MeshService, name: backend}
from:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      http:
        - abort: {httpStatus: 503, percentage: 50}
          delay: {value: 10s, percentage: 5}
        - responseBandwidth: {limit: 100Mbps, percentage: 5}
        - abort: {httpStatus: 500, percentage: "50.5"}
""",
    "to on gateways only": """
targetRef: {kind: Mesh, proxyTypes: [Gateway]}
to: [{targetRef: {kind: Mesh}, default: {http: []}}]
""",
    "rules with spiffe id and sni matches": """
targetRef: {kind: Mesh}
rules:
  - matches:
      - spiffeID: {type: Exact, value: "spiffe://trust.domain/service"}
      - sni: {type: Exact, value: sni.extsvc.default.zone-1.aws-aurora.8443}
    default:
      http: [{responseBandwidth: {limit: 1000 Mbps, percentage: 50}}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mfi, text) == []


HTTP = "spec.from[0].default.http"
INVALID = {
    "values out of range": ("""
targetRef: {kind: MeshService, name: backend}
from:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      http:
        - abort: {httpStatus: 677, percentage: 111}
        - delay: {value: -5s, percentage: 1111}
        - responseBandwidth: {limit: "1000", percentage: "xyz"}
""", [(f"{HTTP}.abort[0].httpStatus", "must be in inclusive range [100, 599]"),
      (f"{HTTP}.abort[0].percentage", "must be in inclusive range [0.0, 100.0]"),
      (f"{HTTP}.delay[1].value", "must not be negative when defined"),
      (f"{HTTP}.delay[1].percentage", "must be in inclusive range [0.0, 100.0]"),
      (f"{HTTP}.responseBandwidth[2].limit", "must be in kbps/Mbps/Gbps units"),
      (f"{HTTP}.responseBandwidth[2].percentage", "string must be a valid number")]),
    "invalid sni type in rules": ("""
targetRef: {kind: Mesh}
rules:
  - matches: [{spiffeID: {type: Exact, value: not-valid}}]
    default: {http: [{responseBandwidth: {limit: "", percentage: 0}}]}
""", [("spec.rules[0].matches[0].spiffeID", "must be a valid Spiffe ID: scheme is missing or invalid"),
      ("spec.rules[0].default.http.responseBandwidth[0].limit", "must be defined")]),
    "to on a sidecar-only scope": ("""
targetRef: {kind: Dataplane, sectionName: test}
to: [{targetRef: {kind: Mesh}, default: {http: []}}]
""", [("spec.targetRef.sectionName", "can only be used with inbound policies"),
      ("spec.to", "must not be defined")]),
    "from on a gateway": ("""
targetRef: {kind: MeshGateway, name: edge}
to:
  - targetRef: {kind: Mesh}
    default: {http: [{abort: {httpStatus: 503, percentage: 50}}]}
  - targetRef: {kind: MeshService, name: backend}
    default: {http: [{abort: {httpStatus: 503, percentage: 50}}]}
from:
  - targetRef: {kind: Mesh}
    default: {http: [{abort: {httpStatus: 503, percentage: 50}}]}
""", [("spec.from", "must not be defined when the scope includes a Gateway, select only proxyType Sidecar or "
                    "select only gateways and use spec.to"),
      ("spec.to[1].targetRef.kind", "value 'MeshService' is not supported")]),
    "from together with rules": ("""
targetRef: {kind: Mesh, proxyTypes: [Sidecar]}
from: [{targetRef: {kind: Mesh}, default: {http: []}}]
rules: [{default: {http: []}}]
""", [("spec", "field 'from' must be empty when 'rules' is defined")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mfi, text) == expected


def test_schema_requires_fault_fields(check):
    assert check(mfi, """
targetRef: {kind: Mesh, proxyTypes: [Sidecar]}
from: [{targetRef: {kind: Mesh}, default: {http: [{abort: {}}]}}]
""") == ["spec.from[0].default.http[0].abort.httpStatus in body is required",
         "spec.from[0].default.http[0].abort.percentage in body is required"]
