"""MeshPassthrough validation, cases from Kuma's tests (v2.14.3 api/v1alpha1/testdata)."""
from __future__ import annotations

import yaml

from appliance import policies
from appliance.policies.meshpassthrough import schema as mp

VALID = """
targetRef: {kind: Mesh}
default:
  passthroughMode: Matched
  appendMatch:
  - {type: IP, value: 192.168.1.1, port: 8000, protocol: tcp}
  - {type: Domain, value: example.com, protocol: tls}
  - {type: CIDR, value: 1.2.3.4/24, port: 9900, protocol: tcp}
  - {type: Domain, value: example.com, port: 9999, protocol: http}
  - {type: Domain, value: '*.example.com', port: 9090, protocol: http}
  - {type: IP, value: 172.1.1.1, port: 3306, protocol: mysql}
"""
INVALID = """
targetRef: {kind: Mesh}
default:
  appendMatch:
  - {type: test, value: 1.2.3.4, port: 0, protocol: "1"}
  - {type: Domain, value: 1.2.3.4, port: 1, protocol: tcp}
  - {type: IP, value: example.com, port: 1, protocol: tls}
  - {type: Domain, value: example.com, port: 999, protocol: tcp}
  - {type: CIDR, value: 1.2.3.4, port: 999, protocol: tcp}
  - {type: Domain, value: example.com, port: 8080, protocol: http}
  - {type: Domain, value: example.com, port: 8080, protocol: http2}
  - {type: Domain, value: "*w.example.com", port: 9090, protocol: http2}
  - {type: Domain, value: google.com, port: 10000, protocol: http}
  - {type: Domain, value: google.com, port: 10000, protocol: http}
  - {type: Domain, value: "*.example.com", protocol: http}
  - {type: Domain, value: mysql.server.com, port: 3306, protocol: mysql}
  - {type: IP, value: 172.1.1.1, protocol: mysql}
  - {type: Domain, value: "*.hello@world", port: 443, protocol: tls}
"""
M = "spec.default.appendMatch"
KUMA_VIOLATIONS = [
    (f"{M}[0].port", "port must be a valid (1-65535)"),
    (f"{M}[0].protocol", '"protocol" must be one of ["tcp", "tls", "grpc", "http", "http2", "mysql"]'),
    (f"{M}[0].type", "provided type test is not supported, one of Domain, IP, or CIDR is supported"),
    (f"{M}[1].protocol", "protocol tcp is not supported for a domain"),
    (f"{M}[1].value", "provided DNS has incorrect value"),
    (f"{M}[2].value", "provided IP has incorrect value"),
    (f"{M}[3].protocol", "protocol tcp is not supported for a domain"),
    (f"{M}[4].value", "provided CIDR has incorrect value"),
    (f"{M}[6].port", "using the same port in multiple matches requires the same protocol for the following "
                     "protocols: [grpc http http2]"),
    (f"{M}[7].value", "provided DNS has incorrect value, partial wildcard is currently not supported"),
    (f"{M}[9].value", "value google.com is already defiend for this port and protocol"),
    (f"{M}[10].port", "wildcard domains doesn't work for all ports and layer 7 protocol"),
    (f"{M}[11].protocol", "protocol mysql is not supported for a domain"),
    (f"{M}[12].port", "port must be defined for Mysql protocol"),
    (f"{M}[13].value", "provided DNS has incorrect value"),
]


def test_kumas_valid_example_passes(check) -> None:
    assert check(mp, VALID) == []


def test_kumas_invalid_example_gives_kumas_violations() -> None:
    # the validator alone: the schema would refuse the unknown type and protocol first
    assert mp.validate(yaml.safe_load(INVALID)) == KUMA_VIOLATIONS


def test_top_level_target_kinds(check) -> None:
    assert check(mp, "targetRef: {kind: MeshService, name: web}\ndefault: {passthroughMode: All}") != []
    assert check(mp, "targetRef: {kind: Dataplane, name: web-1}\ndefault: {passthroughMode: None}") == []


def test_a_write_has_no_warning() -> None:
    assert policies.not_applied(mp, yaml.safe_load(VALID)) == []
