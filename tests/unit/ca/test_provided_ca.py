"""A provided CA (Kuma's `type: provided`): what the mesh manager checks against the store before the Mesh
is written (400 naming the field, Kuma's messages), which Secrets it then holds on to, and the workload
certificates it signs."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from appliance.ca import builtin, provided
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.core.validation import ValidationError
from appliance.model.proxy import MeshSnapshot
from appliance.store.sqlite import SQLiteStore
from appliance.xds.identity import IdentityProvider
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

CONF = {"cert": {"secret": "my-ca-cert"}, "key": {"secret": "my-ca-key"}}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ResourceManager]:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    yield manager
    store.close()


def _secret(manager: ResourceManager, name: str, data: bytes) -> None:
    manager.create(Resource("Secret", "default", name, {"data": base64.b64encode(data).decode()}))


def _enable(manager: ResourceManager, conf: dict, **mtls: object) -> None:
    mesh = manager.get("Mesh", "", "default")
    manager.update(Resource("Mesh", "", "default", {"mtls": {
        "enabledBackend": "mine", "backends": [{"name": "mine", "type": "provided", "conf": conf}], **mtls}}),
        mesh.version)


def _violations(manager: ResourceManager, conf: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        _enable(manager, conf)
    assert manager.get("Mesh", "", "default").content.get("mtls") is None   # nothing written
    return [(v.field, v.reason) for v in e.value.violations]


def test_missing_secrets_are_refused_naming_both_fields(manager: ResourceManager) -> None:
    reason = 'could not load data: resource not found: type="Secret" name="my-ca-key" mesh="default"'
    assert _violations(manager, CONF) == [("mtls.backends[0].conf.cert", reason),
                                          ("mtls.backends[0].conf.key", reason)]


def test_skip_validation_accepts_them_as_kuma_does(manager: ResourceManager) -> None:
    _enable(manager, CONF, skipValidation=True)
    snapshot = build_snapshot(manager.store, "default", manager.store.revision())
    assert snapshot is not None and snapshot.mtls is None and snapshot.mtls_error   # fails closed


def test_a_certificate_that_is_not_a_ca_is_refused(manager: ResourceManager, mesh_ca: tuple[bytes, bytes]) -> None:
    cert, key, _ = builtin.issue_workload_cert(*mesh_ca, "default", ["web"], {})
    _secret(manager, "my-ca-cert", cert)
    _secret(manager, "my-ca-key", key)
    assert _violations(manager, CONF) == [
        ("mtls.backends[0].conf.cert[0]", "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic "
                                          "Constraints)"),
        ("mtls.backends[0].conf.cert[0]", "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key "
                                          "Usage)"),
        ("mtls.backends[0].conf.cert[0]", "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: "
                                          "Appendix A. X.509 Field Reference)")]


def test_a_key_that_is_not_the_certificates_is_refused(manager: ResourceManager,
                                                       mesh_ca: tuple[bytes, bytes]) -> None:
    _secret(manager, "my-ca-cert", mesh_ca[0])
    _secret(manager, "my-ca-key", builtin.new_root_ca("default", "other", 1024)[1])
    assert _violations(manager, CONF) == [
        ("mtls.backends[0].conf.cert", "not a valid TLS key pair: tls: private key does not match public key")]
    assert _violations(manager, {"cert": {"inlineString": "not a certificate"}, "key": CONF["key"]}) == [
        ("mtls.backends[0].conf.cert", "not a valid TLS key pair: tls: failed to find any PEM data in certificate "
                                       "input")]


def test_a_provided_ca_signs_the_workload_certificates(manager: ResourceManager, mesh_ca: tuple[bytes, bytes]) -> None:
    _secret(manager, "my-ca-cert", mesh_ca[0])
    _secret(manager, "my-ca-key", mesh_ca[1])
    _enable(manager, {**CONF, "cert": {"inline": base64.b64encode(mesh_ca[0]).decode()}})
    snapshot = build_snapshot(manager.store, "default", manager.store.revision())
    assert isinstance(snapshot, MeshSnapshot) and snapshot.mtls is not None and snapshot.mtls.ca_cert_pem == mesh_ca[0]
    web = proxy_from_dataplane(Resource("Dataplane", "default", "web-1", {"networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}))
    identity = IdentityProvider(manager.store).get(snapshot, web)
    assert identity is not None
    cert = x509.load_pem_x509_certificate(identity.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(mesh_ca[0]))
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "spiffe://default/web" in uris.get_values_for_type(x509.UniformResourceIdentifier)
    # the Secrets it reads cannot be deleted while the Mesh names them (the inline cert is no Secret)
    with pytest.raises(ValidationError, match="currently in use in Mesh"):
        manager.delete("Secret", "default", "my-ca-key")


def test_the_pair_check_reads_a_chain_certificate_by_certificate(mesh_ca: tuple[bytes, bytes]) -> None:
    leaf, _, _ = builtin.issue_workload_cert(*mesh_ca, "default", ["web"], {})
    assert [path for path, _ in provided.pair_violations(mesh_ca[0] + leaf, mesh_ca[1])] == ["cert[1]"] * 3


def test_the_enabled_ca_changes_only_as_a_rotation(manager: ResourceManager, mesh_ca: tuple[bytes, bytes]) -> None:
    _secret(manager, "my-ca-cert", mesh_ca[0])
    _secret(manager, "my-ca-key", mesh_ca[1])
    builtin_backend = {"name": "ca-1", "type": "builtin"}
    mine = {"name": "mine", "type": "provided", "conf": CONF}

    def put(enabled: str, *backends: dict) -> None:
        manager.update(Resource("Mesh", "", "default", {"mtls": {"enabledBackend": enabled, "backends": list(backends)}}),
                       manager.get("Mesh", "", "default").version)

    put("ca-1", builtin_backend)
    with pytest.raises(ValidationError, match="except as a rotation"):   # a CA no proxy trusts yet
        put("mine", mine)
    with pytest.raises(ValidationError, match="except as a rotation"):
        put("mine", builtin_backend, mine)
    put("ca-1", builtin_backend, mine)
    with pytest.raises(ValidationError, match="except as a rotation"):   # certificates of ca-1 still circulate
        put("mine", mine)
    put("mine", builtin_backend, mine)
    put("mine", mine)
    assert manager.get("Mesh", "", "default").content["mtls"]["enabledBackend"] == "mine"
