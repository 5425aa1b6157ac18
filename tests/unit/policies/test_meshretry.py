"""MeshRetry validation and mesh defaults, cases taken from Kuma's tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.core.validation import check_schema
from appliance.policies.meshretry import schema as mr

VALID = {
    "full example": """
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: Mesh}
    default: {tcp: {maxConnectAttempt: 5}}
  - targetRef: {kind: MeshService, name: backend}
    default:
      tcp: {maxConnectAttempt: 5}
      http:
        numRetries: 10
        perTryTimeout: 20s
        backOff: {baseInterval: 15s, maxInterval: 20m}
        rateLimitedBackOff:
          resetHeaders:
            - {name: retry-after-http, format: Seconds}
            - {name: x-retry-after-http, format: UnixTimestamp}
          maxInterval: 21m
        retryOn: [5xx, GatewayError, Reset, Retriable4xx, ConnectFailure, EnvoyRatelimited, RefusedStream,
                  Http3PostConnectFailure, HttpMethodConnect, HttpMethodDelete, HttpMethodGet, HttpMethodHead,
                  HttpMethodOptions, HttpMethodPatch, HttpMethodPost, HttpMethodPut, HttpMethodTrace,
                  "500", "409", "503"]
        retriableRequestHeaders:
          - {type: Prefix, name: x-my-header-1, value: kuma-value-}
          - {type: RegularExpression, name: x-my-header-2, value: ".*"}
        hostSelection:
          - predicate: OmitPreviousHosts
          - {predicate: OmitHostsWithTags, tags: {version: v1}}
          - predicate: OmitPreviousPriorities
      grpc:
        numRetries: 10
        perTryTimeout: 20s
        backOff: {baseInterval: 15s, maxInterval: 20m}
        retryOn: [Canceled, DeadlineExceeded, Internal, ResourceExhausted, Unavailable]
""",
    "minimal http retry to a MeshMultiZoneService": """
to:
  - targetRef: {kind: MeshMultiZoneService, name: web-backend}
    default: {http: {numRetries: 5}}
""",
    "empty arrays count as configured": """
to:
  - targetRef: {kind: Mesh}
    default: {http: {retryOn: [], retriableRequestHeaders: []}, grpc: {retryOn: []}}
""",
    "nothing at all": "targetRef: {kind: Mesh}",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mr, text) == []


INVALID = {
    "unsupported kinds in to": ("""
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshSubset, tags: {version: v1}}
    default: {http: {numRetries: 1}}
  - targetRef: {kind: MeshServiceSubset, name: backend, tags: {kuma.io/zone: us-east}}
    default: {grpc: {numRetries: 1}}
""", [("spec.to[0].targetRef.kind", "value 'MeshSubset' is not supported"),
      ("spec.to[1].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
    "empty default": ("""
to: [{targetRef: {kind: Mesh}, default: {}}]
""", [("spec.to[0].default.conf", "at least one of the 'tcp', 'http', 'grpc' must be specified")]),
    "empty sections": ("""
to: [{targetRef: {kind: Mesh}, default: {tcp: {}, http: {}, grpc: {}}}]
""", [("spec.to[0].default.conf.tcp", "must not be empty"),
      ("spec.to[0].default.conf.http", "must not be empty"),
      ("spec.to[0].default.conf.grpc", "must not be empty")]),
    "zero connect attempts": ("""
