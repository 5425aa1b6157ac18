"""MeshTLS on generated resources: Kuma 2.14's shapes (plugin/v1alpha1 testdata) in goldens, and by behaviour:
the inbound's mTLS mode over the mesh's, TLS versions and ciphers on both sides of mesh mTLS."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from appliance.model import names
from appliance.model.proxy import ExternalService, Identity, Policy
from appliance.xds.generate import generate_sidecar
from appliance.xds.generate.consistency import check_consistency
from tests.unit.xds.golden import assert_golden, to_dict
from tests.unit.xds.scenarios import IDENTITY, db_proxy, default_policies, snapshot, web_proxy

KIND = "MeshTLS"
WEB_INBOUND = "inbound:10.0.0.1:8080"
DB_INBOUND = "inbound:10.0.0.4:5432"
TLS = common_pb2.TlsParameters
CIPHERS = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]


def meshtls(name: str, default: dict, top: dict | None = None) -> Policy:
    return Policy(KIND, name, {"targetRef": top or {"kind": "Mesh"}, "rules": [{"default": default}]})


def _generate(*extra: Policy, mtls: str | None = "STRICT", proxy=None, **changes) -> dict:
    snap = snapshot(mtls, policies=default_policies(extra=extra), **changes)
    resources = generate_sidecar(snap, proxy or web_proxy(), IDENTITY if mtls else None)
    check_consistency(resources)
    return resources


def _chains(resources: dict, listener: str = WEB_INBOUND) -> list[tuple[str, tuple[str, ...], bool]]:
    """Each filter chain as (transport protocol, ALPNs, terminates TLS)."""
    return [(c.filter_chain_match.transport_protocol, tuple(c.filter_chain_match.application_protocols),
             c.transport_socket.name == names.TLS_TRANSPORT_SOCKET)
            for c in resources[names.LISTENER][listener].filter_chains]


STRICT_CHAINS = [("", (), True)]
PERMISSIVE_CHAINS = [("raw_buffer", (), False), ("tls", (), False), ("tls", ("kuma",), True)]


def _inspectors(resources: dict, listener: str = WEB_INBOUND) -> list[str]:
    return [f.name for f in resources[names.LISTENER][listener].listener_filters]


def _downstream(resources: dict, listener: str = WEB_INBOUND) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    chain = [c for c in resources[names.LISTENER][listener].filter_chains if c.transport_socket.name][0]
    chain.transport_socket.typed_config.Unpack(context)
    return context


def _upstream(resources: dict, cluster: str) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    resources[names.CLUSTER][cluster].transport_socket.typed_config.Unpack(context)
    return context


def _golden(name: str, resources: dict) -> None:
    dumped = {"listeners": {n: to_dict(m) for n, m in sorted(resources[names.LISTENER].items())},
              "clusters": {n: to_dict(m) for n, m in sorted(resources[names.CLUSTER].items())}}
    assert_golden(name, yaml.safe_dump(dumped, sort_keys=True, width=120))


# --- mode ------------------------------------------------------------------------------------------

def test_permissive_on_a_strict_mesh_adds_plaintext_beside_mtls() -> None:
    """Kuma's permissive-with-strict-mtls: raw_buffer, foreign TLS and `kuma` ALPN chains, a TLS inspector."""
    assert _chains(_generate()) == STRICT_CHAINS
    resources = _generate(meshtls("permissive", {"mode": "Permissive"}))
    assert _chains(resources) == PERMISSIVE_CHAINS
    assert _inspectors(resources) == [names.TLS_INSPECTOR]
    _golden("meshtls-permissive-with-strict-mtls.yaml", resources)


def test_strict_on_a_permissive_mesh_takes_plaintext_away() -> None:
    """Kuma's strict-with-permissive-mtls: only the mTLS chain is left, and no inspector."""
    assert _chains(_generate(mtls="PERMISSIVE")) == PERMISSIVE_CHAINS
    resources = _generate(meshtls("strict", {"mode": "Strict"}), mtls="PERMISSIVE")
    assert _chains(resources) == STRICT_CHAINS
    assert _inspectors(resources) == []


