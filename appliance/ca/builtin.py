"""Kuma's builtin CA: a self-signed root per mesh and per-proxy workload certificates.

Pure functions (no store, no I/O), shaped like Kuma 2.14's `pkg/plugins/ca/builtin` and
`pkg/core/ca/issuer`:

- root CA: RSA (2048 bits unless the backend's `caCert.RSAbits` says otherwise), subject
  `O=Kuma, OU=Mesh, CN=<mesh>`, URI SAN `spiffe://<mesh>`, CA:TRUE, key usage certSign + cRLSign,
  valid from 10 s ago (clock skew) for 10 years (or the backend's `caCert.expiration`);
- workload certificate: a fresh EC P-256 key (Kuma uses RSA 2048: generating one costs ~50 ms of CPU,
  which at thousands of proxies dominated the control plane; Envoy and SPIFFE accept both, and the
  certificate is otherwise Kuma's), empty subject, URI SANs
  `spiffe://<mesh>/<service>` for each service then `kuma://<tag>/<value>` for each tag value
  (tags sorted, values sorted), key usage digitalSignature + keyAgreement (Kuma adds keyEncipherment for its RSA key),
  extended key usage serverAuth + clientAuth, valid from 10 s ago for 24 h (or the backend's
  `dpCert.rotation.expiration`);
- renewal once four fifths of the lifetime have passed (`Info.ExpiringSoon` in `pkg/xds/secrets`).

The CA is stored by the caller as two Secrets named by `ca_secret_names`.
"""
from __future__ import annotations

import functools
import re
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.ca import _x509

SERVICE_TAG = "kuma.io/service"
DEFAULT_RSA_BITS = _x509.DEFAULT_RSA_BITS
CA_VALIDITY_S = 10 * 365 * 24 * 3600.0
WORKLOAD_VALIDITY_S = 24 * 3600.0
# Kuma backdates every certificate by this much so a proxy whose clock is slightly behind the
# control plane's still accepts it.
ALLOWED_CLOCK_SKEW_S = 10.0

# go-spiffe's rules, which Kuma's CA enforces when it builds the SPIFFE IDs.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


_KUMA_DURATION = re.compile(r"([0-9]+)(y|w|d|h|m|s|ms)")
_UNIT_S = {"y": 365 * 24 * 3600.0, "w": 7 * 24 * 3600.0, "d": 24 * 3600.0, "h": 3600.0, "m": 60.0, "s": 1.0,
           "ms": 0.001}
# RSA sizes the builtin CA generates: below 1024 Go (and OpenSSL) refuse; above 8192 a key takes minutes of CPU.
MIN_RSA_BITS, MAX_RSA_BITS = 1024, 8192


def kuma_duration_s(text: str) -> float | None:
    """Kuma's mesh duration (`0`, or a number and one of y w d h m s ms: `1y`, `24h`) in seconds; None if not one."""
    if text == "0":
        return 0.0
    m = _KUMA_DURATION.fullmatch(text)
    return int(m.group(1)) * _UNIT_S[m.group(2)] if m else None


def ca_secret_names(mesh: str, backend: str) -> tuple[str, str]:
    """Names of the Secrets (in `mesh`) holding the CA certificate and key, as Kuma names them."""
    return f"{mesh}.ca-builtin-cert-{backend}", f"{mesh}.ca-builtin-key-{backend}"


def spiffe_id(mesh: str, service: str) -> str:
    """The SPIFFE identity of `service` in `mesh`, as put in certificates and checked on outbounds."""
    if not _TRUST_DOMAIN.match(mesh):
        raise ValueError(f"mesh name {mesh!r} is not a valid SPIFFE trust domain: characters are limited "
                         "to lowercase letters, numbers, dots, dashes, and underscores")
    if service in (".", "..") or not _PATH_SEGMENT.match(service):
        raise ValueError(f"service name {service!r} cannot be a SPIFFE path segment: characters are limited "
                         "to letters, numbers, dots, dashes, and underscores")
    return f"spiffe://{mesh}/{service}"


