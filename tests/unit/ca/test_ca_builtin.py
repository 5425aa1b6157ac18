"""The builtin CA issues root and workload certificates shaped like Kuma 2.14's."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from appliance.ca import builtin
from tests.unit.ca.support import TEST_KEY_SIZE

NOW = 1_750_000_000.25


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _uris(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)


def _issue(mesh_ca: tuple[bytes, bytes], **kwargs: object) -> tuple[bytes, bytes, float]:
    args: dict[str, object] = {"mesh": "default", "services": ["web"], "tags": {"version": ["v1"]}}
    args.update(kwargs)
    return builtin.issue_workload_cert(mesh_ca[0], mesh_ca[1], **args)  # type: ignore[arg-type]


def test_root_ca_has_kumas_subject_san_and_constraints(mesh_ca: tuple[bytes, bytes]) -> None:
    cert = _cert(mesh_ca[0])
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Kuma"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "Mesh"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "default"
    assert _uris(cert) == ["spiffe://default"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cert.verify_directly_issued_by(cert)


def test_root_ca_validity_is_ten_years_backdated_by_clock_skew() -> None:
    cert_pem, key_pem = builtin.new_root_ca("m1", "ca-1", key_size=TEST_KEY_SIZE, now=NOW)
    cert = _cert(cert_pem)
    assert cert.not_valid_before_utc.timestamp() == int(NOW - 10)
    assert cert.not_valid_after_utc.timestamp() == int(NOW + 10 * 365 * 24 * 3600)
    assert key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == TEST_KEY_SIZE
    assert key.public_key() == cert.public_key()


def test_root_ca_defaults_to_rsa_2048_and_honours_expiration() -> None:
    cert_pem, _ = builtin.new_root_ca("m1", "ca-1", validity_s=60, now=NOW)
    cert = _cert(cert_pem)
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    assert cert.not_valid_after_utc.timestamp() == int(NOW + 60)


def test_root_ca_refuses_a_mesh_name_that_is_no_trust_domain() -> None:
    with pytest.raises(ValueError, match="backend 'ca-1'"):
        builtin.new_root_ca("Bad Mesh", "ca-1", key_size=TEST_KEY_SIZE)


def test_ca_secret_names_follow_kuma() -> None:
    assert builtin.ca_secret_names("default", "ca-1") == ("default.ca-builtin-cert-ca-1",
                                                          "default.ca-builtin-key-ca-1")


def test_workload_cert_sans_in_kumas_order(mesh_ca: tuple[bytes, bytes]) -> None:
    # The same input as Kuma's manager_test: two services and a version tag.
    cert_pem, _, _ = _issue(mesh_ca, services=["web-api", "web"],
                            tags={"kuma.io/service": ["web", "web-api"], "version": ["v1", "v1"]})
    assert _uris(_cert(cert_pem)) == [
        "spiffe://default/web",
        "spiffe://default/web-api",
        "kuma://kuma.io/service/web",
        "kuma://kuma.io/service/web-api",
        "kuma://version/v1",
    ]


def test_services_count_as_service_tag_values(mesh_ca: tuple[bytes, bytes]) -> None:
    cert_pem, _, _ = _issue(mesh_ca, services=["backend"], tags={"zone": ["z1"], "env": ["prod", "dev"]})
    assert _uris(_cert(cert_pem)) == [
        "spiffe://default/backend",
        "kuma://env/dev",
        "kuma://env/prod",
        "kuma://kuma.io/service/backend",
        "kuma://zone/z1",
    ]


def test_workload_cert_chains_to_the_mesh_ca(mesh_ca: tuple[bytes, bytes]) -> None:
    cert_pem, _, _ = _issue(mesh_ca)
    cert, ca = _cert(cert_pem), _cert(mesh_ca[0])
    cert.verify_directly_issued_by(ca)
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verified = verifier.verify(cert, [])
    assert x509.UniformResourceIdentifier("spiffe://default/web") in verified.subjects


def test_workload_cert_extensions_and_subject(mesh_ca: tuple[bytes, bytes]) -> None:
    cert = _cert(_issue(mesh_ca)[0])
    assert cert.subject == x509.Name([])
    assert cert.issuer == _cert(mesh_ca[0]).subject
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert (ku.value.digital_signature, ku.value.key_encipherment, ku.value.key_agreement) == (True, False, True)
    assert not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert 0 < cert.serial_number < 2**128


def test_workload_key_is_ec_p256_sec1_and_matches(mesh_ca: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem, _ = _issue(mesh_ca)
    assert key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == _cert(cert_pem).public_key()


def test_workload_cert_validity(mesh_ca: tuple[bytes, bytes]) -> None:
    cert_pem, _, not_after = _issue(mesh_ca, now=NOW)
    cert = _cert(cert_pem)
    assert cert.not_valid_before_utc.timestamp() == int(NOW - 10)
    assert cert.not_valid_after_utc.timestamp() == int(NOW + 24 * 3600) == not_after
    _, _, short = _issue(mesh_ca, validity_s=3600, now=NOW)
    assert short == int(NOW + 3600)


def test_workload_cert_refuses_bad_names(mesh_ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="SPIFFE path segment"):
        _issue(mesh_ca, services=["web/admin"])
    with pytest.raises(ValueError, match="trust domain"):
        _issue(mesh_ca, mesh="Default")
    with pytest.raises(ValueError, match="without a service or a tag"):
        _issue(mesh_ca, services=[], tags={})


def test_workload_cert_refuses_a_ca_whose_key_does_not_match(mesh_ca: tuple[bytes, bytes]) -> None:
    _, other_key = builtin.new_root_ca("default", "ca-2", key_size=TEST_KEY_SIZE)
    with pytest.raises(ValueError, match="does not match"):
        builtin.issue_workload_cert(mesh_ca[0], other_key, "default", ["web"], {})
    with pytest.raises(ValueError, match="failed to load CA key pair"):
        builtin.issue_workload_cert(b"garbage", mesh_ca[1], "default", ["web"], {})


@pytest.mark.parametrize(("now", "expected"), [
    (1000.0, False),
    (1000.0 + 0.5 * 86400, False),
    (1000.0 + 0.8 * 86400, False),      # exactly four fifths: Kuma renews only after
    (1000.0 + 0.8 * 86400 + 1, True),
    (1000.0 + 86400, True),
    (1000.0 + 2 * 86400, True),
])
def test_needs_renewal_after_four_fifths_of_lifetime(now: float, expected: bool) -> None:
    assert builtin.needs_renewal(not_after=1000.0 + 86400, issued_at=1000.0, now=now) is expected


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_openssl_accepts_the_chain(mesh_ca: tuple[bytes, bytes], tmp_path: Path, purpose: str) -> None:
    cert_pem, _, _ = _issue(mesh_ca)
    (tmp_path / "ca.pem").write_bytes(mesh_ca[0])
    (tmp_path / "leaf.pem").write_bytes(cert_pem)
    result = subprocess.run(
        ["openssl", "verify", "-purpose", purpose, "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
