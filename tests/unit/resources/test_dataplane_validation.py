"""Dataplane validation against the cases of Kuma v2.14.3's dataplane_validator_test.go.

Inputs and expected messages are Kuma's; each case says what the rule is about.
"""
from __future__ import annotations

import json

import pytest

from tests.support import kuma_reference
from appliance.core.resources import dataplane

VALID = {
    "inbound and outbound with service tags": """
        networking:
          address: 192.168.0.1
          inbound:
            - port: 8080
              tags: {kuma.io/service: backend, version: "1"}
          outbound:
            - port: 3333
              tags: {kuma.io/service: redis}""",
    "IPv6 addresses everywhere": """
        networking:
          address: 0:0:0:0:0:FFFF:C0A8:0001
          inbound:
            - port: 8080
              servicePort: 7777
              address: ::1
              tags: {kuma.io/service: backend}
          outbound:
            - port: 3333
              address: ::1
              tags: {kuma.io/service: redis}""",
    "a domain name as the address": """
        networking:
          address: example.com
          inbound:
            - {port: 8080, tags: {kuma.io/service: backend}}""",
    "a delegated gateway with tags and outbounds": """
        networking:
          address: 192.168.0.1
          gateway:
            tags: {kuma.io/service: backend, kuma.io/valid: abc.0123-789.under_score:90}
          outbound:
            - {port: 3333, tags: {kuma.io/service: redis}}""",
    "probes with absolute paths": """
        networking:
          address: 192.168.0.1
          inbound:
            - {port: 8080, tags: {kuma.io/service: backend}}
        probes:
          port: 9000
          endpoints:
            - {inboundPort: 8088, inboundPath: /healthz, path: /8080/healthz}""",
    "a service probe": """
        networking:
          address: 192.168.0.1
          inbound:
            - port: 8080
              serviceProbe: {interval: 1s, unhealthyThreshold: 5, tcp: {}}
              tags: {kuma.io/service: backend}""",
    "admin port equal to an inbound port on another interface": """
        networking:
          address: 192.168.0.1
          admin: {port: 8080}
          inbound:
            - {port: 8080, servicePort: 7777, address: 192.168.0.1, tags: {kuma.io/service: backend}}
          outbound:
            - {port: 3333, address: 192.168.0.1, tags: {kuma.io/service: redis}}""",
    "prometheus metrics with unique aggregates": """
        networking:
          address: 192.168.0.1
          inbound:
            - {port: 8080, tags: {kuma.io/service: backend}}
        metrics:
          type: prometheus
          conf:
            aggregate:
              - {name: app, port: 123, path: /stats}
              - {name: sidecar, port: 999, path: /metrics}""",
    "outbounds by backendRef, MeshExternalService needs no port": """
        networking:
          address: 192.168.0.1
          outbound:
            - port: 3333
              backendRef: {kind: MeshService, name: xyz, port: 80}
            - port: 3334
              backendRef: {kind: MeshExternalService, name: xyz}
            - port: 3335
              backendRef: {kind: MeshService, labels: {kuma.io/display-name: redis}, port: 8080}""",
    "reachable backends by name, namespace or labels": """
        networking:
          address: 192.168.0.1
          transparentProxying:
            reachableBackends:
              refs:
                - {kind: MeshService, name: a, port: 9090}
                - {kind: MeshExternalService, name: es, namespace: es1}
                - {kind: MeshService, labels: {kuma.io/test: abc}}""",
    "transparent proxy without inbounds": """
        networking:
          address: 192.168.0.1
          transparentProxying: {redirectPortInbound: 15006, redirectPortOutbound: 15001}""",
    "inbound without tags (inbound tags disabled)": """
        networking:
          address: 192.168.0.1
          inbound:
            - port: 8080""",
    "delegated gateway with empty tags": """
        networking:
          address: 192.168.0.1
          gateway: {type: DELEGATED, tags: {}}""",
    "service address differs from the inbound by port": """
        networking:
          address: 192.168.0.1
          inbound:
            - {port: 10001, address: 192.168.0.2, serviceAddress: 192.168.0.2, servicePort: 10002,
               tags: {kuma.io/service: backend}}""",
    "zone proxy listeners on distinct ports": """
        networking:
          address: 192.168.0.1
          listeners:
            - {type: ZoneIngress, address: 192.168.0.1, port: 10001, name: zi-a}
            - {type: ZoneIngress, address: 192.168.0.1, port: 10003}""",
    "unknown fields are ignored, as jsonpb does for Kuma": """
        kri: kri_dp_default___dp-1_
        networking:
          address: 192.168.0.1
          somethingNew: true
          inbound:
            - {port: 8080, tags: {kuma.io/service: backend}}""",
}