to: [{targetRef: {kind: Mesh}, default: {tcp: {maxConnectAttempt: 0}}}]
""", [("spec.to[0].default.conf.tcp.maxConnectAttempt", "must be greater than 0")]),
    "empty back-offs": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      http: {backOff: {}, rateLimitedBackOff: {}}
      grpc: {backOff: {}, rateLimitedBackOff: {maxInterval: 0s, resetHeaders: []}}
""", [("spec.to[0].default.conf.http.backOff", "must not be empty"),
      ("spec.to[0].default.conf.http.rateLimitedBackOff.resetHeaders", "must be defined"),
      ("spec.to[0].default.conf.grpc.backOff", "must not be empty"),
      ("spec.to[0].default.conf.grpc.rateLimitedBackOff.maxInterval", "must be defined and greater than zero")]),
    "unknown http retryOn items": ("""
to:
  - targetRef: {kind: Mesh}
    default: {http: {retryOn: [WRONG_VALUE, 5XX, reset, DEADLINE_EXCEEDED, "123", "952", "+404"]}}
""", [("spec.to[0].default.conf.http.retryOn[0]", "unknown item 'WRONG_VALUE'"),
      ("spec.to[0].default.conf.http.retryOn[1]", "unknown item '5XX'"),
      ("spec.to[0].default.conf.http.retryOn[2]", "unknown item 'reset'"),
      ("spec.to[0].default.conf.http.retryOn[3]", "unknown item 'DEADLINE_EXCEEDED'"),
      ("spec.to[0].default.conf.http.retryOn[4]", "unknown item '123'"),
      ("spec.to[0].default.conf.http.retryOn[5]", "unknown item '952'")]),
    "host selection problems": ("""
to:
  - targetRef: {kind: Mesh}
    default:
      http:
        hostSelection:
          - predicate: OmitHostsWithTags
          - {predicate: OmitPreviousPriorities, updateFrequency: 0}
          - predicate: OmitPreviousHosts
          - {predicate: OmitPreviousPriorities, updateFrequency: 1}
""", [("spec.to[0].default.conf.http.hostSelection[0].tags", "must be defined"),
      ("spec.to[0].default.conf.http.hostSelection[1].updateFrequency", "must be defined and greater than zero"),
      ("spec.to[0].default.conf.http.hostSelection[3].predicate",
       "OmitPreviousPriorities must only be specified once")]),
    "MeshService under a top-level MeshGateway": ("""
targetRef: {kind: MeshGateway, name: gateway-1}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {tcp: {maxConnectAttempt: 5}}
""", [("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")]),
    "MeshService under a top-level MeshHTTPRoute": ("""
targetRef: {kind: MeshHTTPRoute, name: route-1}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {http: {retryOn: [5xx]}}
""", [("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mr, text) == expected


def test_schema_checks_grpc_retry_on_and_header_names(check):
    assert check(mr, """
to:
  - targetRef: {kind: Mesh}
    default:
      grpc: {retryOn: [reset]}
      http: {rateLimitedBackOff: {resetHeaders: [{name: "", format: UnixTimestamp}]}}
""") == [
        "spec.to[0].default.grpc.retryOn[0] in body should be one of "
        "[Canceled DeadlineExceeded Internal ResourceExhausted Unavailable]",
        "spec.to[0].default.http.rateLimitedBackOff.resetHeaders[0].name in body should be at least 1 chars long",
    ]


def test_schema_fills_in_the_update_frequency(check):
    spec = {"to": [{"targetRef": {"kind": "Mesh"},
                    "default": {"http": {"hostSelection": [{"predicate": "OmitPreviousPriorities"}]}}}]}
    problems: list[str] = []
    check_schema(mr.SPEC_SCHEMA, spec, "spec", problems)
    assert problems == [] and mr.validate(spec) == []
    assert spec["to"][0]["default"]["http"]["hostSelection"][0]["updateFrequency"] == 2


def test_mesh_defaults_are_kumas_and_valid():
    [(name, spec)] = mr.mesh_defaults("demo")
    assert name == "mesh-retry-all-demo"
    assert spec["to"][0]["default"]["http"] == {
        "numRetries": 5, "perTryTimeout": "16s", "backOff": {"baseInterval": "25ms", "maxInterval": "250ms"}}
    problems: list[str] = []
    check_schema(mr.SPEC_SCHEMA, spec, "spec", problems)
    assert problems == [] and mr.validate(spec) == []
