"""The DP server certificate: generated into the work dir, reused, regenerated, or loaded from user files."""
from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.ca import builtin, server_cert
from appliance.ca.server_cert import ServerCert, ensure_server_cert, load_server_cert
from tests.unit.ca.support import TEST_KEY_SIZE


def _ensure(work_dir: Path, hostnames: list[str] | None = None, ips: list[str] | None = None,
            **kwargs: object) -> ServerCert:
    return ensure_server_cert(work_dir, hostnames if hostnames is not None else ["cp.example"],
                              ips if ips is not None else ["10.1.2.3"],
                              key_size=TEST_KEY_SIZE, **kwargs)  # type: ignore[arg-type]


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def test_generated_on_first_start_with_kumas_file_names(tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    result = _ensure(work_dir)
    assert result.generated
    assert result.cert_path == work_dir / "kuma-cp.crt"
    assert result.key_path == work_dir / "kuma-cp.key"
    assert result.ca_pem == result.cert_path.read_bytes()
    assert stat.S_IMODE(os.stat(result.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(work_dir).st_mode) == 0o700
    assert not [p for p in work_dir.iterdir() if p.name.endswith(".tmp")]


def test_sans_always_include_localhost_and_loopbacks(tmp_path: Path) -> None:
    result = _ensure(tmp_path, ["cp.example", "cp"], ["10.1.2.3", "fd00:0::5"])
    names, ips = _sans(result.cert_path)
    assert names == ["cp.example", "cp", "localhost"]
    assert ips == ["10.1.2.3", "fd00::5", "127.0.0.1", "::1"]


def test_certificate_is_a_self_signed_server_ca_like_kumas(tmp_path: Path) -> None:
    result = _ensure(tmp_path, now=1_750_000_000.0)
    cert = x509.load_pem_x509_certificate(result.cert_path.read_bytes())
    cert.verify_directly_issued_by(cert)
    assert cert.subject.rfc4514_string() == "CN=kuma-control-plane" == cert.issuer.rfc4514_string()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.digital_signature and ku.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_before_utc.timestamp() == 1_750_000_000 - 300
    assert cert.not_valid_after_utc.timestamp() == 1_750_000_000 - 300 + 10 * 365 * 24 * 3600
    key = serialization.load_pem_private_key(result.key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_default_key_is_rsa_2048(tmp_path: Path) -> None:
    result = ensure_server_cert(tmp_path, [], [])
    cert = x509.load_pem_x509_certificate(result.cert_path.read_bytes())
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_reused_on_later_starts(tmp_path: Path) -> None:
    first = _ensure(tmp_path, ["cp.example", "other"], ["10.1.2.3", "10.9.9.9"])
    again = _ensure(tmp_path, ["cp.example"], ["10.1.2.3"])
    assert not again.generated
    assert again.ca_pem == first.ca_pem == again.cert_path.read_bytes()


def test_regenerated_for_a_name_it_does_not_cover(tmp_path: Path) -> None:
    first = _ensure(tmp_path)
    renamed = _ensure(tmp_path, ["new-host"], ["10.1.2.3"])
    assert renamed.generated and renamed.ca_pem != first.ca_pem
    assert "new-host" in _sans(renamed.cert_path)[0]
    readdressed = _ensure(tmp_path, ["new-host"], ["10.7.7.7"])
    assert readdressed.generated
    assert "10.7.7.7" in _sans(readdressed.cert_path)[1]


def test_regenerated_when_expired(tmp_path: Path) -> None:
    long_ago = time.time() - 11 * 365 * 24 * 3600
    old = _ensure(tmp_path, now=long_ago)
    fresh = _ensure(tmp_path)
    assert fresh.generated and fresh.ca_pem != old.ca_pem


@pytest.mark.parametrize("damage", ["empty-cert", "garbage-key", "missing-key", "other-key"])
def test_regenerated_when_files_are_damaged(tmp_path: Path, damage: str) -> None:
    first = _ensure(tmp_path)
    if damage == "empty-cert":
        first.cert_path.write_bytes(b"")
    elif damage == "garbage-key":
        first.key_path.write_bytes(b"not a key")
    elif damage == "missing-key":
        first.key_path.unlink()
    else:
        # A crash between writing the new key and the new certificate leaves this pair.
        _, other_key = builtin.new_root_ca("default", "x", key_size=TEST_KEY_SIZE)
        first.key_path.write_bytes(other_key)
    again = _ensure(tmp_path)
    assert again.generated
    load_server_cert(again.cert_path, again.key_path)


def test_tls_clients_trusting_ca_pem_accept_it_by_name_and_address(tmp_path: Path) -> None:
    result = _ensure(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Python's OpenSSL refuses 1024-bit keys at its default security level.
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(result.cert_path, result.key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for server_name in ("localhost", "127.0.0.1"):
            client_ctx = ssl.create_default_context(cadata=result.ca_pem.decode())
            client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                    assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=5)
        listener.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_accepts_it_as_server_cert_for_localhost(tmp_path: Path) -> None:
    result = _ensure(tmp_path)
    proc = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-verify_hostname", "localhost",
         "-CAfile", str(result.cert_path), str(result.cert_path)],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_load_server_cert_accepts_matching_files(tmp_path: Path) -> None:
    generated = _ensure(tmp_path / "gen")
    loaded = load_server_cert(str(generated.cert_path), generated.key_path)
    assert loaded == ServerCert(generated.cert_path, generated.key_path, generated.cert_path.read_bytes())


def test_load_server_cert_accepts_a_chain_file(tmp_path: Path) -> None:
    ca_pem, ca_key = builtin.new_root_ca("default", "ca-1", key_size=TEST_KEY_SIZE)
    leaf_pem, leaf_key, _ = builtin.issue_workload_cert(ca_pem, ca_key, "default", ["cp"], {})
    (tmp_path / "chain.crt").write_bytes(leaf_pem + ca_pem)
    (tmp_path / "leaf.key").write_bytes(leaf_key)
    loaded = load_server_cert(tmp_path / "chain.crt", tmp_path / "leaf.key")
    assert loaded.ca_pem == leaf_pem + ca_pem


def _bad_files(tmp_path: Path, case: str) -> tuple[Path, Path, str]:
    good = _ensure(tmp_path / "good")
    cert, key = tmp_path / "user.crt", tmp_path / "user.key"
    cert.write_bytes(good.cert_path.read_bytes())
    key.write_bytes(good.key_path.read_bytes())
    if case == "missing-cert":
        cert.unlink()
        return cert, key, f'TLS certificate file "{cert}" cannot be read'
    if case == "missing-key":
        key.unlink()
        return cert, key, f'TLS key file "{key}" cannot be read'
    if case == "cert-not-pem":
        cert.write_text("hello\n")
        return cert, key, f'TLS certificate file "{cert}" does not contain a PEM-encoded certificate'
    if case == "cert-is-a-key":
        cert.write_bytes(good.key_path.read_bytes())
        return cert, key, f'TLS certificate file "{cert}" does not contain a PEM-encoded certificate'
    if case == "key-not-pem":
        key.write_bytes(good.cert_path.read_bytes())
        return cert, key, f'TLS key file "{key}" does not contain a PEM-encoded private key'
    if case == "key-encrypted":
        loaded = serialization.load_pem_private_key(good.key_path.read_bytes(), password=None)
        key.write_bytes(loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.BestAvailableEncryption(b"secret")))
        return cert, key, f'TLS key file "{key}" holds an encrypted key'
    assert case == "key-mismatch"
    _, other_key = builtin.new_root_ca("default", "x", key_size=TEST_KEY_SIZE)
    key.write_bytes(other_key)
    return cert, key, f'TLS key file "{key}" does not match the certificate in "{cert}"'


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "cert-not-pem", "cert-is-a-key", "key-not-pem",
                                  "key-encrypted", "key-mismatch"])
def test_load_server_cert_bad_files_give_one_line_errors(tmp_path: Path, case: str) -> None:
    cert, key, expected = _bad_files(tmp_path, case)
    with pytest.raises(ValueError) as info:
        load_server_cert(cert, key)
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_machine_names_include_this_host_and_loopbacks() -> None:
    hostnames, ips = server_cert.machine_names()
    assert socket.gethostname() in hostnames
    assert "localhost" in hostnames
    assert "127.0.0.1" in ips and "::1" in ips
    assert len(ips) == len(set(ips))
    parsed = [ipaddress.ip_address(ip) for ip in ips]
    assert [str(ip) for ip in parsed] == ips
    # IPv4 first, as Kuma lists them.
    versions = [ip.version for ip in parsed]
    assert versions == sorted(versions)


def test_machine_names_feed_ensure_server_cert(tmp_path: Path) -> None:
    hostnames, ips = server_cert.machine_names()
    result = _ensure(tmp_path, hostnames, ips)
    names, addresses = _sans(result.cert_path)
    assert set(hostnames) <= set(names)
    assert set(ips) <= set(addresses)