INVALID = {
    "no networking at all": ("{}", [("networking", "must be defined")]),
    "networking set to null is no networking": ("networking: null", [("networking", "must be defined")]),
    "empty networking needs an address": ("networking: {}", [("networking.address", "address can't be empty")]),
    "the wildcard address": ("""
        networking:
          address: 0.0.0.0
          inbound: [{port: 8080, tags: {kuma.io/service: backend}}]""",
        [("networking.address", "must not be 0.0.0.0 or ::")]),
    "an address that is neither IP nor domain": ("""
        networking:
          address: ..>_<..
          inbound: [{port: 8080, tags: {kuma.io/service: backend}}]""",
        [("networking.address", "address has to be valid IP address or domain name")]),
    "a delegated gateway with inbounds": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 8080, servicePort: 7777, tags: {kuma.io/service: backend}}]
          gateway: {tags: {kuma.io/service: kong}}""",
        [("networking.inbound", "inbound cannot be defined for delegated gateways")]),
    "a builtin gateway with outbounds": ("""
        networking:
          address: 192.168.0.1
          gateway: {type: BUILTIN, tags: {kuma.io/service: kong}}
          outbound: [{port: 3333, tags: {kuma.io/service: kong}}]""",
        [("networking.outbound", "outbound cannot be defined for builtin gateways")]),
    "a builtin gateway with listeners and probes": ("""
        networking:
          address: 192.168.0.1
          gateway: {type: BUILTIN, tags: {kuma.io/service: kong}}
          listeners: [{type: ZoneEgress, address: 192.168.0.1, port: 10002, name: ze-port}]
        probes:
          port: 0
          endpoints: [{inboundPort: 8088, inboundPath: /healthz, path: /8080/healthz}]""",
        [("networking.listeners", "listeners cannot be defined for builtin gateways"),
         ("networking.probes", "probes cannot be defined for builtin gateways")]),
    "a builtin gateway whose tags lack the service": ("""
        networking:
          address: 192.168.0.1
          gateway: {type: BUILTIN, tags: {foo: bar}}""",
        [("networking.gateway.tags", 'mandatory tag "kuma.io/service" is missing')]),
    "a gateway speaking http": ("""
        networking:
          address: 192.168.0.1
          gateway: {tags: {kuma.io/service: backend, kuma.io/protocol: http}}""",
        [('networking.gateway.tags["kuma.io/protocol"]',
          'other values than tcp are not allowed, provided value "http"')]),
    "inbound ports missing or out of range": ("""
        networking:
          address: 192.168.0.1
          inbound:
            - tags: {kuma.io/service: backend}
            - {port: 65536, tags: {kuma.io/service: sub-backend}}
            - {port: 1234, servicePort: 65536, tags: {kuma.io/service: backend}}""",
        [("networking.inbound[0].port", "port must be in the range [1, 65535]"),
         ("networking.inbound[1].port", "port must be in the range [1, 65535]"),
         ("networking.inbound[2].servicePort", "port must be in the range [1, 65535]")]),
    "an inbound address that is not an IP": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 1234, address: invalid-address, tags: {kuma.io/service: backend}}]""",
        [("networking.inbound[0].address", "address has to be valid IP address")]),
    "inbound tags without the service tag": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 1234, tags: {version: v1}}]""",
        [('networking.inbound[0].tags["kuma.io/service"]', "tag has to exist")]),
    "an empty (null) tag value": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 1234, tags: {kuma.io/service: backend, version: null}}]""",
        [('networking.inbound[0].tags["version"]', "tag value must be non-empty")]),
    "an empty protocol tag": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 1234, tags: {kuma.io/service: backend, kuma.io/protocol: ""}}]""",
        [('networking.inbound[0].tags["kuma.io/protocol"]',
          'tag "kuma.io/protocol" has an invalid value "". Allowed values: grpc, http, http2, kafka, tcp'),
         ('networking.inbound[0].tags["kuma.io/protocol"]', "tag value must be non-empty")]),
    "tag name and value with forbidden characters": ("""
        networking:
          address: 192.168.0.1
          inbound:
            - port: 1234
              tags: {kuma.io/service: backend, inv@lidT/gN%me: value, invalidTagValue: inv@lid+t@g}""",
        [('networking.inbound[0].tags["inv@lidT/gN%me"]',
          "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"),
         ('networking.inbound[0].tags["invalidTagValue"]',
          "tag value must consist of alphanumeric characters, dots, dashes and underscores")]),
    "a service address equal to the dataplane address and port": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 10001, serviceAddress: 192.168.0.1, tags: {kuma.io/service: backend}}]""",
        [("networking.inbound[0].serviceAddress",
          "serviceAddress and servicePort has to differ from address and port")]),
    "a service address that is not an IP": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 10001, serviceAddress: INVALID, tags: {kuma.io/service: backend}}]""",
        [("networking.inbound[0].serviceAddress", "serviceAddress has to be valid IP address")]),
    "outbounds without a service": ("""
        networking:
          address: 192.168.0.1
          outbound:
            - port: 3333
            - {port: 3334, tags: {version: v1}}""",
        [("networking.outbound[0].tags", 'mandatory tag "kuma.io/service" is missing'),
         ("networking.outbound[1].tags", 'mandatory tag "kuma.io/service" is missing')]),
    "outbound ports and addresses": ("""
        networking:
          address: 192.168.0.1
          outbound:
            - tags: {kuma.io/service: redis}
            - {port: 65536, address: invalid, tags: {kuma.io/service: elastic}}""",
        [("networking.outbound[0].port", "port must be in the range [1, 65535]"),
         ("networking.outbound[1].port", "port must be in the range [1, 65535]"),
         ("networking.outbound[1].address", "address has to be valid IP address")]),
    "an empty backendRef": ("""
        networking:
          address: 192.168.0.1
          outbound: [{port: 3333, backendRef: {}}]""",
        [("networking.outbound[0].backendRef.kind",
          "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService"),
         ("networking.outbound[0].backendRef", "either 'name' or 'labels' should be specified"),
         ("networking.outbound[0].backendRef.port", "port must be in the range [1, 65535]")]),
    "backendRef together with tags": ("""
        networking:
          address: 192.168.0.1
          outbound:
            - {port: 3333, tags: {kuma.io/service: xyz}, backendRef: {kind: MeshService, name: xyz, port: 8080}}
            - {port: 3334, tags: {service: xyz}, backendRef: {kind: MeshService, name: xyz}}""",
        [("networking.outbound[0].backendRef", "both backendRef and tags/service cannot be defined"),
         ("networking.outbound[1].backendRef.port", "port must be in the range [1, 65535]"),
         ("networking.outbound[1].backendRef", "both backendRef and tags/service cannot be defined")]),
    "admin port taken by an inbound on loopback": ("""
        networking:
          address: 192.168.0.1
          admin: {port: 8080}
          inbound: [{port: 8080, servicePort: 7777, address: 127.0.0.1, tags: {kuma.io/service: backend}}]""",
        [("networking.admin.port", "must differ from inbound")]),
    "admin port taken by an outbound": ("""
        networking:
          address: 192.168.0.1
          admin: {port: 3333}
          inbound: [{port: 8080, servicePort: 7777, address: 127.0.0.1, tags: {kuma.io/service: backend}}]
          outbound: [{port: 3333, address: 127.0.0.1, tags: {kuma.io/service: redis}}]""",
        [("networking.admin.port", "must differ from outbound")]),
    "probe ports and paths": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 8080, tags: {kuma.io/service: backend}}]
        probes:
          port: 0
          endpoints:
            - {inboundPort: 8088, inboundPath: /healthz, path: /8080/healthz}
            - {inboundPort: 99999999, inboundPath: healthz, path: 8080/healthz}
            - {inboundPort: 1000, inboundPath: null, path: null}""",
        [("probes.port", "port must be in the range [1, 65535]"),
         ("probes.endpoints[1].inboundPort", "port must be in the range [1, 65535]"),
         ("probes.endpoints[1].inboundPath", "should be a valid URL Path"),
         ("probes.endpoints[1].path", "should be a valid URL Path"),
         ("probes.endpoints[2].inboundPath", "should be a valid URL Path"),
         ("probes.endpoints[2].path", "should be a valid URL Path")]),
    "a service probe with zero interval and threshold": ("""
        networking:
          address: 192.168.0.1
          inbound:
            - port: 8080
              serviceProbe: {timeout: 1s, interval: "0", healthyThreshold: 5, unhealthyThreshold: 0, tcp: {}}
              tags: {kuma.io/service: backend}""",
        [("networking.inbound[0].serviceProbe.interval", "must have a positive value"),
         ("networking.inbound[0].serviceProbe.unhealthyThreshold", "must have a positive value")]),
    "duplicate prometheus aggregates": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 8080, tags: {kuma.io/service: backend}}]
        metrics:
          type: prometheus
          conf:
            aggregate:
              - {name: app, port: 123, path: /stats}
              - {name: app, port: 999, path: /metrics}
              - {name: duplicate-app, port: 12366, path: /duplicate}
              - {name: duplicate-app, port: 12345, path: /other}""",
        [("metrics.conf.aggregate[1].name", "duplicate entry: app, values have to be unique"),
         ("metrics.conf.aggregate[3].name", "duplicate entry: duplicate-app, values have to be unique")]),
    "an unknown metrics backend": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 8080, tags: {kuma.io/service: backend}}]
        metrics: {type: custom-backend}""",
        [("metrics.type", 'unknown backend type. Available backends: "prometheus"')]),
    "reachable backends, every way wrong": ("""
        networking:
          address: 192.168.0.1
          transparentProxying:
            reachableBackends:
              refs:
                - {kind: Something, name: first, labels: {kuma.io/test: test}}
                - {kind: MeshService, name: second, namespace: not-valid, labels: {kuma.io/test: test}}
                - {kind: MeshService, name: first$-.kuma}
                - {kind: MeshService}
                - {kind: MeshService, namespace: xyz}""",
        [("networking.transparentProxing.reachableBackends.refs[0].kind",
          "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService"),
         ("networking.transparentProxing.reachableBackends.refs[0].labels",
          "labels cannot be defined when name is specified"),
         ("networking.transparentProxing.reachableBackends.refs[1].labels",
          "labels cannot be defined when name is specified"),
         ("networking.transparentProxing.reachableBackends.refs[2].name",
          "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
          "characters, '-' or '.', and must start and end with an alphanumeric character"),
         ("networking.transparentProxing.reachableBackends.refs[3].name", "name or labels are required"),
         ("networking.transparentProxing.reachableBackends.refs[4].name",
          "name is required, when namespace is defined")]),
    "listener clashes": ("""
        networking:
          address: 192.168.0.1
          inbound: [{port: 8080, name: http, tags: {kuma.io/service: backend}}]
          listeners:
            - {type: ZoneIngress, address: 192.168.0.1, port: 10001, name: http}
            - {type: ZoneEgress, address: 192.168.0.1, port: 10001, name: ze-main}
            - {address: 192.168.0.1, port: 8080}
            - {type: ZoneIngress, port: 0}""",
        [("networking.listeners[0].name", 'name "http" must be unique across inbounds and listeners'),
         ("networking.listeners[1]", "address:port 192.168.0.1:10001 is used by listeners of different types"),
         ("networking.listeners[2].type", "type must be ZoneIngress or ZoneEgress"),
         ("networking.listeners[2]", "address:port 192.168.0.1:8080 collides with an inbound listener"),
         ("networking.listeners[3].address", "address can't be empty"),
         ("networking.listeners[3].port", "port must be in the range [1, 65535]")]),
    "a service probe interval Go cannot parse stops everything else": ("""
        networking:
          address: 0.0.0.0
          inbound: [{port: 8080, serviceProbe: {interval: 5 seconds}, tags: {kuma.io/service: backend}}]""",
        [("networking.inbound[0].serviceProbe.interval", 'bad Duration: time: unknown unit " seconds" in duration "5 seconds"')]),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_accepts(check, body: str) -> None:
    assert check(dataplane, body) == []


