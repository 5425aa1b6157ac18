"""MeshService, MeshExternalService, Workload and MeshTrust: validation, REST JSON and warnings.

Inputs and expected messages are those of Kuma v2.14.3's validator tests
(pkg/core/resources/apis/<type>/api/v1alpha1/validator_test.go and testdata/).
Like Kuma's, the validation cases feed the spec to the validator without schema defaulting.
"""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.core.validation import Violations, check_schema

CERT = """-----BEGIN CERTIFICATE-----
MIIB9jCCAZ2gAwIBAgIUJ1gLZ/fvZhGq51qWrJzL6z2XWoQwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEChMHVGVzdCBDQTAeFw0yNTA3MzAxMjAwMDBaFw0zNTA3MjcxMjAw
MDBaMBIxEDAOBgNVBAoTB1Rlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQaXDFzOPslZ4e8n2KjsNkG+Wxi37L2zRWdMczDi7VqLrO03lczkB98/vzrdMKF
JgYxycULx10EYgMGQkgLrf1po2QwYjAdBgNVHQ4EFgQUUQBd5VjEO3N4XcgrxgMK
NU9xIQswHwYDVR0jBBgwFoAUUQBd5VjEO3N4XcgrxgMKNU9xIQswDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiA3dhhIQCzNkeGSjj6jK+jGE8fEKVmp
c9Vh+kJkmPUJZQIgQBr2GkV8uSfq/5ZKHD6jz6MJvKsg06dMBdvZBIA2ujg=
-----END CERTIFICATE-----
"""


def violations(type_name: str, spec: str) -> list[tuple[str, str]]:
    validate = registry.get(type_name).validate
    out = Violations()
    if validate:
        validate({"spec": yaml.safe_load(spec) or {}}, out)
    return [(v.field, v.reason) for v in out]


def schema_problems(type_name: str, spec: str) -> list[str]:
    problems: list[str] = []
    check_schema(registry.get(type_name).schema or {}, yaml.safe_load(spec) or {}, "spec", problems)
    return problems


def present(type_name: str, content: dict[str, Any], name: str = "svc",
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    registry.get(type_name).present(Resource(type_name, "default", name, content, labels or {}), out)
    return out


def warnings(type_name: str, spec: dict[str, Any], name: str, labels: dict[str, str] | None = None) -> list[str]:
    res = Resource(type_name, "default", name, {"spec": spec}, labels or {})
    return registry.get(type_name).warnings(res)


# --- the types are served --------------------------------------------------------------------------


@pytest.mark.parametrize("name,path,short", [
    ("MeshService", "meshservices", "msvc"), ("MeshExternalService", "meshexternalservices", "extsvc"),
    ("Workload", "workloads", "wl"), ("MeshTrust", "meshtrusts", "mtrust")])
def test_registered(name: str, path: str, short: str) -> None:
    rtype = registry.BY_PATH[path]
    assert (rtype.name, rtype.short_name, rtype.scope, rtype.wrapped, rtype.has_status) == (
        name, short, "Mesh", True, True)
    assert registry.BY_SHORT_NAME[short] is rtype


# --- MeshService -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "",
    "selector: {dataplaneTags: {app: redis}}",
    "selector: {dataplaneRef: {name: redis-01}}",
    "selector: {dataplaneLabels: {matchLabels: {app: redis}}}",
])
def test_mesh_service_valid(spec: str) -> None:
    assert violations("MeshService", spec) == []


def test_mesh_service_takes_one_selector() -> None:
    spec = "selector: {dataplaneTags: {app: redis}, dataplaneLabels: {matchLabels: {app: redis}}}"
    assert violations("MeshService", spec) == [
        ("spec.selector", "must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels")]


def test_mesh_service_schema_defaults_state_and_app_protocol() -> None:
    spec = {"ports": [{"port": 6379, "protocol": "tcp"}]}
    check_schema(registry.get("MeshService").schema, spec, "spec", [])
    assert spec == {"state": "Unavailable", "ports": [{"port": 6379, "protocol": "tcp", "appProtocol": "tcp"}]}
    assert schema_problems("MeshService", "state: Gone") == [
        "spec.state in body should be one of [Available Unavailable]"]


