"""MeshTimeout validation and mesh defaults, cases taken from Kuma's tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.core.validation import check_schema
from appliance.policies.meshtimeout import schema as mt

VALID = {
    "full example": """
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      connectionTimeout: 10s
      idleTimeout: 1h
      http: {requestTimeout: 0s, streamIdleTimeout: 1h, maxStreamDuration: 1h, maxConnectionDuration: 1h}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      connectionTimeout: 10s
      idleTimeout: 1h
      http: {requestTimeout: 1s, streamIdleTimeout: 1h, maxStreamDuration: 1h, maxConnectionDuration: 1h}
""",
    "top-level MeshHTTPRoute with route timeouts only": """
targetRef: {kind: MeshHTTPRoute, name: route-1}
to:
  - targetRef: {kind: Mesh}
    default:
      http: {requestTimeout: 1s, streamIdleTimeout: 2s}
""",
    "MeshExternalService by name and by labels": """
targetRef: {kind: MeshSubset, tags: {kuma.io/service: web-frontend}}
to:
  - targetRef: {kind: MeshExternalService, name: web-backend}
    default: {http: {requestTimeout: 1s}}
  - targetRef: {kind: MeshExternalService, labels: {kuma.io/display-name: web-backend}}
    default: {http: {requestTimeout: 1s}}
""",
    "matched inbound rule with route timeouts": """
targetRef: {kind: Mesh}
rules:
  - matches:
      - spiffeID: {type: Exact, value: "spiffe://default/client"}
        sni: {type: Exact, value: backend.mesh}
    default:
      http: {requestTimeout: 1s, streamIdleTimeout: 2s}
""",
    "gateway listener tags on a MeshGateway": """
targetRef: {kind: MeshGateway, name: edge, tags: {port: "8080"}}
to:
  - targetRef: {kind: Mesh}
    default: {idleTimeout: 1h}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mt, text) == []


ROUTE = "can't be specified when top-level TargetRef is referencing MeshHTTPRoute"
SPIFFE = ("can't be specified when matches contain spiffeID because this field cannot be conditioned on "
          "source identity")
