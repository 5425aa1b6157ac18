"""Mesh validation against the cases of Kuma v2.14.3's mesh_validator_test.go, plus the CA backend
checks Kuma's mesh manager runs (the builtin and provided plugins; what needs the store is in test_provided_ca).
"""
from __future__ import annotations

import json

import pytest

from tests.support import kuma_reference
from appliance.core.resources import mesh

EVERYTHING = """
    mtls:
      enabledBackend: builtin-1
      backends:
        - name: builtin-1
          type: builtin
          dpCert: {rotation: {expiration: 2y}, requestTimeout: 10s}
          conf: {caCert: {RSAbits: 2048, expiration: 10y}}
    logging:
      defaultBackend: tcp-1
      backends:
        - {name: file-1, type: file, conf: {path: /path/to/file}}
        - {name: file-2, format: '%START_TIME% %KUMA_SOURCE_SERVICE%', type: file, conf: {path: /path/to/file2}}
        - {name: tcp-1, type: tcp, conf: {address: kibana:1234}}
    tracing:
      defaultBackend: zipkin-us
      backends:
        - name: zipkin-us
          sampling: 80.0
          type: zipkin
          conf: {url: http://zipkin.local:9411/v2/spans, traceId128bit: true, apiVersion: httpProto}
        - {name: dd, type: datadog, conf: {address: 127.0.0.1, port: 8126}}
    metrics:
      enabledBackend: prom-1
      backends:
        - name: prom-1
          type: prometheus
          conf:
            port: 5670
            path: /metrics
            envoy: {filterRegex: '^server[0-9]+', usedOnly: true}
            aggregate:
              - {name: application, port: 1234, path: /stats}
              - {name: sidecar, port: 12345, path: /stats/sidecar}
            tls: {mode: providedTLS}
    constraints:
      dataplaneProxy:
        requirements: [{tags: {k8s.kuma.io/namespace: ns-1, kuma.io/zone: east}}]
        restrictions: [{tags: {k8s.kuma.io/namespace: ns-1, kuma.io/zone: '*'}}]
    routing: {zoneEgress: true, localityAwareLoadBalancing: true}
    networking: {outbound: {passthrough: false}}
    meshServices: {mode: Exclusive}
    skipCreatingInitialPolicies: ['*']
"""

VALID = {
    "every section filled in": EVERYTHING,
    "an empty mesh": "{}",
    "skipMTLS false with no tls mode": """
        metrics:
          backends: [{name: p, type: prometheus, conf: {skipMTLS: false}}]""",
    "skipValidation skips the CA config checks": """
        mtls:
          skipValidation: true
          backends: [{name: ca-1, type: builtin, conf: {caCert: {RSAbits: big}}}]""",
}

