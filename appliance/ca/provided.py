"""Kuma's provided CA: the user's certificate and key (PEM), checked as Kuma 2.14 checks them
(`pkg/plugins/ca/provided`: a TLS key pair whose certificates are X509-SVID signing certificates).

Pure functions: the bytes come from the caller, who reads the backend's `conf.cert` / `conf.key`.
Workload certificates are then issued exactly as with the builtin CA (`builtin.issue_workload_cert`).
"""
from __future__ import annotations

import functools

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from appliance.ca import _x509

@functools.lru_cache(maxsize=32)
def cached_pair_violations(cert_pem: bytes, key_pem: bytes) -> tuple[tuple[str, str], ...]:
    """`pair_violations`, once per pair: a mesh keeps its CA for years and is checked at every revision."""
    return tuple(pair_violations(cert_pem, key_pem))


def pair_violations(cert_pem: bytes, key_pem: bytes) -> list[tuple[str, str]]:
    """(path relative to the backend's `conf`, message) for each reason the pair cannot sign workload
    certificates; empty when it can. Messages are Kuma's (Go's crypto/tls words for a bad pair)."""
    problem = _key_pair_error(cert_pem, key_pem)
    if problem:
        return [("cert", f"not a valid TLS key pair: {problem}")]
    out = []
    for i, cert in enumerate(x509.load_pem_x509_certificates(_blocks(cert_pem, "CERTIFICATE"))):
        path = f"cert[{i}]"
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if not is_ca:
            out.append((path, "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)"))
        if usage is None or not usage.key_cert_sign:
            out.append((path, "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)"))
        if usage is not None and usage.key_agreement:
            out.append((path, "key usage extension 'keyAgreement' must NOT be set "
                              "(see X509-SVID: Appendix A. X.509 Field Reference)"))
    return out


def _blocks(pem: bytes, kind: str) -> bytes:
    return b"\n".join(block for label, block in _x509.pem_blocks(pem) if label == kind)


def _key_pair_error(cert_pem: bytes, key_pem: bytes) -> str | None:
    """Go's tls.X509KeyPair error for the pair, or None."""
    cert_blocks = [label for label, _ in _x509.pem_blocks(cert_pem)]
    if "CERTIFICATE" not in cert_blocks:
        if any(b.endswith("PRIVATE KEY") for b in cert_blocks):
            return ("tls: failed to find certificate PEM data in certificate input, but did find a private key; "
                    "PEM inputs may have been switched")
        return "tls: failed to find any PEM data in certificate input"
    key_blocks = [block for label, block in _x509.pem_blocks(key_pem) if label.endswith("PRIVATE KEY")]
    if not key_blocks:
        if b"-----BEGIN CERTIFICATE-----" in key_pem:
            return ("tls: found a certificate rather than a key in the PEM for the private key")
        return "tls: failed to find any PEM data in key input"
    try:
        cert = x509.load_pem_x509_certificate(_blocks(cert_pem, "CERTIFICATE"))
    except ValueError:
        return "x509: malformed certificate"
    try:
        key = serialization.load_pem_private_key(key_blocks[0], password=None)
    except (ValueError, TypeError):
        return "tls: failed to parse private key"
    if _algorithm(cert.public_key()) != _algorithm(key.public_key()):
        return "tls: private key type does not match public key type"
    if _x509.public_key_der(cert.public_key()) != _x509.public_key_der(key.public_key()):
        return "tls: private key does not match public key"
    return None


def _algorithm(public_key: object) -> str:
    for name, kind in (("RSA", rsa.RSAPublicKey), ("EC", ec.EllipticCurvePublicKey),
                       ("Ed25519", ed25519.Ed25519PublicKey)):
        if isinstance(public_key, kind):
            return name
    return type(public_key).__name__
