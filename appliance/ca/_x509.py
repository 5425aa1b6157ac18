"""Small X.509 and file helpers shared by the builtin CA and the DP server certificate."""
from __future__ import annotations

import datetime
import math
import os
import re
import secrets
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


def pem_blocks(pem: bytes) -> list[tuple[str, bytes]]:
    """Each PEM block of `pem` as (its label, e.g. "CERTIFICATE" or "EC PRIVATE KEY", the block), in order."""
    return [(m.group(1).decode(), m.group(0)) for m in _PEM_BLOCK.finditer(pem)]

_SERIAL_LIMIT = 1 << 128
# Kuma's key size for every RSA key it generates (pkg/util/rsa.DefaultKeySize).
DEFAULT_RSA_BITS = 2048


def random_serial() -> int:
    """A serial in [1, 2^128 - 1], the range Kuma draws from (0 is not a valid serial)."""
    return secrets.randbelow(_SERIAL_LIMIT - 1) + 1


def utc(epoch: float) -> datetime.datetime:
    """`epoch` as an aware UTC datetime truncated to the second.

    X.509 times have one-second resolution; truncating here (as Go's encoder does) makes the
    value we hand back equal to what a reader of the certificate sees.
    """
    return datetime.datetime.fromtimestamp(math.floor(epoch), tz=datetime.timezone.utc)


def new_rsa_key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """PEM in the encodings Kuma writes: `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC 1)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def public_key_der(key: object) -> bytes:
    """SubjectPublicKeyInfo DER of a public key, to compare a certificate with a private key."""
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one.

    The temporary file lives in the same directory (rename is atomic only within a file system)
    and gets its final permissions before any byte is written, so a key is never world-readable.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
