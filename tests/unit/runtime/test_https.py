"""The HTTPS API's TLS front, with real TLS on 127.0.0.x: who the app sees, what the front refuses."""
from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from appliance.ca.server_cert import ServerCert, ensure_server_cert
from appliance.runtime.https import HttpsServer, TlsSettings, server_context
from tests.tls_certs import client_ca, client_cert


def _echo(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    body = f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def cert(tmp_path: Path) -> ServerCert:
    return ensure_server_cert(tmp_path, [], [])


def _serve(cert: ServerCert, **settings: Any) -> HttpsServer:
    context = server_context(TlsSettings(str(cert.cert_path), str(cert.key_path), **settings))
    return HttpsServer(_echo, "127.0.0.1", 0, 2, context).start()


@pytest.fixture
def server(cert: ServerCert) -> Iterator[HttpsServer]:
    s = _serve(cert)
    yield s
    s.stop()


class _From(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.source, 0), **kwargs)


def test_the_app_sees_the_clients_address_and_https(cert: ServerCert, tmp_path: Path) -> None:
    s = HttpsServer(_echo, "0.0.0.0", 0, 2, server_context(TlsSettings(str(cert.cert_path), str(cert.key_path))))
    s.start()
    try:
        session = requests.Session()
        session.mount("https://", _From("127.0.0.2"))
        r = session.get(f"https://127.0.0.1:{s.port}/", verify=str(cert.cert_path))
        # not 127.0.0.1, which the API would take for the local admin
        assert r.text == "127.0.0.2 https"
        assert requests.get(f"https://localhost:{s.port}/", verify=str(cert.cert_path)).text == "127.0.0.1 https"
    finally:
        s.stop()


def test_the_private_port_behind_the_front_refuses_requests_that_bypass_it(server: HttpsServer) -> None:
    r = requests.get(f"http://127.0.0.1:{server._backend.port}/")
    assert r.status_code == 403 and r.json()["status"] == 403


def test_plain_http_on_the_https_port_gets_no_answer(server: HttpsServer, cert: ServerCert) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert requests.get(f"https://localhost:{server.port}/", verify=str(cert.cert_path)).status_code == 200


def _handshake(port: int, cafile: Path, **client: Any) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cafile))
    for k, v in client.items():
        setattr(ctx, k, v)
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")


def test_tls_min_version_refuses_older_clients(cert: ServerCert) -> None:
    s = _serve(cert, min_version="TLSv1_3")
    try:
        with pytest.raises(ssl.SSLError):
            _handshake(s.port, cert.cert_path, maximum_version=ssl.TLSVersion.TLSv1_2)
        with _handshake(s.port, cert.cert_path) as tls:
            assert tls.version() == "TLSv1.3"
    finally:
        s.stop()


def test_cipher_suites_by_go_name(cert: ServerCert) -> None:
    s = _serve(cert, max_version="TLSv1_2", cipher_suites=("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",))
    try:
        with _handshake(s.port, cert.cert_path) as tls:
            assert (tls.version(), tls.cipher()[0]) == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
        client = ssl.create_default_context(cafile=str(cert.cert_path))
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")   # not in the server's list
        with pytest.raises(ssl.SSLError):
            client.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5), server_hostname="localhost")
    finally:
        s.stop()


def test_a_client_certificate_is_required_when_configured(cert: ServerCert, tmp_path: Path) -> None:
    ca, ca_key = client_ca(tmp_path)
    other_ca, other_key = client_ca(tmp_path, "other-ca")
    s = _serve(cert, ca_file=str(ca), require_client_cert=True)
    try:
        url = f"https://localhost:{s.port}/"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(cert.cert_path), timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(cert.cert_path), cert=client_cert(tmp_path, other_ca, other_key, "x"),
                         timeout=5)
        r = requests.get(url, verify=str(cert.cert_path), cert=client_cert(tmp_path, ca, ca_key), timeout=5)
        assert r.text == "127.0.0.1 https"
    finally:
        s.stop()


def test_a_busy_port_is_a_bind_error(server: HttpsServer, cert: ServerCert) -> None:
    from appliance.runtime.http import BindError
    with pytest.raises(BindError):
        HttpsServer(_echo, "127.0.0.1", server.port, 2,
                    server_context(TlsSettings(str(cert.cert_path), str(cert.key_path))))