def test_mesh_service_as_kuma_writes_it() -> None:
    content = {"spec": {"selector": {"dataplaneTags": {"app": "redis"}},
                        "ports": [{"port": 8080, "name": "http", "protocol": "tcp"}, {"port": 6379.0}]},
               "status": {"vips": [{"ip": "10.0.0.1"}]}}
    out = present("MeshService", content, "redis", {"kuma.io/zone": "zone-1"})
    assert list(out) == ["snis", "spec", "status"]
    assert out["snis"] == [{"port": 6379, "sni": "sni.msvc.default.zone-1.redis.6379"},
                           {"port": 8080, "sni": "sni.msvc.default.zone-1.redis.http"}]
    assert out["spec"] == {"state": "Unavailable", "selector": {"dataplaneTags": {"app": "redis"}},
                           "ports": [{"name": "http", "port": 8080, "appProtocol": "tcp"},
                                     {"port": 6379, "appProtocol": "tcp"}]}
    assert out["status"] == {"vips": [{"ip": "10.0.0.1"}], "tls": {}, "dataplaneProxies": {}}


def test_mesh_service_without_labels_has_a_five_segment_sni() -> None:
    out = present("MeshService", {"spec": {"ports": [{"port": 6379}]}}, "redis-1")
    assert out["snis"] == [{"port": 6379, "sni": "sni.msvc.default.redis-1.6379"}]
    assert present("MeshService", {"spec": {}}, "empty") == {
        "spec": {"state": "Unavailable", "selector": {}}, "status": {"tls": {}, "dataplaneProxies": {}}}


def test_mesh_service_warns_about_names_kuma_deprecates() -> None:
    spec = {"ports": [{"port": 8081}, {"port": 80, "name": "HTTP"}]}
    assert warnings("MeshService", spec, "aa.a", {"kuma.io/zone": "default"}) == [
        "Invalid MeshService resource name: 'aa.a'. It does not conform to the DNS format (RFC 1035). This is "
        "deprecated. Errors: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
        "with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
        "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        'Invalid MeshService SNI (port "8081"): name "aa.a" does not conform to RFC 1123: must not contain dots. '
        "This is deprecated.",
        'Invalid MeshService SNI (port "HTTP"): name "aa.a" does not conform to RFC 1123: must not contain dots. '
        "This is deprecated.",
        'Invalid MeshService SNI (port "HTTP"): a lowercase RFC 1123 label must consist of lower case alphanumeric '
        "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?'). This is deprecated.",
    ]
    assert warnings("MeshService", spec | {"ports": [{"port": 8081}]}, "redis") == []


# --- MeshExternalService (testdata/*.input.yaml and *.output.yaml) -----------------------------------

MES_VALID = {
    "minimal-valid": "{match: {port: 80, protocol: http}, endpoints: [{address: 1.1.1.1, port: 12345}]}",
    "full-without-extension-valid": """
        match: {type: HostnameGenerator, port: 8080, protocol: http}
        endpoints: [{address: 1.1.1.1, port: 12345}, {address: example.com, port: 80}]
        tls:
          version: {min: TLS12, max: TLS13}
          allowRenegotiation: false
          verification:
            serverName: example.com
            subjectAltNames:
              - {type: Exact, value: example.com}
              - {type: Prefix, value: "spiffe://example.local/ns/local"}
            caCert: {inline: dGVzdA==}
            clientCert: {secret: "123"}
            clientKey: {secret: "123"}""",
    "endpoints-with-priority-valid": """
        match: {type: HostnameGenerator, port: 8080, protocol: http}
        endpoints: [{address: 1.1.1.1, port: 443, priority: 0}, {address: 2.2.2.2, port: 443, priority: 1}]""",
}

