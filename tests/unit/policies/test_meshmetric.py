"""MeshMetric validation, cases taken from Kuma's validator tests (v2.14.3), and what a write warns about."""
from __future__ import annotations

import pytest
import yaml

from appliance import policies
from appliance.core.validation import check_schema
from appliance.policies.meshmetric import schema as mm

VALID = {
    "full spec": """
targetRef: {kind: MeshService, name: svc-1}
default:
  sidecar:
    profiles:
      appendProfiles: [{name: None}, {name: Basic}]
      exclude: [{type: Regex, match: "my_match.*"}]
      include: [{type: Prefix, match: "my_match"}]
    includeUnused: true
  applications:
    - path: "metrics/prometheus"
      port: 8888
    - port: 8000
  backends:
    - type: Prometheus
      prometheus: {clientId: main-backend, port: 5670, path: /metrics, tls: {mode: ProvidedTLS}}
    - type: OpenTelemetry
      openTelemetry: {endpoint: "otel-collector:4778"}
""",
    "openTelemetry with backendRef": """
targetRef: {kind: MeshService, name: svc-1}
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        backendRef: {kind: MeshOpenTelemetryBackend, labels: {kuma.io/display-name: my-otel}}
""",
    "prometheus with defaults": """
default:
  backends: [{type: Prometheus, prometheus: {}}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mm, text) == []


BACKEND = "spec.default.backends.backend[0]"
INVALID = {
    "missing Prometheus config": ("default: {backends: [{type: Prometheus}]}",
                                  [(f"{BACKEND}.prometheus", "must be defined")]),
    "invalid port for prometheus listener": ("default: {backends: [{type: Prometheus, prometheus: {port: 95599}}]}",
                                             [(f"{BACKEND}.port", "port must be a valid (1-65535)")]),
    "invalid port for application": ("default: {applications: [{port: 0}]}",
                                     [("spec.default.applications.application[0]", "port must be a valid (1-65535)")]),
    "invalid regex": ("default: {sidecar: {profiles: {exclude: [{type: Regex, match: '())(!?'}]}}}",
                      [("spec.default.sidecar.profiles.exclude[0].match", "invalid regex")]),
    "endpoint not host:port": ("default: {backends: [{type: OpenTelemetry, openTelemetry: {endpoint: collector}}]}",
                               [(f"{BACKEND}.openTelemetry.endpoint", "must be in host:port format")]),
    "endpoint a URL": ("default: {backends: [{type: OpenTelemetry, openTelemetry: {endpoint: 'http://c:4317'}}]}",
                       [(f"{BACKEND}.openTelemetry.endpoint", "must be in host:port format, not a URL")]),
    "neither endpoint nor backendRef": ("default: {backends: [{type: OpenTelemetry, openTelemetry: {}}]}",
                                        [(f"{BACKEND}.openTelemetry",
                                          "openTelemetry must have exactly one defined: endpoint, backendRef")]),
    "both endpoint and backendRef": ("""
default:
  backends:
    - type: OpenTelemetry
      openTelemetry: {endpoint: "c:4317", backendRef: {kind: MeshOpenTelemetryBackend, labels: {a: b}}}
""", [(f"{BACKEND}.openTelemetry", "openTelemetry must have only one type defined: endpoint, backendRef")]),
    "missing openTelemetry": ("default: {backends: [{type: OpenTelemetry}]}",
                              [(f"{BACKEND}.openTelemetry", "must be defined")]),
    "targetRef kind": ("targetRef: {kind: MeshHTTPRoute, name: r}",
                       [("spec.targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
}


@pytest.mark.parametrize("text,expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mm, text) == expected


def test_unknown_profile_and_selector_type_are_refused_by_the_schema(check):
    assert check(mm, "default: {sidecar: {profiles: {appendProfiles: [{name: not_supported}]}}}")
    assert check(mm, "default: {sidecar: {profiles: {include: [{type: not_supported, match: x}]}}}")


def test_defaults_are_kumas():
    spec = yaml.safe_load("default: {applications: [{port: 80}], backends: [{type: Prometheus, prometheus: {}}]}")
    check_schema(mm.SPEC_SCHEMA, spec, "spec", [])
    assert spec["default"]["backends"][0]["prometheus"] == {"path": "/metrics", "port": 5670}
    assert spec["default"]["applications"][0]["path"] == "/metrics"


def test_a_write_warns_about_what_is_not_applied():
    otel = {"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "c:4317"}}]}}
    assert policies.not_applied(mm, otel) == []
    assert mm.deprecations(otel)[0].startswith("openTelemetry.endpoint is deprecated")
    ref = {"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {
        "backendRef": {"kind": "MeshOpenTelemetryBackend", "labels": {"a": "b"}}}}]}}
    assert policies.not_applied(mm, ref) == [
        "'spec.default.backends[0].openTelemetry.backendRef' is stored but not yet applied to proxies by this "
        "control plane (it has no MeshOpenTelemetryBackend): use openTelemetry.endpoint"]
    mtls = {"default": {"backends": [{"type": "Prometheus", "prometheus": {"tls": {"mode": "ActiveMTLSBackend"}}}]}}
    assert policies.not_applied(mm, mtls) == [
        "'spec.default.backends[0].prometheus.tls.mode' ActiveMTLSBackend is stored but not applied: the proxy "
        "serves no Prometheus endpoint for this backend (use ProvidedTLS or Disabled)"]
    assert policies.not_applied(mm, {"default": {"backends": [{"type": "Prometheus", "prometheus": {}}]}}) == []
