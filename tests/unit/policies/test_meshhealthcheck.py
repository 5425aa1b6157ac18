"""MeshHealthCheck validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.policies.meshhealthcheck import schema as mhc

VALID = {
    "full example": """
targetRef: {kind: MeshService, name: backend}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      interval: 10s
      timeout: 2s
      unhealthyThreshold: 3
      healthyThreshold: 1
      initialJitter: 5s
      intervalJitter: 6s
      intervalJitterPercent: 10
      healthyPanicThreshold: 60
      failTrafficOnPanic: false
      noTrafficInterval: 10s
      eventLogPath: /tmp/health-check.log
      alwaysLogHealthCheckFailures: false
      reuseConnection: true
      tcp: {disabled: true, send: Zm9v, receive: [YmFy, YmF6]}
      http:
        disabled: false
        path: /health
        requestHeadersToAdd:
          add: [{name: x-some-header, value: value}]
          set: [{name: x-some-other-header, value: value}]
        expectedStatuses: [200, 201]
      grpc: {serviceName: grpc-client, authority: grpc-client.default.svc.cluster.local}
""",
    "windows event log path and string threshold": """
to:
  - targetRef: {kind: MeshExternalService, name: db}
    default: {eventLogPath: 'C:\\logs\\hc.log', healthyPanicThreshold: "12.5", tcp: {}}
""",
    "gateway with listener tags": """
targetRef: {kind: MeshGateway, name: edge, tags: {port: "80"}}
to: [{targetRef: {kind: Mesh}, default: {grpc: {}}}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mhc, text) == []


DEFAULT = "spec.to[0].default"
INVALID = {
    "unsupported top-level kind": ("""
targetRef: {kind: MeshHTTPRoute, name: some-route}
""", [("spec.targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
    "no protocol section": ("""
to: [{targetRef: {kind: MeshService, name: web-backend}, default: {}}]
""", [(DEFAULT, "must have at least one defined: http, tcp, grpc")]),
    "thresholds out of range": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {interval: 10s, timeout: 2s, unhealthyThreshold: -3, healthyThreshold: 0, grpc: {}}
""", [(f"{DEFAULT}.unhealthyThreshold", "must be greater than zero when defined"),
      (f"{DEFAULT}.healthyThreshold", "must be greater than zero when defined")]),
    "durations out of range": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {interval: -10s, timeout: -2s, initialJitter: -5s, intervalJitter: -6s, noTrafficInterval: 0s,
              grpc: {}}
""", [(f"{DEFAULT}.{name}", "must be greater than zero when defined")
      for name in ("interval", "timeout", "initialJitter", "intervalJitter", "noTrafficInterval")]),
    "percentages out of range": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {intervalJitterPercent: 110, healthyPanicThreshold: -10, grpc: {}}
""", [(f"{DEFAULT}.intervalJitterPercent", "must be in inclusive range [0, 100]"),
      (f"{DEFAULT}.healthyPanicThreshold", "must be in inclusive range [0.0, 100.0]")]),
    "threshold that is not a number": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {healthyPanicThreshold: "ten", grpc: {}}
""", [(f"{DEFAULT}.healthyPanicThreshold", "string must be a valid number")]),
    "invalid event log path": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {eventLogPath: "#not_valid_path", grpc: {}}
""", [(f"{DEFAULT}.eventLogPath", "must be a valid path when defined")]),
    "http path and statuses": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {http: {path: "", expectedStatuses: [99, 600, 200]}}
""", [(f"{DEFAULT}.http.path", "must be defined"),
      (f"{DEFAULT}.http.expectedStatuses[0]", "must be in inclusive range [100, 599]"),
      (f"{DEFAULT}.http.expectedStatuses[1]", "must be in inclusive range [100, 599]")]),
    "MeshGateway name missing": ("""
targetRef: {kind: MeshGateway, tags: {port: "*"}}
to: [{targetRef: {kind: MeshServiceSubset, name: a}, default: {tcp: {}}}]
""", [("spec.targetRef.name", "must be set when kind is MeshGateway"),
      ("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mhc, text) == expected


def test_schema_limits_request_headers(check):
    headers = ", ".join(f"{{name: h{i}, value: v}}" for i in range(17))
    assert check(mhc, f"""
to: [{{targetRef: {{kind: Mesh}}, default: {{http: {{requestHeadersToAdd: {{add: [{headers}]}}}}}}}}]
""") == ["spec.to[0].default.http.requestHeadersToAdd.add in body should have at most 16 items"]


def test_no_defaults_with_a_mesh():
    assert mhc.mesh_defaults("default") == []


def test_deprecations_of_panic_threshold():
    spec = {"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"healthyPanicThreshold": 10, "tcp": {}}}]}
    assert mhc.deprecations(spec) == [
        "MeshSubset value for 'targetRef.kind' is deprecated, use Dataplane with labels instead",
        "healthyPanicThreshold for 'to[].default' is deprecated. The setting has been moved to MeshCircuitBreaker "
        "policy, please use MeshCircuitBreaker policy instead.",
    ]
