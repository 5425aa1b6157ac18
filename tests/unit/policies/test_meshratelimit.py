"""MeshRateLimit validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshratelimit import schema as mrl

VALID = {
    "http and tcp limits from the mesh": """
targetRef: {kind: MeshService, name: backend}
from:
  - targetRef: {kind: Mesh}
    default:
      local:
        http:
          requestRate: {num: 100, interval: 10s}
          onRateLimit:
            status: 423
            headers:
              set: [{name: x-kuma-rate-limited, value: "true"}]
        tcp:
          connectionRate: {num: 100, interval: 100ms}
""",
    "gateway limits through to": """
targetRef: {kind: MeshGateway, name: edge}
to:
  - targetRef: {kind: Mesh}
    default: {local: {http: {requestRate: {num: 10, interval: 1s}}}}
""",
    "rules on a Dataplane": """
targetRef: {kind: Dataplane}
rules:
  - matches: [{spiffeID: {type: Prefix, value: "spiffe://default"}}]
    default: {local: {http: {disabled: true}}}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mrl, text) == []


LOCAL = "spec.from[0].default.local"
GATEWAY_SCOPE = ("must not be defined when the scope includes a Gateway, select only proxyType Sidecar or select "
                 "only gateways and use spec.to")
INVALID = {
    "rates too small": ("""
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      local:
        http: {requestRate: {num: 0, interval: 49ms}}
        tcp: {connectionRate: {num: 0, interval: 50ms}}
""", [(f"{LOCAL}.http.requestRate.num", "must be greater than 0"),
      (f"{LOCAL}.http.requestRate.interval", "must be greater than: 50ms"),
      (f"{LOCAL}.tcp.connectionRate.num", "must be greater than 0"),
      (f"{LOCAL}.tcp.connectionRate.interval", "must be greater than: 50ms")]),
    "MeshService in from": ("""
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: MeshService, name: backend}
    default: {local: {tcp: {connectionRate: {num: 100, interval: 500ms}}}}
""", [("spec.from[0].targetRef.kind", "value 'MeshService' is not supported")]),
    "empty default": ("""
targetRef: {kind: MeshService, name: web-frontend}
from: [{targetRef: {kind: Mesh}, default: {}}]
""", [(LOCAL, "must be defined")]),
    "empty local sections": ("""
targetRef: {kind: MeshService, name: web-frontend}
from:
  - {targetRef: {kind: Mesh}, default: {local: {}}}
  - {targetRef: {kind: Mesh}, default: {local: {tcp: {}, http: {}}}}
""", [(LOCAL, "must have at least one defined: tcp, http"),
      ("spec.from[1].default.local.http", "must have at least one defined: disabled, requestRate, onRateLimit"),
      ("spec.from[1].default.local.tcp", "must have at least one defined: disabled, connectionRate")]),
    "to on a sidecar": ("""
targetRef: {kind: Dataplane, sectionName: test}
to: [{targetRef: {kind: Mesh}, default: {}}]
""", [("spec.targetRef.sectionName", "can only be used with inbound policies"),
      ("spec.to", "must not be defined")]),
    "from on a gateway": ("""
targetRef: {kind: MeshGateway, name: edge}
from:
  - targetRef: {kind: Mesh}
    default: {local: {http: {requestRate: {num: 100, interval: 10s}}}}
""", [("spec.from", GATEWAY_SCOPE)]),
    "from under a MeshHTTPRoute": ("""
targetRef: {kind: MeshHTTPRoute, name: http-route-1}
from:
  - targetRef: {kind: Mesh}
    default: {local: {http: {requestRate: {num: 100, interval: 10s}}}}
""", [("spec.from", GATEWAY_SCOPE)]),
    "from mixed with rules on the whole mesh": ("""
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default: {local: {http: {requestRate: {num: 100, interval: 10s}}}}
rules:
  - default: {local: {http: {requestRate: {num: 100, interval: 10s}}}}
""", [("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"),
      ("spec.rules", "must not be defined"),
      ("spec.from", GATEWAY_SCOPE)]),
    "tcp limit behind a spiffe id match": ("""
targetRef: {kind: Dataplane}
rules:
  - matches: [{spiffeID: {type: Exact, value: "spiffe://default/client"}}, {}]
    default: {local: {tcp: {connectionRate: {num: 100, interval: 100ms}}}}
""", [("spec.rules[0].matches[1]", "must specify at least one of 'spiffeID' or 'sni'"),
      ("spec.rules[0].default.local.tcp",
       "can't be specified when matches contain spiffeID because this field cannot be conditioned on source "
       "identity")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mrl, text) == expected


def test_no_defaults_with_a_mesh():
    assert mrl.mesh_defaults("default") == []


def test_deprecations_of_low_rate_limit_status():
    spec = {"targetRef": {"kind": "Dataplane"},
            "rules": [{"default": {"local": {"http": {"onRateLimit": {"status": 200}}}}}]}
    assert mrl.deprecations(spec) == [
        "'spec.rules[0].default.local.http.requestRate.status' must be 400 or higher. "
        "Please update your configuration."]