INVALID = {
    "nothing to configure": ("""
targetRef: {kind: Mesh}
""", [("spec", "at least one of 'from', 'to' or 'rules' has to be defined")]),
    "unsupported kind in to": ("""
targetRef: {kind: MeshService, name: web-frontend}
to:
  - targetRef: {kind: MeshServiceSubset, name: a}
    default: {http: {requestTimeout: 1s}}
""", [("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
    "sectionName on an outbound policy": ("""
targetRef: {kind: Dataplane, sectionName: test}
to:
  - targetRef: {kind: MeshServiceSubset, name: a}
    default: {http: {requestTimeout: 1s}}
""", [("spec.targetRef.sectionName", "can only be used with inbound policies"),
      ("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
    "missing timeout configuration": ("""
targetRef: {kind: MeshService, name: web-frontend}
to:
  - targetRef: {kind: MeshService, name: web-backend}
""", [("spec.to[0].default", "at least one timeout should be configured")]),
    "negative timeouts": ("""
targetRef: {kind: MeshService, name: web-frontend}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      connectionTimeout: -1s
      idleTimeout: -1s
      http: {requestTimeout: -10s}
""", [("spec.to[0].default.connectionTimeout", "must be greater than zero when defined"),
      ("spec.to[0].default.idleTimeout", "must not be negative when defined"),
      ("spec.to[0].default.http.requestTimeout", "must not be negative when defined")]),
    "empty http section": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {http: {requestHeadersTimeout: 1s}}
""", [("spec.to[0].default.http", "at least one timeout in this section should be configured")]),
    "MeshHTTPRoute with sectionName in to": ("""
to:
  - targetRef: {kind: MeshHTTPRoute, name: http-route-1, sectionName: some-section}
    default: {http: {requestTimeout: 1s}}
""", [("spec.to[0].targetRef.sectionName", "must not be set with kind MeshHTTPRoute")]),
    "top-level MeshHTTPRoute": ("""
targetRef: {kind: MeshHTTPRoute, name: route-1}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      connectionTimeout: 10s
      idleTimeout: 1h
      http: {requestTimeout: 1s, streamIdleTimeout: 1h, maxStreamDuration: 1h, maxConnectionDuration: 1h}
from:
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: 11s}
""", [("spec.from", "must not be defined"),
      ("spec.to[0].targetRef.kind", "value 'MeshService' is not supported"),
      ("spec.to[0].default.connectionTimeout", ROUTE),
      ("spec.to[0].default.idleTimeout", ROUTE),
      ("spec.to[0].default.http.maxStreamDuration", ROUTE),
      ("spec.to[0].default.http.maxConnectionDuration", ROUTE)]),
    "labels and name for MeshExternalService": ("""
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshExternalService, name: web-backend, labels: {kuma.io/display-name: web-backend}}
    default: {connectionTimeout: 10s, idleTimeout: 1h}
""", [("spec.to[0].targetRef.labels", "either labels or name must be specified")]),
    "rules together with to": ("""
targetRef: {kind: Mesh}
rules:
  - default: {connectionTimeout: 10s}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {connectionTimeout: 10s}
""", [("spec", "fields 'to' and 'from' must be empty when 'rules' is defined")]),
    "empty match entry": ("""
rules:
  - matches: [{}]
    default: {http: {requestTimeout: 1s}}
""", [("spec.rules[0].matches[0]", "must specify at least one of 'spiffeID' or 'sni'")]),
    "spiffeID match with source-independent timeouts": ("""
rules:
  - matches:
      - spiffeID: {type: Exact, value: "spiffe://default/client"}
    default:
      connectionTimeout: 10s
      http: {requestHeadersTimeout: 2s, maxStreamDuration: 3s}
""", [("spec.rules[0].default.connectionTimeout", SPIFFE),
      ("spec.rules[0].default.http.requestHeadersTimeout", SPIFFE),
      ("spec.rules[0].default.http.maxStreamDuration", SPIFFE)]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mt, text) == expected


def test_schema_rejects_an_unknown_spiffe_type(check):
    # Kuma's validator has its own message for this, but the enum in the schema answers first.
    assert check(mt, """
rules:
  - matches: [{spiffeID: {type: Regex, value: "spiffe://default/client"}}]
    default: {http: {requestTimeout: 1s}}
""") == ["spec.rules[0].matches[0].spiffeID.type in body should be one of [Exact Prefix]"]


def test_validator_reports_spiffe_type_problems_by_itself():
    spec = {"rules": [{"matches": [{"spiffeID": {"value": "spiffe://default/client"}},
                                   {"spiffeID": {"type": "Regex", "value": "spiffe://default/client"}}],
                       "default": {"http": {"requestTimeout": "1s"}}}]}
    assert mt.validate(spec) == [
        ("spec.rules[0].matches[0].spiffeID.type", "must be set"),
        ("spec.rules[0].matches[1].spiffeID.type", 'unrecognized type "Regex", supported values are: Exact, Prefix'),
    ]


def test_mesh_defaults_are_kumas_and_valid():
    defaults = dict(mt.mesh_defaults("demo"))
    assert set(defaults) == {"mesh-timeout-all-demo", "mesh-gateways-timeout-all-demo"}
    assert defaults["mesh-timeout-all-demo"]["to"][0]["default"] == {
        "connectionTimeout": "5s", "idleTimeout": "1h0m0s",
        "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m0s"}}
    assert defaults["mesh-gateways-timeout-all-demo"]["targetRef"] == {"kind": "Mesh", "proxyTypes": ["Gateway"]}
    for spec in defaults.values():
        problems: list[str] = []
        check_schema(mt.SPEC_SCHEMA, spec, "spec", problems)
        assert problems == [] and mt.validate(spec) == []


def test_deprecations():
    assert mt.deprecations({"targetRef": {"kind": "MeshHTTPRoute", "name": "r"}, "from": [{}]}) == [
        "'from' field is deprecated, use 'rules' instead",
        "MeshHTTPRoute value for 'targetRef.kind' is deprecated, use MeshHTTPRoute in spec.to[].targetRef",
    ]
    # Kuma's own defaults still use `from`, so a fresh mesh's timeout policies carry this warning.
    assert [mt.deprecations(spec) for _, spec in mt.mesh_defaults("m")] == [
        ["'from' field is deprecated, use 'rules' instead"]] * 2