MES_INVALID = {
    "minimal-invalid": (
        "{match: {type: HostnameGenerator, port: 80, protocol: unknown}, "
        "endpoints: [{address: 1.1.1.1, port: 12345}]}",
        [("spec.match.protocol", '"protocol" must be one of ["tcp", "grpc", "http", "http2"]')]),
    "minimal-invalid-extension": (
        "{match: {type: HostnameGenerator, port: 80, protocol: http}, extension: {config: {example: true}}}",
        [("spec.extension.type", "must not be empty")]),
    "missing-client-cert-invalid": ("""
        match: {type: HostnameGenerator, port: 8080, protocol: http}
        endpoints: [{address: 1.1.1.1, port: 12345}]
        tls: {verification: {clientKey: {secret: "123"}}}""",
        [("spec.tls.verification.clientCert", "must be defined when clientKey is defined")]),
    "min-higher-than-max-invalid": ("""
        match: {type: HostnameGenerator, port: 80, protocol: http}
        endpoints: [{address: 1.1.1.1, port: 12345}]
        tls: {version: {min: TLS13, max: TLS12}}""",
        [("spec.tls.version.min", "min version must be lower than max")]),
    "full-invalid": ("""
        match: {type: UnknownMatchType, port: 0, protocol: unknown}
        endpoints:
          - address: 1.1.1.1
          - {address: 1.1.1.2, port: 999999}
          - address: example.com
          - port: 90
        tls:
          version: {min: TLS15, max: TLS16}
          verification:
            serverName: not[]valid
            mode: Unknown
            subjectAltNames: [{type: Regex, value: .*.example.com}]
            clientCert: {secret: "123"}""", [
        ("spec.match.type", "unrecognized type 'UnknownMatchType' - only 'HostnameGenerator' is supported"),
        ("spec.match.port", "port must be a valid (1-65535)"),
        ("spec.match.protocol", '"protocol" must be one of ["tcp", "grpc", "http", "http2"]'),
        ("spec.endpoints[0].port", "port must be a valid (1-65535)"),
        ("spec.endpoints[1].port", "port must be a valid (1-65535)"),
        ("spec.endpoints[2].port", "port must be a valid (1-65535)"),
        ("spec.endpoints[3].address", "address has to be a valid IP or hostname"),
        ("spec.tls.version.min", '"min" must be one of ["TLSAuto", "TLS10", "TLS11", "TLS12", "TLS13"]'),
        ("spec.tls.version.max", '"max" must be one of ["TLSAuto", "TLS10", "TLS11", "TLS12", "TLS13"]'),
        ("spec.tls.verification.serverName", "must be a valid DNS name"),
        ("spec.tls.verification.mode", '"mode" must be one of ["SkipSAN", "SkipCA", "SkipAll", "Secured"]'),
        ("spec.tls.verification.subjectAltNames[0].type", '"type" must be one of ["Prefix", "Exact"]'),
        ("spec.tls.verification.clientKey", "must be defined when clientCert is defined"),
    ]),
}


@pytest.mark.parametrize("spec", MES_VALID.values(), ids=MES_VALID.keys())
def test_mesh_external_service_valid(spec: str) -> None:
    assert violations("MeshExternalService", spec) == []
    assert schema_problems("MeshExternalService", spec) == []


@pytest.mark.parametrize("spec,expected", MES_INVALID.values(), ids=MES_INVALID.keys())
def test_mesh_external_service_invalid(spec: str, expected: list[tuple[str, str]]) -> None:
    assert violations("MeshExternalService", spec) == expected


def test_mesh_external_service_schema() -> None:
    assert schema_problems("MeshExternalService", "{endpoints: []}") == ["spec.match in body is required"]
    assert schema_problems("MeshExternalService", "{match: {port: 70000, protocol: udp}}") == [
        "spec.match.port in body should be less than or equal to 65535",
        "spec.match.protocol in body should be one of [tcp grpc http http2]"]


def test_mesh_external_service_as_kuma_writes_it() -> None:
    content = {"spec": {"match": {"port": 4242}, "endpoints": [{"address": "tcpbin.com", "port": 4242}],
                        "tls": {"verification": {}}}}
    out = present("MeshExternalService", content, "mes-tcp", {"kuma.io/zone": "default"})
    assert out == {
        "snis": [{"port": 4242, "sni": "sni.extsvc.default.default.mes-tcp.4242"}],
        "spec": {"match": {"type": "HostnameGenerator", "port": 4242, "protocol": "tcp"},
                 "endpoints": [{"address": "tcpbin.com", "port": 4242}],
                 "tls": {"enabled": False, "allowRenegotiation": False, "verification": {"mode": "Secured"}}},
        "status": {"vip": {}},
    }