@pytest.mark.parametrize("body, expected", INVALID.values(), ids=INVALID.keys())
def test_rejects(check, body: str, expected: list[tuple[str, str]]) -> None:
    assert check(dataplane, body) == expected


@pytest.mark.parametrize("step, status", [("00", 201), ("04", 400), ("09", 201)])
def test_matches_kuma_rest_fixtures(check, step: str, status: int) -> None:
    """put_dataplanes: the spec-related steps (the others are about meta, checked elsewhere)."""
    fixtures = kuma_reference("api-fixtures")
    body = json.loads((fixtures / f"put_dataplanes_{step}.request.json").read_text())
    golden = json.loads((fixtures / f"put_dataplanes_{step}.golden.json").read_text())
    expected = [(p["field"], p["reason"]) for p in golden.get("invalid_parameters", [])]
    assert check(dataplane, body) == expected
    assert bool(expected) == (status == 400)


def test_workload_label_fixture_bodies_have_a_valid_spec(check) -> None:
    """The kuma.io/workload label is judged elsewhere; the spec of those requests is fine."""
    fixtures = kuma_reference("api-fixtures")
    for step in ("00", "01", "02"):
        body = json.loads((fixtures / f"workload_label_validation_{step}.request.json").read_text())
        assert check(dataplane, body) == []