def test_without_a_mode_the_mesh_decides() -> None:
    versions = meshtls("versions", {"tlsVersion": {"min": "TLS12", "max": "TLSAuto"}})
    for mtls, chains in (("PERMISSIVE", PERMISSIVE_CHAINS), ("STRICT", STRICT_CHAINS)):
        resources = _generate(versions, mtls=mtls)
        assert _chains(resources) == chains
        assert _downstream(resources).common_tls_context.tls_params.tls_minimum_protocol_version == TLS.TLSv1_2


def test_a_mode_for_one_inbound_leaves_the_others_alone() -> None:
    """A Dataplane targetRef with sectionName picks one inbound (by name or port)."""
    proxy = replace(web_proxy(), inbounds=web_proxy().inbounds + db_proxy().inbounds)
    only_db = meshtls("db-only", {"mode": "Permissive"}, {"kind": "Dataplane", "sectionName": "5432"})
    resources = _generate(only_db, proxy=proxy)
    assert _chains(resources, DB_INBOUND) == PERMISSIVE_CHAINS
    assert _chains(resources, WEB_INBOUND) == STRICT_CHAINS


def test_the_most_specific_policy_wins() -> None:
    mesh_wide = meshtls("mesh-wide", {"mode": "Strict"})
    on_web = meshtls("on-web", {"mode": "Permissive"}, {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}})
    assert _chains(_generate(mesh_wide, on_web)) == PERMISSIVE_CHAINS
    assert _chains(_generate(mesh_wide, on_web, mtls="PERMISSIVE")) == PERMISSIVE_CHAINS
    assert _chains(_generate(mesh_wide, mtls="PERMISSIVE")) == STRICT_CHAINS


def test_without_mesh_mtls_the_policy_does_nothing() -> None:
    """As Kuma: no mTLS, no MeshTLS (a Permissive cannot open what is already plaintext, a Strict cannot close it)."""
    plain = _generate(mtls=None)
    for default in ({"mode": "Strict"}, {"mode": "Permissive", "tlsVersion": {"min": "TLS13"}}):
        assert _generate(meshtls("p", default), mtls="PERMISSIVE") != _generate(mtls="PERMISSIVE")
        assert _generate(meshtls("p", default), mtls=None) == plain