def test_mesh_external_service_warnings() -> None:
    spec = {"match": {"port": 80, "protocol": "http"}}
    assert warnings("MeshExternalService", spec, "mes.http", {"kuma.io/zone": "default"})[1] == (
        'Invalid MeshExternalService SNI (port "80"): name "mes.http" does not conform to RFC 1123: '
        "must not contain dots. This is deprecated.")
    assert warnings("MeshExternalService", spec, "mes-http") == []


# --- Workload ----------------------------------------------------------------------------------------

def test_workload_spec_is_empty_and_status_counts_are_always_written() -> None:
    assert violations("Workload", "{anything: 1}") == []
    assert present("Workload", {"spec": {"anything": 1}, "status": {"dataplaneProxies": {"total": 3}}}) == {
        "spec": {}, "status": {"dataplaneProxies": {"connected": 0, "healthy": 0, "total": 3}}}
    assert present("Workload", {"spec": {}})["status"] == {"dataplaneProxies": {"connected": 0, "healthy": 0,
                                                                                 "total": 0}}


# --- MeshTrust (testdata/spec/full-{valid,invalid}) ---------------------------------------------------

def test_mesh_trust_valid() -> None:
    spec = yaml.safe_dump({"trustDomain": "default.zone-1.mesh.local",
                           "caBundles": [{"type": "Pem", "pem": {"value": CERT}}]})
    assert violations("MeshTrust", spec) == []
    assert schema_problems("MeshTrust", spec) == []


def test_mesh_trust_full_invalid() -> None:
    spec = yaml.safe_dump({"trustDomain": "default.zone-1.mesh.loca" + "l" * 240,
                           "caBundles": [{"type": "Pem", "pem": {"value": "adfadfafadf"}}, {"type": "Pem"}],
                           "origin": {"kri": "test"}})
    assert violations("MeshTrust", spec) == [
        ("spec.caBundles[0].pem.value", "provided certificate has incorrect format"),
        ("spec.caBundles[1].pem", "must be defined"),
        ("spec.trustDomain", "must not be longer than 253 characters"),
    ]


@pytest.mark.parametrize("spec,expected", [
    ("{trustDomain: '', caBundles: []}", [("spec.caBundles", "must not be empty"),
                                          ("spec.trustDomain", "trustDomain needs to be defined")]),
    ("{trustDomain: a.b, caBundles: [{type: Der}]}", [("spec.caBundles.type", "Der must be one of: Pem")]),
    ("{trustDomain: a.b, caBundles: [{type: Pem, pem: {value: \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n"
     "-----END PRIVATE KEY-----\"}}]}", [("spec.caBundles[0].pem.value", "provided certificate has incorrect format")]),
])
def test_mesh_trust_invalid(spec: str, expected: list[tuple[str, str]]) -> None:
    assert violations("MeshTrust", spec) == expected


def test_mesh_trust_schema() -> None:
    assert schema_problems("MeshTrust", "{}") == ["spec.caBundles in body is required",
                                                  "spec.trustDomain in body is required"]
    assert schema_problems("MeshTrust", "{trustDomain: a, caBundles: []}") == [
        "spec.caBundles in body should have at least 1 items"]


def test_mesh_trust_as_kuma_writes_it_and_warns_about_spec_origin() -> None:
    spec = {"trustDomain": "example.com", "caBundles": [{"type": "Pem", "pem": {"value": CERT}}],
            "origin": {"kri": "kri-test-value"}}
    out = present("MeshTrust", {"spec": spec, "status": {"origin": None}})
    assert list(out["spec"]) == ["origin", "trustDomain", "caBundles"]
    assert out["status"] == {}
    assert warnings("MeshTrust", spec, "trust-1") == ["setting spec.origin field is deprecated"]
    assert warnings("MeshTrust", {k: v for k, v in spec.items() if k != "origin"}, "trust-1") == []