INVALID = {
    "two CA backends of the same name": ("""
        mtls:
          enabledBackend: backend-1
          backends: [{name: backend-1, type: builtin}, {name: backend-1, type: builtin}]""",
        [("mtls.backends[1].name", '"backend-1" name is already used for another backend')]),
    "enabledBackend naming no backend": ("""
        mtls:
          enabledBackend: backend-2
          backends: [{name: backend-1, type: builtin}]""",
        [("mtls.enabledBackend", "has to be set to one of the backends in the mesh")]),
    "a dpCert rotation that is no duration": ("""
        mtls:
          enabledBackend: backend-3
          backends: [{name: backend-3, type: builtin, dpCert: {rotation: {expiration: 2e}}}]""",
        [("mtls.dpcert.rotation.expiration", "has to be a valid format")]),
    "a logging backend without a name": ("""
        logging:
          backends: [{name: null, type: tcp, conf: {address: kibana:1234}}]""",
        [("logging.backends[0].name", "cannot be empty")]),
    "two logging backends of the same name": ("""
        logging:
          defaultBackend: backend-1
          backends:
            - {name: backend-1, type: tcp, conf: {address: kibana:1234}}
            - {name: backend-1, type: file, conf: {path: /path/to/file}}""",
        [("logging.backends[1].name", '"backend-1" name is already used for another backend')]),
    "a tcp logging address that is not HOST:PORT": ("""
        logging:
          backends: [{name: backend-1, type: tcp, conf: {address: 'wrong-format:234:234'}}]""",
        [("logging.backends[0].config.address", "has to be in format of HOST:PORT")]),
    "a file logging backend without a path": ("""
        logging:
          backends: [{name: backend-1, type: file, conf: {path: null}}]""",
        [("logging.backends[0].config.path", "cannot be empty")]),
    "a default logging backend that does not exist": ("""
        logging:
          defaultBackend: non-existing-backend
          backends: [{name: backend-1, type: file, conf: {path: /path}}]""",
        [("logging.defaultBackend", "has to be set to one of the logging backend in mesh")]),
    "tracing sampling over 100": ("""
        tracing:
          backends:
            - name: zipkin-us
              sampling: 100.1
              type: zipkin
              conf: {url: 'http://zipkin-us.local:9411/v2/spans'}""",
        [("tracing.backends[0].sampling", "has to be in [0.0 - 100.0] range")]),
    "zipkin URLs: missing, invalid, without port": ("""
        tracing:
          backends:
            - {name: a, type: zipkin, conf: {url: ""}}
            - {name: b, type: zipkin, conf: {url: invalid-url}}
            - {name: c, type: zipkin, conf: {url: 'http://zipkin-us.local/v2/spans'}}
            - {name: d, type: zipkin, conf: {url: 'http://zipkin-us.local:9411/v2/spans', apiVersion: invalid}}""",
        [("tracing.backends[0].config.url", "cannot be empty"),
         ("tracing.backends[1].config.url", "invalid URL"),
         ("tracing.backends[2].config.url", "port has to be explicitly specified"),
         ("tracing.backends[3].config.apiVersion",
          "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto")]),
    "a default tracing backend that does not exist": ("""
        tracing:
          defaultBackend: non-existent
          backends: [{name: zipkin-us, type: zipkin, conf: {url: 'http://zipkin.local:9411/v2/spans'}}]""",
        [("tracing.defaultBackend", "has to be set to one of the tracing backend in mesh")]),
    "metrics backends: duplicate name, unknown enabled backend": ("""
        metrics:
          enabledBackend: backend-2
          backends: [{name: backend-1, type: prometheus}, {name: backend-1, type: prometheus}]""",
        [("metrics.backends[1].name", '"backend-1" name is already used for another backend'),
         ("metrics.enabledBackend", "has to be set to one of the backends in the mesh")]),
    "unknown backend types in every section": ("""
        metrics: {backends: [{name: backend-1, type: xxx}]}
        logging: {backends: [{name: backend-1, type: xxx}]}
        tracing: {backends: [{name: backend-1, type: xxx}]}""",
        [("logging.backends[0].type", 'unknown backend type. Available backends: "tcp", "file"'),
         ("tracing.backends[0].type", 'unknown backend type. Available backends: "zipkin", "datadog"'),
         ("metrics.backends[0].type", 'unknown backend type. Available backends: "prometheus"')]),
    "dataplane proxy constraints with bad tags": ("""
        constraints:
          dataplaneProxy:
            requirements: [{}, {tags: {'': ''}}, {tags: {'!@#$': '!@#$'}}]""",
        [("constraints.dataplaneProxy.requirements[0].tags", "must have at least one tag"),
         ("constraints.dataplaneProxy.requirements[1].tags", "tag name must be non-empty"),
         ('constraints.dataplaneProxy.requirements[1].tags[""]', "tag value must be non-empty"),
         ('constraints.dataplaneProxy.requirements[2].tags["!@#$"]',
          "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"),
         ('constraints.dataplaneProxy.requirements[2].tags["!@#$"]',
          'tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be "*"')]),
    "many logging errors at once": ("""
        mtls: {enabledBackend: invalid-backend}
        logging:
          defaultBackend: invalid-backend
          backends:
            - {name: null, type: file, conf: {path: /path}}
            - {name: tcp-1, type: file, conf: {address: invalid-address}}
            - {name: tcp-1, type: tcp, path: {address: null}}""",
        [("mtls.enabledBackend", "has to be set to one of the backends in the mesh"),
         ("logging.backends[0].name", "cannot be empty"),
         ("logging.backends[1].config.path", "cannot be empty"),
         ("logging.backends[2].config.address", "cannot be empty"),
         ("logging.backends[2].name", '"tcp-1" name is already used for another backend'),
         ("logging.defaultBackend", "has to be set to one of the logging backend in mesh")]),
    "zone egress without mTLS": ("routing: {zoneEgress: true}",
                                 [("mtls", "has to be set when zoneEgress enabled")]),
    "zone egress with a backend but none enabled": ("""
        mtls: {backends: [{name: backend-1, type: builtin}]}
        routing: {zoneEgress: true}""",
        [("mtls", "has to be set when zoneEgress enabled")]),
    "duplicate prometheus aggregates": ("""
        metrics:
          backends:
            - name: backend-1
              type: prometheus
              conf:
                aggregate: [{name: app, path: /stats/, port: 123}, {name: app, path: /stats}, {name: sidecar},
                            {name: sidecar}]""",
        [("metrics.backends[0].conf.aggregate[1].name", "duplicate entry: app, values have to be unique"),
         ("metrics.backends[0].conf.aggregate[3].name", "duplicate entry: sidecar, values have to be unique")]),
    "skipMTLS disagreeing with the tls mode": ("""
        metrics:
          backends:
            - {name: a, type: prometheus, conf: {skipMTLS: true, tls: {mode: providedTLS}}}
            - {name: b, type: prometheus, conf: {skipMTLS: false, tls: {mode: disabled}}}
            - {name: c, type: prometheus, conf: {skipMTLS: true, tls: {mode: activeMTLSBackend}}}
            - {name: d, type: prometheus, conf: {skipMTLS: true, tls: {mode: disabled}}}""",
        [("metrics.backends[0].conf", "skipMTLS and tls configuration cannot be defined together"),
         ("metrics.backends[1].conf", "skipMTLS and tls configuration cannot be defined together"),
         ("metrics.backends[2].conf", "skipMTLS and tls configuration cannot be defined together")]),
    "a config of the wrong type": ("""
        logging: {backends: [{name: a, type: file, conf: {path: 5}}]}
        metrics: {backends: [{name: p, type: prometheus, conf: {port: -1}}]}""",
        [("logging.backends[0].config",
          "could not parse config: json: cannot unmarshal number into Go value of type string"),
         ("metrics.backends[0].conf",
          "could not parse config: json: cannot unmarshal number -1 into Go value of type uint32")]),
    "a filter regex Go cannot compile": ("""
        metrics:
          backends: [{name: p, type: prometheus, conf: {envoy: {filterRegex: '(server'}}}]""",
        [("metrics.backends[0].conf.envoy.filterRegex",
          "provided regexp isn't correct: error parsing regexp: missing closing ): `(server`")]),
    "a CA plugin that is not installed": ("""
        mtls: {enabledBackend: v, backends: [{name: v, type: vault}]}""",
        [("mtls.backends[0].type", "could not find installed plugin for this type")]),
    "a builtin CA whose name is no DNS name": ("""
        mtls: {backends: [{name: My_CA!, type: builtin, conf: {caCert: {RSAbits: big}}}]}""",
        [("mtls.backends[0].conf", "could not convert backend config: invalid character 'b' looking for "
                                   "beginning of value"),
         ("mtls.backends[0].conf.mtls.backends.name", '"My_CA!" name must be valid dns name')]),
    "a provided CA without its key": ("""
        mtls:
          enabledBackend: ca-1
          backends: [{name: ca-1, type: provided, conf: {cert: {inlineString: cert}}}]""",
        [("mtls.backends[0].conf.key", "has to be defined")]),
    "a provided CA with an empty source": ("""
        mtls:
          backends: [{name: ca-1, type: provided, conf: {cert: {secret: ""}, key: {}}}]""",
        [("mtls.backends[0].conf.cert.secret", "cannot be empty"),
         ("mtls.backends[0].conf.key", "data source has to be chosen. Available sources: secret, file, inline")]),
    "a provided CA read from a file of the control plane's host": ("""
        mtls:
          skipValidation: true
          backends: [{name: ca-1, type: provided, conf: {cert: {file: /etc/ca.pem}, key: {file: /etc/ca.key}}}]""",
        [("mtls.backends[0].conf.cert.file", "a file data source is not supported here: the control plane does "
                                            "not read files for proxies; use secret, inline or inlineString"),
         ("mtls.backends[0].conf.key.file", "a file data source is not supported here: the control plane does "
                                           "not read files for proxies; use secret, inline or inlineString")]),
    "CA plugin checks wait until the rest is valid": ("""
        mtls: {enabledBackend: x, backends: [{name: v, type: vault}]}""",
        [("mtls.enabledBackend", "has to be set to one of the backends in the mesh")]),
    "a request timeout Go cannot parse": ("""
        mtls: {backends: [{name: ca, type: builtin, dpCert: {requestTimeout: 10 s}}]}""",
        [("mtls.backends[0].dpCert.requestTimeout", 'bad Duration: time: unknown unit " s" in duration "10 s"')]),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_accepts(check, body: str) -> None:
    assert check(mesh, body) == []


@pytest.mark.parametrize("body, expected", INVALID.values(), ids=INVALID.keys())
def test_rejects(check, body: str, expected: list[tuple[str, str]]) -> None:
    assert check(mesh, body) == expected


@pytest.mark.parametrize("step", ["02", "03", "04"])
def test_put_meshes_fixture_bodies_are_valid(check, step: str) -> None:
    body = json.loads((kuma_reference("api-fixtures") / f"put_meshes_{step}.request.json").read_text())
    assert check(mesh, body) == []


def test_shape_rejects_an_unknown_enum_value() -> None:
    from appliance.core.validation import check_schema

    errors: list[str] = []
    check_schema(mesh.SHAPE, {"meshServices": {"mode": "Sometimes"}, "mtls": {"backends": "x"}}, "", errors)
    assert errors == [
        "meshServices.mode in body should be one of [Disabled Everywhere ReachableBackends Exclusive]",
        'mtls.backends in body must be of type array: "string"']


def test_keeps_the_name_warning() -> None:
    assert mesh.warnings("default") == []
    assert mesh.warnings("aa.a")[0].startswith("Invalid Mesh resource name: 'aa.a'.")


def test_mesh_services_modes_are_applied_without_a_warning() -> None:
    for mode in ("Disabled", "Everywhere", "ReachableBackends", "Exclusive"):
        assert mesh.warnings("default", {"meshServices": {"mode": mode}}) == []
