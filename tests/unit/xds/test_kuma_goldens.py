"""Our resources against the Envoy config Kuma 2.14 itself generates (../shared/kuma-2.14/envoy-golden).

Those goldens come from Kuma's generator tests, some before its policy plugins ran, so each test
compares what both sides produce at the same stage.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

from appliance.model import names
from appliance.xds.generate import PLUGINS, generate_sidecar, load_assignment_for, outbound_resources
from appliance.xds.generate.listeners import inbound_listener
from appliance.model.proxy import Identity, MeshSnapshot, Mtls
from tests.support import kuma_reference
from tests.unit.xds.scenarios import KUMA_INBOUND_PROXY_3, endpoint, snapshot, web_proxy

GOLDEN = kuma_reference("envoy-golden")


PROFILE_SOURCE_1 = "generator__testdata__profile-source__1-envoy-config.golden.yaml"
INBOUND_PROXY_3 = "generator__testdata__inbound-proxy__3-envoy-config.golden.yaml"


def _kuma(file: str, type_url: str, name: str) -> Message:
    """One resource of a Kuma golden file, as a message (the others may use filters we never import)."""
    path = GOLDEN / file
    for item in yaml.safe_load(path.read_text())["resources"]:
        body = dict(item["resource"])
        if body.pop("@type") == type_url and item["name"] == name:
            message = symbol_database.Default().GetSymbol(type_url.split("/", 1)[1])()
            return json_format.ParseDict(body, message)
    raise AssertionError(f"{file} has no {type_url} {name!r}")


def _assert_same(ours: Message, kuma: Message) -> None:
    assert json_format.MessageToDict(ours) == json_format.MessageToDict(kuma)


PROFILE_SOURCE = MeshSnapshot(
    mesh="demo", revision=1, mtls=Mtls("ca-1", "STRICT", b"CA"),
    endpoints={"db": (endpoint("192.168.0.3", 5432, "db", "db-1", role="master"),),
               "elastic": (endpoint("192.168.0.4", 9200, "elastic", "elastic-1"),)},
    protocols={"db": "tcp", "elastic": "tcp"}, policies={})


def test_secrets_match_kuma() -> None:
    resources = generate_sidecar(PROFILE_SOURCE, web_proxy(mesh="demo", outbounds=()), Identity(b"CERT", b"KEY", 0))
    for name in (names.identity_secret("demo"), names.mesh_ca_secret("demo")):
        _assert_same(resources[names.SECRET][name], _kuma(PROFILE_SOURCE_1, names.SECRET, name))


@pytest.mark.parametrize("service", ["db", "elastic"])
def test_load_assignments_match_kuma(service: str) -> None:
    _assert_same(load_assignment_for(PROFILE_SOURCE, service), _kuma(PROFILE_SOURCE_1, names.ENDPOINT, service))


def test_outbound_mtls_cluster_matches_kuma() -> None:
    """Without MeshTimeout/MeshCircuitBreaker policies the plugins still set Kuma's defaults (5s, trackRemaining)."""
    proxy = web_proxy(mesh="demo")
    matched = tuple(plugin.match(PROFILE_SOURCE, proxy) for plugin in PLUGINS)
    outbound = next(o for o in proxy.outbounds if o.service == "db")
    ours = outbound_resources(PROFILE_SOURCE, outbound, proxy, matched)[names.CLUSTER]["db"]
    _assert_same(ours, _kuma(PROFILE_SOURCE_1, names.CLUSTER, "db"))


@pytest.mark.parametrize("listener", ["inbound:192.168.0.1:443", "inbound:192.168.0.2:443"])
def test_tcp_inbound_with_mtls_and_no_permission_matches_kuma(listener: str) -> None:
    """Default-deny RBAC, the mesh-default inbound idle timeout (2h) and the mTLS context, byte for byte."""
    resources = generate_sidecar(snapshot("STRICT"), KUMA_INBOUND_PROXY_3, None)
    _assert_same(resources[names.LISTENER][listener], _kuma(INBOUND_PROXY_3, names.LISTENER, listener))


def test_local_tcp_cluster_matches_kuma() -> None:
    ours = generate_sidecar(snapshot("STRICT"), KUMA_INBOUND_PROXY_3, None)[names.CLUSTER]["localhost:8443"]
    ours.ClearField("circuit_breakers")  # Kuma's generator test runs without the MeshCircuitBreaker plugin
    _assert_same(ours, _kuma(INBOUND_PROXY_3, names.CLUSTER, "localhost:8443"))


def test_http_inbound_before_policies_matches_kuma() -> None:
    """The base HTTP inbound (before MeshTimeout and MeshTrafficPermission) is Kuma's, XFCC included."""
    expected = _kuma(INBOUND_PROXY_3, names.LISTENER, "inbound:192.168.0.2:80")
    inbound = KUMA_INBOUND_PROXY_3.inbounds[2]
    ours = inbound_listener(inbound, snapshot("STRICT"), KUMA_INBOUND_PROXY_3)
    for listener in (ours, expected):
        chain = listener.filter_chains[0]
        kept = [f for f in chain.filters if f.name != names.NETWORK_RBAC_FILTER]  # Kuma's legacy TrafficPermission
        del chain.filters[:]
        chain.filters.extend(kept)
        hcm = _unpack_hcm(chain)
        hcm.ClearField("internal_address_config")  # Kuma's test uses made-up internal CIDRs
        chain.filters[0].typed_config.Pack(hcm)
    _assert_same(ours, expected)


def _unpack_hcm(chain: Message) -> Message:
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)  # type: ignore[attr-defined]
    return hcm


def test_reuse_port_stays_off_even_when_offered() -> None:
    # deliberately unlike Kuma: with SO_REUSEPORT a replaced listener keeps receiving connections
    # while it drains, so a permission change would apply to only some of them for 30 s
    proxy = replace(KUMA_INBOUND_PROXY_3, features=frozenset({"feature-reuse-port"}))
    listener = generate_sidecar(snapshot("STRICT"), proxy, None)[names.LISTENER]["inbound:192.168.0.1:443"]
    assert listener.enable_reuse_port.value is False
