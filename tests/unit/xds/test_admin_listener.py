"""The `kuma:envoy:admin` listener (xds/generate/admin.py) and the Envoy admin CA (ca/envoy_admin.py)."""
from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from appliance.ca import envoy_admin
from appliance.model import names
from appliance.xds.bootstrap import BootstrapParams, render
from appliance.xds.generate.admin import NAME, AdminEndpoint, admin_endpoint, admin_resources

CA = envoy_admin.new_ca()


def _resources(address: str = "10.0.0.5", admin: AdminEndpoint = AdminEndpoint(9901)) -> dict:
    cert, key = envoy_admin.issue_server_cert(CA, address)
    return admin_resources(address, admin, cert, key, CA.cert_pem)


def test_the_listener_takes_only_mtls_from_the_control_plane_and_only_three_views() -> None:
    listener = _resources()[names.LISTENER][NAME]
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == ("10.0.0.5", 9901)
    [chain] = listener.filter_chains      # no plaintext chain: a plaintext client matches nothing
    assert chain.filter_chain_match.transport_protocol == "tls"
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    validation = context.common_tls_context.validation_context
    assert validation.trusted_ca.inline_bytes == CA.cert_pem
    assert [(m.san_type, m.matcher.exact) for m in validation.match_typed_subject_alt_names] == [(2, "kuma-cp")]
    assert [c.name for c in context.common_tls_context.tls_certificate_sds_secret_configs] == [NAME]
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    [host] = hcm.route_config.virtual_hosts
    assert [(r.match.path, r.match.headers[0].string_match.exact, r.route.cluster) for r in host.routes] == [
        ("/config_dump", "GET", NAME), ("/stats", "GET", NAME), ("/clusters", "GET", NAME)]


def test_the_cluster_forwards_to_envoys_admin_socket_or_port() -> None:
    over_socket = _resources(admin=AdminEndpoint(9901, socket_path="/run/dp/envoy-admin.sock"))[names.CLUSTER][NAME]
    address = over_socket.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.pipe.path == "/run/dp/envoy-admin.sock"
    over_tcp = _resources(admin=AdminEndpoint(19901))[names.CLUSTER][NAME]
    socket = over_tcp.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("127.0.0.1", 19901)


def test_the_server_certificate_names_the_proxys_address_and_travels_by_sds() -> None:
    secret = _resources("10.0.0.5")[names.SECRET][NAME]
    cert = x509.load_pem_x509_certificate(secret.tls_certificate.certificate_chain.inline_bytes)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert cert.issuer == x509.load_pem_x509_certificate(CA.cert_pem).subject


def test_no_listener_for_a_proxy_at_the_admin_address() -> None:
    assert _resources("127.0.0.1") == {}


@pytest.mark.parametrize("metadata, expected", [
    ({"dataplane.admin.port": "9901", "dataplane.admin.address": "127.0.0.1"}, AdminEndpoint(9901)),
    ({"dataplane.admin.port": "9901", "dataplane.admin.socketPath": "/w/envoy-admin.sock"},
     AdminEndpoint(9901, "127.0.0.1", "/w/envoy-admin.sock")),
    ({"dataplane.admin.port": "9901", "dataplane.admin.address": "::"}, AdminEndpoint(9901, "::1")),
    ({"dataplane.admin.port": "9901", "dataplane.admin.address": "10.1.1.1"}, None),   # not forwarded elsewhere
    ({"dataplane.admin.port": "70000"}, None),
    ({"dataplane.admin.port": "x"}, None),
    ({}, None),
])
def test_the_admin_endpoint_a_proxy_announces(metadata: dict, expected: AdminEndpoint | None) -> None:
    assert admin_endpoint(metadata) == expected


def test_the_bootstrap_announces_the_admin_api() -> None:
    import base64
    import yaml
    params = BootstrapParams(xds_host="cp", xds_port=5678, ca_pem=b"", delta=False)
    piped = yaml.safe_load(base64.b64decode(render({"workdir": "/w"}, "default", "web-1", "web", params, None)
                                            ["bootstrap"]))
    assert admin_endpoint(piped["node"]["metadata"]) == AdminEndpoint(9901, "127.0.0.1", "/w/envoy-admin.sock")
    tcp = yaml.safe_load(base64.b64decode(render({}, "default", "web-1", "web", params, 19901)["bootstrap"]))
    assert admin_endpoint(tcp["node"]["metadata"]) == AdminEndpoint(19901)


def test_the_ca_secret_round_trips_and_refuses_a_foreign_key() -> None:
    assert envoy_admin.from_secret_data(envoy_admin.secret_data(CA)) == CA
    other = envoy_admin.new_ca()
    with pytest.raises(ValueError, match="does not belong"):
        envoy_admin.from_secret_data(envoy_admin.secret_data(envoy_admin.EnvoyAdminCa(CA.cert_pem, other.key_pem)))


def test_the_client_certificate_carries_the_control_planes_san() -> None:
    cert, _ = envoy_admin.issue_client_cert(CA)
    sans = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["kuma-cp"]