def test_a_mode_comes_after_routes_and_before_permissions() -> None:
    """Kuma's order 300: MeshTrafficPermission (1100) then finds the chains of the mode and guards the mTLS one."""
    allow = Policy("MeshTrafficPermission", "allow", {"targetRef": {"kind": "Mesh"}, "from": [
        {"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]})
    resources = _generate(meshtls("permissive", {"mode": "Permissive"}), allow, proxy=db_proxy())
    filters = [[f.name for f in c.filters] for c in resources[names.LISTENER][DB_INBOUND].filter_chains]
    assert filters == [[names.TCP_PROXY_FILTER], [names.TCP_PROXY_FILTER],
                       [names.NETWORK_RBAC_FILTER, names.TCP_PROXY_FILTER]]


# --- versions and ciphers ------------------------------------------------------------------------

def test_versions_and_ciphers_on_both_sides_of_mesh_mtls() -> None:
    """Kuma's strict-with-permissive-mtls: the same TLS parameters on the inbound and on every mesh cluster."""
    resources = _generate(meshtls("tls", {"mode": "Strict", "tlsVersion": {"min": "TLS11", "max": "TLS12"},
                                          "tlsCiphers": CIPHERS}), mtls="PERMISSIVE")
    expected = TLS(tls_minimum_protocol_version=TLS.TLSv1_1, tls_maximum_protocol_version=TLS.TLSv1_2,
                   cipher_suites=CIPHERS)
    assert _downstream(resources).common_tls_context.tls_params == expected
    for cluster in ("backend", "db"):
        assert _upstream(resources, cluster).common_tls_context.tls_params == expected
    # the rest of the contexts stays the mesh's
    assert _downstream(resources).require_client_certificate.value
    assert list(_upstream(resources, "backend").common_tls_context.alpn_protocols) == ["kuma"]
    _golden("meshtls-versions-and-ciphers.yaml", resources)


def test_tls13_minimum_with_kumas_default_maximum() -> None:
    """`{min: TLS13}` is stored with `max: TLSAuto` (the schema's default). The server keeps Envoy's maximum
    (TLS 1.3); the client side says TLS 1.3, as Envoy's own client maximum (TLS 1.2) would refuse every
    handshake (Kuma 2.14 sends TLS_AUTO there and breaks mesh traffic)."""
    resources = _generate(meshtls("tls13", {"tlsVersion": {"min": "TLS13", "max": "TLSAuto"}}))
    assert _downstream(resources).common_tls_context.tls_params == TLS(
        tls_minimum_protocol_version=TLS.TLSv1_3, tls_maximum_protocol_version=TLS.TLS_AUTO)
    assert _upstream(resources, "backend").common_tls_context.tls_params == TLS(
        tls_minimum_protocol_version=TLS.TLSv1_3, tls_maximum_protocol_version=TLS.TLSv1_3)
    below = _generate(meshtls("tls12", {"tlsVersion": {"min": "TLS12", "max": "TLSAuto"}}))
    assert _upstream(below, "backend").common_tls_context.tls_params == TLS(
        tls_minimum_protocol_version=TLS.TLSv1_2, tls_maximum_protocol_version=TLS.TLS_AUTO)


def test_ciphers_alone_set_only_the_outbound_side() -> None:
    """Kuma sets inbound ciphers only together with a version (ServerSideMTLS), outbound ones always."""
    resources = _generate(meshtls("ciphers", {"tlsCiphers": CIPHERS}))
    assert not _downstream(resources).common_tls_context.HasField("tls_params")
    assert _upstream(resources, "backend").common_tls_context.tls_params == TLS(cipher_suites=CIPHERS)


def test_clusters_of_external_services_are_left_alone() -> None:
    """Through the zone egress an external service's cluster is mesh mTLS to the egress: Kuma skips it."""
    external = ExternalService("httpbin", "httpbin", "httpbin.org", 443, "http", {"kuma.io/service": "httpbin"}, None)
    proxy = replace(web_proxy(), outbounds=web_proxy().outbounds + (
        replace(web_proxy().outbounds[0], port=10003, service="httpbin"),))
    resources = _generate(meshtls("tls", {"tlsVersion": {"min": "TLS12", "max": "TLS13"}}), proxy=proxy,
                          external_services={"httpbin": external}, zone_egress=True)
    assert _upstream(resources, "backend").common_tls_context.HasField("tls_params")
    assert resources[names.CLUSTER]["httpbin"].transport_socket.name == names.TLS_TRANSPORT_SOCKET
    assert not _upstream(resources, "httpbin").common_tls_context.HasField("tls_params")


def test_shared_outbound_resources_follow_the_policy() -> None:
    """Outbounds are cached per snapshot revision across proxies: a proxy with other TLS parameters gets its own."""
    snap = snapshot("STRICT", policies=default_policies(extra=(
        meshtls("tls", {"tlsVersion": {"min": "TLS12", "max": "TLS13"}}, {"kind": "Mesh", "proxyTypes": ["Sidecar"]}),)))
    cache: dict = {}
    with_policy = generate_sidecar(snap, web_proxy(), IDENTITY, cache=cache)
    unselected = replace(web_proxy(), name="web-2", inbounds=())
    without = generate_sidecar(snap, unselected, IDENTITY, cache=cache)
    assert _upstream(with_policy, "backend").common_tls_context.HasField("tls_params")
    assert not _upstream(without, "backend").common_tls_context.HasField("tls_params")


# --- the real Envoy ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["Strict", "Permissive"])
def test_envoy_accepts_the_tls_settings(tmp_path: Path, mode: str) -> None:
    from tests.unit.xds.test_envoy_validate import _envoy_binary, _pem_chain, static_bootstrap
    ca_pem, cert_pem, key_pem = _pem_chain()
    snap = snapshot("STRICT", policies=default_policies(extra=(meshtls("tls", {
        "mode": mode, "tlsVersion": {"min": "TLS12", "max": "TLS13"}, "tlsCiphers": CIPHERS}),)))
    snap = replace(snap, mtls=replace(snap.mtls, ca_cert_pem=ca_pem))
    config = tmp_path / "envoy.json"
    resources = generate_sidecar(snap, web_proxy(), Identity(cert_pem, key_pem, 0.0))
    config.write_text(json_format.MessageToJson(static_bootstrap(resources)))
    assert config.read_text().count('"tlsMaximumProtocolVersion": "TLSv1_3"') == 3   # the inbound, backend, db
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
