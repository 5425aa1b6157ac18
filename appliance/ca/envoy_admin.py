"""The Envoy admin CA: how the control plane, and nobody else, reaches a proxy's Envoy admin API.

As Kuma 2.14 (pkg/envoy/admin/tls): one CA per control plane, kept in the GlobalSecret `envoy-admin-ca`
(certificate PEM then key PEM). Each proxy's `kuma:envoy:admin` listener shows a server certificate from
it and asks for a client certificate from it with the DNS SAN `kuma-cp`; the control plane holds that one.
Its own CA, not a mesh's: mTLS on a mesh may be off, and zone egresses belong to no mesh.

Keys are EC P-256 (Kuma's are RSA): a proxy's server certificate costs about a millisecond to issue.
A CA whose key is RSA (one an operator put in the secret) signs as well.
"""
from __future__ import annotations

import base64
import ipaddress
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.ca import _x509

SECRET_NAME = "envoy-admin-ca"
CLIENT_SAN = "kuma-cp"
VALIDITY_S = 10 * 365 * 24 * 3600.0
_SKEW_S = 5 * 60.0


@dataclass(frozen=True)
class EnvoyAdminCa:
    cert_pem: bytes
    key_pem: bytes


def new_ca(now: float | None = None) -> EnvoyAdminCa:
    now = time.time() if now is None else now
    key = _x509.new_ec_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kuma"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Mesh"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Envoy Admin CA")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(_x509.random_serial())
            .not_valid_before(_x509.utc(now - _SKEW_S)).not_valid_after(_x509.utc(now + VALIDITY_S))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return EnvoyAdminCa(_x509.cert_pem(cert), _x509.key_pem(key))


def secret_data(ca: EnvoyAdminCa) -> str:
    """The GlobalSecret's `data`: base64 of the certificate PEM followed by the key PEM, as Kuma stores it."""
    return base64.b64encode(ca.cert_pem + ca.key_pem).decode()


def from_secret_data(data: str) -> EnvoyAdminCa:
    """Raises ValueError when the secret does not hold one certificate and its key."""
    raw = base64.b64decode(data)
    cert = x509.load_pem_x509_certificate(raw)
    start = raw.find(b"-----BEGIN", raw.find(b"-----END CERTIFICATE-----"))
    if start < 0:
        raise ValueError(f"GlobalSecret {SECRET_NAME} holds no private key after the certificate")
    key = serialization.load_pem_private_key(raw[start:], password=None)
    if _x509.public_key_der(key.public_key()) != _x509.public_key_der(cert.public_key()):
        raise ValueError(f"GlobalSecret {SECRET_NAME}: the key does not belong to the certificate")
    return EnvoyAdminCa(_x509.cert_pem(cert), _x509.key_pem(key))  # type: ignore[arg-type]


def _issue(ca: EnvoyAdminCa, san: x509.GeneralName, usage: x509.ObjectIdentifier,
           now: float | None) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    now = time.time() if now is None else now
    key = _x509.new_ec_key()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(_x509.random_serial())
            .not_valid_before(_x509.utc(now - _SKEW_S)).not_valid_after(_x509.utc(now + VALIDITY_S))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return _x509.cert_pem(cert), _x509.key_pem(key)


def issue_server_cert(ca: EnvoyAdminCa, host: str, now: float | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a proxy's admin listener at `host` (its address: an IP or a name)."""
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    return _issue(ca, san, ExtendedKeyUsageOID.SERVER_AUTH, now)


def issue_client_cert(ca: EnvoyAdminCa, now: float | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) the control plane shows to proxies' admin listeners."""
    return _issue(ca, x509.DNSName(CLIENT_SAN), ExtendedKeyUsageOID.CLIENT_AUTH, now)