def workload_uris(mesh: str, services: list[str], tags: dict[str, list[str]]) -> list[str]:
    """The URI SANs of a workload certificate, in Kuma's order.

    `services` are also `kuma.io/service` tag values (Kuma derives them from that tag), so they
    are merged into `tags`: a caller passing the dataplane's whole tag set gets the same result.
    """
    merged: dict[str, set[str]] = {name: set(values) for name, values in tags.items()}
    merged.setdefault(SERVICE_TAG, set()).update(services)
    uris = [spiffe_id(mesh, service) for service in sorted(merged[SERVICE_TAG])]
    for name in sorted(merged):
        uris.extend(f"kuma://{name}/{value}" for value in sorted(merged[name]))
    return uris


def new_root_ca(mesh: str, backend: str, key_size: int = DEFAULT_RSA_BITS, *,
                validity_s: float = CA_VALIDITY_S, now: float | None = None) -> tuple[bytes, bytes]:
    """A new self-signed root CA for `mesh`: (certificate PEM, key PEM).

    `backend` only names the CA in errors: Kuma's root certificate does not mention it.
    """
    if not _TRUST_DOMAIN.match(mesh):
        raise ValueError(f"failed to create CA for mesh {mesh!r} and backend {backend!r}: mesh name is not a "
                         "valid SPIFFE trust domain (lowercase letters, numbers, dots, dashes, underscores)")
    now = time.time() if now is None else now
    key = _x509.new_rsa_key(key_size)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kuma"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Mesh"),
        x509.NameAttribute(NameOID.COMMON_NAME, mesh),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        # Kuma uses serial 0, which RFC 5280 forbids and `cryptography` refuses; a random one is
        # what every other certificate gets.
        .serial_number(_x509.random_serial())
        .not_valid_before(_x509.utc(now - ALLOWED_CLOCK_SKEW_S))
        .not_valid_after(_x509.utc(now + validity_s))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{mesh}")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _x509.cert_pem(cert), _x509.key_pem(key)


def issue_workload_cert(ca_cert_pem: bytes, ca_key_pem: bytes, mesh: str, services: list[str],
                        tags: dict[str, list[str]], validity_s: float = WORKLOAD_VALIDITY_S,
                        now: float | None = None) -> tuple[bytes, bytes, float]:
    """A certificate for one proxy, signed by the mesh CA: (certificate PEM, key PEM, not_after).

    `not_after` is the certificate's expiry as an epoch (whole seconds, as in the certificate).
    The key is EC P-256 (tens of microseconds to generate); most of the remaining cost (~1 ms) is the
    CA's RSA signature.
    """
    uris = workload_uris(mesh, services, tags)
    if not uris:
        # Envoy rejects a certificate with neither subject nor SAN; say why instead.
        raise ValueError(f"cannot issue a certificate in mesh {mesh!r} without a service or a tag")
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    now = time.time() if now is None else now
    not_after = _x509.utc(now + validity_s)
    key = _x509.new_ec_key()
    builder = (
        x509.CertificateBuilder()
        # Kuma leaves the subject empty on purpose: the identity is in the SANs, which are
        # therefore critical (RFC 5280 4.2.1.6).
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_x509.random_serial())
        .not_valid_before(_x509.utc(now - ALLOWED_CLOCK_SKEW_S))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            # keyEncipherment (Kuma's, for its RSA key) does not apply to an EC key (RFC 5480 section 3)
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                       critical=True)
    )
    aki = _authority_key_id(ca_cert)
    if aki is not None:
        builder = builder.add_extension(aki, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _x509.cert_pem(cert), _x509.key_pem(key), not_after.timestamp()


def needs_renewal(not_after: float, issued_at: float, now: float) -> bool:
    """True once four fifths of the certificate's lifetime have passed, as Kuma decides.

    `issued_at` is when the certificate was generated (not its backdated notBefore): Kuma
    measures the lifetime from generation time.
    """
    return now > issued_at + (not_after - issued_at) * 4 / 5


@functools.lru_cache(maxsize=64)
def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, _x509.PrivateKey]:
    # Parsing and checking an RSA key costs a few ms; a mesh signs with the same CA for years,
    # so it is parsed once per CA rather than once per certificate.
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"failed to load CA key pair: {e}") from None
    if _x509.public_key_der(cert.public_key()) != _x509.public_key_der(key.public_key()):
        raise ValueError("failed to load CA key pair: the private key does not match the certificate")
    return cert, key  # type: ignore[return-value]


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier | None:
    # Points verifiers at the signing key, as Go does when the parent has a key identifier.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