def test_shape_rejects_wrong_types() -> None:
    from appliance.core.validation import check_schema

    errors: list[str] = []
    check_schema(dataplane.SHAPE, {"networking": {"inbound": [{"port": "x", "tags": {"a": 1}}]}}, "", errors)
    assert errors == ['networking.inbound[0].port in body must be of type integer: "string"',
                      'networking.inbound[0].tags.a in body must be of type string: "number"']


def test_reachable_backends_other_than_meshservices_and_meshexternalservices_are_answered_with_a_warning() -> None:
    tp = {"redirectPortInbound": 15006, "redirectPortOutbound": 15001,
          "reachableBackends": {"refs": [{"kind": "MeshService", "name": "backend"},
                                         {"kind": "MeshExternalService", "name": "httpbin"}]}}
    content = {"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
                              "transparentProxying": tp}}
    assert dataplane.warnings(content) == []     # they pick the proxy's MeshService and MeshExternalService outbounds
    tp["reachableBackends"]["refs"].append({"kind": "MeshMultiZoneService", "name": "backend"})
    [warning] = dataplane.warnings(content)
    assert warning.startswith("networking.transparentProxying.reachableBackends: refs of a kind other than")


def test_meshservice_backend_refs_without_a_port_are_answered_with_a_warning() -> None:
    def outbound(ref: dict) -> dict:
        return {"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
                               "outbound": [{"port": 10001, "backendRef": {"kind": "MeshService", **ref}}]}}
    assert dataplane.warnings(outbound({"name": "backend", "port": 8080})) == []
    [warning] = dataplane.warnings(outbound({"name": "backend"}))
    assert warning.startswith("networking.outbound[0].backendRef: a MeshService by labels or without a port")
