"""MeshCircuitBreaker validation and mesh defaults, cases taken from Kuma's tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.core.validation import check_schema
from appliance.policies.meshcircuitbreaker import schema as mcb

VALID = {
    "full example": """
targetRef: {kind: MeshService, name: web-frontend}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      connectionLimits: {maxConnections: 2, maxPendingRequests: 8, maxRetries: 2, maxRequests: 2}
      outlierDetection:
        disabled: false
        interval: 5s
        baseEjectionTime: 30s
        maxEjectionPercent: 20
        splitExternalAndLocalErrors: true
        healthyPanicThreshold: "33.3"
        detectors:
          totalFailures: {consecutive: 10}
          gatewayFailures: {consecutive: 10}
          localOriginFailures: {consecutive: 10}
          successRate: {minimumHosts: 5, requestVolume: 10, standardDeviationFactor: "1.9"}
          failurePercentage: {requestVolume: 10, minimumHosts: 5, threshold: 85}
from:
  - targetRef: {kind: Mesh}
    default: {connectionLimits: {maxConnections: 1024}}
""",
    "inbound rules": """
targetRef: {kind: Dataplane, sectionName: http}
rules:
  - default: {connectionLimits: {maxConnections: 100}}
""",
    "gateway listener tags": """
targetRef: {kind: MeshGateway, name: edge, tags: {port: "80"}}
to:
  - targetRef: {kind: Mesh}
    default: {connectionLimits: {}}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mcb, text) == []


OUTLIER = "spec.to[0].default.outlierDetection"
INVALID = {
    "nothing to configure": ("targetRef: {kind: Mesh}",
                             [("spec", "at least one of 'from', 'to' or 'rules' has to be defined")]),
    "to mixed with rules": ("""
targetRef: {kind: MeshService, name: web-frontend}
to:
  - targetRef: {kind: MeshServiceSubset, name: a}
    default: {connectionLimits: {}}
rules:
  - default: {connectionLimits: {}}
""", [("spec", "fields 'to' and 'from' must be empty when 'rules' is defined"),
      ("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
    "sectionName on an outbound policy": ("""
targetRef: {kind: Dataplane, sectionName: test}
to:
  - targetRef: {kind: Mesh}
    default: {connectionLimits: {}}
""", [("spec.targetRef.sectionName", "can only be used with inbound policies")]),
    "missing configuration": ("""
to:
  - targetRef: {kind: MeshService, name: web-backend}
""", [("spec.to[0].default", "at least one of: 'connectionLimits' or 'outlierDetection' should be configured")]),
    "rule errors are reported under from": ("""
rules:
  - default: {}
""", [("spec.from[0].default", "at least one of: 'connectionLimits' or 'outlierDetection' should be configured")]),
    "zero limits": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      connectionLimits: {maxConnections: 0, maxConnectionPools: 0, maxPendingRequests: 0, maxRetries: 0,
                         maxRequests: 0}
""", [(f"spec.to[0].default.connectionLimits.{name}", "must be greater than 0")
      for name in ("maxConnections", "maxConnectionPools", "maxPendingRequests", "maxRetries", "maxRequests")]),
    "zero outlier detection values": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      outlierDetection:
        interval: 0s
        baseEjectionTime: 0s
        maxEjectionPercent: 0
        healthyPanicThreshold: 0
        detectors:
          totalFailures: {consecutive: 0}
          gatewayFailures: {consecutive: 0}
          localOriginFailures: {consecutive: 0}
          successRate: {minimumHosts: 0, requestVolume: 0, standardDeviationFactor: 0}
          failurePercentage: {requestVolume: 0, minimumHosts: 0, threshold: 0}
""", [(f"{OUTLIER}.interval", "must be greater than zero when defined"),
      (f"{OUTLIER}.baseEjectionTime", "must be greater than zero when defined"),
      (f"{OUTLIER}.detectors.totalFailures.consecutive", "must be greater than 0"),
      (f"{OUTLIER}.detectors.gatewayFailures.consecutive", "must be greater than 0"),
      (f"{OUTLIER}.detectors.localOriginFailures.consecutive", "must be greater than 0"),
      (f"{OUTLIER}.detectors.successRate.minimumHosts", "must be greater than 0"),
      (f"{OUTLIER}.detectors.successRate.requestVolume", "must be greater than 0"),
      (f"{OUTLIER}.detectors.successRate.standardDeviationFactor", "must be greater than 0"),
      (f"{OUTLIER}.detectors.failurePercentage.minimumHosts", "must be greater than 0"),
      (f"{OUTLIER}.detectors.failurePercentage.requestVolume", "must be greater than 0")]),
    "percentages above 100": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      outlierDetection:
        maxEjectionPercent: 101
        detectors: {failurePercentage: {threshold: 101}}
        healthyPanicThreshold: 101
""", [(f"{OUTLIER}.maxEjectionPercent", "must be in inclusive range [0, 100]"),
      (f"{OUTLIER}.healthyPanicThreshold", "must be in inclusive range [0.0, 100.0]"),
      (f"{OUTLIER}.detectors.failurePercentage.threshold", "must be in inclusive range [0, 100]")]),
    "negative values": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      outlierDetection:
        detectors: {successRate: {standardDeviationFactor: -2}}
        healthyPanicThreshold: -3
""", [(f"{OUTLIER}.healthyPanicThreshold", "must be in inclusive range [0.0, 100.0]"),
      (f"{OUTLIER}.detectors.successRate.standardDeviationFactor", "must be greater than 0")]),
    "detectors missing": ("""
to: [{targetRef: {kind: Mesh}, default: {outlierDetection: {maxEjectionPercent: 100}}}]
""", [(f"{OUTLIER}.detectors", "must be defined")]),
    "detectors empty": ("""
to: [{targetRef: {kind: Mesh}, default: {outlierDetection: {detectors: {}}}}]
""", [(f"{OUTLIER}.detectors", "must have at least one defined: totalFailures, gatewayFailures, "
                               "localOriginFailures, successRate, failurePercentage")]),
    "deviation factor that is not a number": ("""
to:
  - targetRef: {kind: Mesh}
    default: {outlierDetection: {detectors: {successRate: {standardDeviationFactor: xyz}}}}
""", [(f"{OUTLIER}.detectors.successRate.standardDeviationFactor", "invalid number")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mcb, text) == expected


def test_schema_rejects_a_boolean_threshold(check):
    assert check(mcb, """
to: [{targetRef: {kind: Mesh}, default: {outlierDetection: {healthyPanicThreshold: true}}}]
""") == ['spec.to[0].default.outlierDetection.healthyPanicThreshold in body must be of type string: "boolean"']


def test_mesh_defaults_are_kumas_and_valid():
    [(name, spec)] = mcb.mesh_defaults("demo")
    assert name == "mesh-circuit-breaker-all-demo"
    assert spec == {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
        "connectionLimits": {"maxConnections": 1024, "maxPendingRequests": 1024, "maxRetries": 3,
                             "maxRequests": 1024}}}]}
    problems: list[str] = []
    check_schema(mcb.SPEC_SCHEMA, spec, "spec", problems)
    assert problems == [] and mcb.validate(spec) == []
