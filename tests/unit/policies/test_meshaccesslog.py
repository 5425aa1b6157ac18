"""MeshAccessLog validation, cases taken from Kuma's validator tests (v2.14.3)."""
from __future__ import annotations

import time

import pytest

from appliance.policies.meshaccesslog import schema as mal
from appliance.policies.meshaccesslog._address import is_url

VALID = {
    "tcp and file backends": """
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - type: Tcp
          tcp:
            format: {type: Json, json: [{key: start_time, value: "%START_TIME%"}]}
            address: 127.0.0.1:5000
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default:
      backends:
        - type: File
          file: {format: {type: Plain, plain: '{"start_time": "%START_TIME%"}'}, path: /tmp/logs.txt}
""",
    "empty backend list to a MeshMultiZoneService": """
targetRef: {kind: Mesh}
to: [{targetRef: {kind: MeshMultiZoneService, name: web-backend}, default: {backends: []}}]
""",
    "openTelemetry by backendRef and by endpoint": """
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - type: OpenTelemetry
          openTelemetry:
            backendRef: {kind: MeshOpenTelemetryBackend, labels: {kuma.io/display-name: my-otel}}
        - type: OpenTelemetry
          openTelemetry:
            endpoint: otel-collector:4317
            attributes: [{key: kuma.mesh, value: "%KUMA_MESH%"}]
            body: {kvlistValue: {values: [{key: mesh, value: {stringValue: "%KUMA_MESH%"}}]}}
""",
    "rules on a Dataplane section": """
targetRef: {kind: Dataplane, sectionName: http}
rules:
  - matches: [{spiffeID: {type: Prefix, value: "spiffe://default"}}]
    default: {backends: [{type: File, file: {path: /dev/stdout}}]}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mal, text) == []


BACKENDS = "spec.from[0].default.backends"
INVALID = {
    "nothing to configure": ("targetRef: {kind: Mesh}",
                             [("spec", "at least one of 'from', 'to' or 'rules' has to be defined")]),
    "invalid file path and address": ("""
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - {type: File, file: {path: "#not_valid"}}
        - {type: Tcp, tcp: {address: not_valid_url}}
""", [(f"{BACKENDS}[0].file.path", "file backend requires a valid path"),
      (f"{BACKENDS}[1].tcp.address", "tcp backend requires valid address")]),
    "json format entries": ("""
targetRef: {kind: MeshService, name: web-frontend}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - type: File
          file:
            path: /tmp/logs.txt
            format: {type: Json, json: [{key: "", value: "%START_TIME%"}, {key: 'a"b', value: x}]}
        - {type: Tcp, tcp: {address: "http://logs.com", format: {type: Json, json: []}}}
""", [(f"{BACKENDS}[0].file.format.json[0].key", "key cannot be empty"),
      (f"{BACKENDS}[0].file.format.json[1]", "is not a valid JSON object"),
      (f"{BACKENDS}[1].tcp.format.json", "must not be empty")]),
    "default without backends": ("""
targetRef: {kind: Dataplane, sectionName: http}
to: [{targetRef: {kind: Mesh}, default: {}}]
""", [("spec.targetRef.sectionName", "can only be used with inbound policies"),
      ("spec.to[0].default.backends", "must be defined")]),
    "backends and formats without configuration": ("""
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - {type: File}
        - {type: Tcp, tcp: {address: "http://logs.com", format: {type: Plain}}}
        - {type: OpenTelemetry}
""", [(f"{BACKENDS}[0].file", "must be defined"),
      (f"{BACKENDS}[1].tcp.format.plain", "must be defined"),
      (f"{BACKENDS}[2].openTelemetry", "must be defined")]),
    "openTelemetry endpoint and backendRef": ("""
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - {type: OpenTelemetry, openTelemetry: {}}
        - {type: OpenTelemetry, openTelemetry: {endpoint: "otel:4317", backendRef: {kind: MeshOpenTelemetryBackend}}}
        - {type: OpenTelemetry, openTelemetry: {backendRef: {kind: MeshOpenTelemetryBackend}}}
        - {type: OpenTelemetry, openTelemetry: {endpoint: "http://otel:4317/v1"}}
""", [(f"{BACKENDS}[0].openTelemetry", "openTelemetry must have exactly one defined: endpoint, backendRef"),
      (f"{BACKENDS}[1].openTelemetry", "openTelemetry must have only one type defined: endpoint, backendRef"),
      (f"{BACKENDS}[2].openTelemetry.backendRef", "backendRef must have exactly one defined: labels"),
      (f"{BACKENDS}[3].openTelemetry.endpoint", "must be in host:port format, not a URL")]),
    "openTelemetry attribute names": ("""
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - type: OpenTelemetry
          openTelemetry:
            endpoint: otel-collector:4317
            attributes: [{key: "%KUMA_ZONE%", value: x}, {key: otel.attribute, value: x}]
""", [(f"{BACKENDS}[0].openTelemetry.attributes[0].key",
       "must be a static OpenTelemetry attribute name; placeholders are only supported in values"),
      (f"{BACKENDS}[0].openTelemetry.attributes[1].key", "must not use the reserved OpenTelemetry prefix 'otel.'")]),
    "MeshService under a MeshGateway": ("""
targetRef: {kind: MeshGateway, name: edge-gateway}
to:
  - targetRef: {kind: MeshService, name: web-backend}
    default: {backends: [{type: File, file: {path: /tmp/logs.txt}}]}
""", [("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mal, text) == expected


def test_validator_explains_an_attribute_key_with_spaces():
    # The schema's pattern rejects this first in Kuma; the validator has its own message for it.
    spec = {"from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "OpenTelemetry",
            "openTelemetry": {"endpoint": "otel:4317", "attributes": [{"key": "my attribute", "value": "x"}]}}]}}]}
    assert mal.validate(spec) == [(
        f"{BACKENDS}[0].openTelemetry.attributes[0].key",
        "must start with a lowercase letter, use only lowercase letters, digits, '.' or '_', avoid consecutive "
        "delimiters, and end with a letter or digit")]


@pytest.mark.parametrize("address, valid", [
    ("127.0.0.1:5000", True), ("google.com", True), ("http://logs.com", True), ("tcp://logstash.svc:5000", True),
    ("[::1]:514", True), ("localhost:9000", True), ("not_valid_url", False), ("logs.com:port", False),
    (".logs.com", False), ("a" * 3000, False),
])
def test_tcp_addresses(address, valid):
    assert is_url(address) is valid


def test_tcp_address_check_is_fast_on_hostile_input():
    start = time.monotonic()
    is_url("aa-" * 690 + ".!")
    assert time.monotonic() - start < 1


def test_deprecations_of_inline_otel_endpoint():
    spec = {"rules": [{"default": {"backends": [{"type": "OpenTelemetry",
                                                 "openTelemetry": {"endpoint": "otel:4317"}}]}}]}
    assert mal.deprecations(spec) == ["openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a "
                                      "MeshOpenTelemetryBackend resource instead"]
