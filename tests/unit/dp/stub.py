"""A stand-in for the control plane's `POST /bootstrap`: HTTPS on 127.0.0.1 with a throwaway
certificate, scripted answers, and the requests it got, for testing kuma-dp alone."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> tuple[Path, Path]:
    """A self-signed CA certificate for `hosts`, as kuma-cp generates for its DP server."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stub-cp")])
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cp.crt", directory / "cp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def envoy_bootstrap(listener_port: int, admin_port: int = 0, admin_socket: str = "", valid: bool = True) -> str:
    """A minimal Envoy config: an admin API and one listener answering "hello from envoy"."""
    admin = ({"pipe": {"path": admin_socket}} if admin_socket
             else {"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}})
    listener: dict[str, Any] = {
        "name": "hello",
        "address": {"socketAddress": {"address": "127.0.0.1", "portValue": listener_port}},
        "filterChains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "statPrefix": "hello",
                "httpFilters": [{"name": "envoy.filters.http.router", "typedConfig": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                "routeConfig": {"virtualHosts": [{"name": "all", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "directResponse": {"status": 200, "body": {"inlineString": "hello from envoy"}}}]}]},
            }}]}],
    }
    if not valid:
        del listener["address"]  # Envoy refuses a listener without an address and exits 1
    return yaml.safe_dump({"node": {"id": "default.web-1", "cluster": "web"}, "admin": {"address": admin},
                           "staticResources": {"listeners": [listener]}})


def bootstrap_response(yaml_text: str) -> tuple[int, bytes]:
    body = {"bootstrap": base64.b64encode(yaml_text.encode()).decode(),
            "kumaSidecarConfiguration": {"networking": {"corefileTemplate": None, "address": "127.0.0.1"},
                                         "metrics": {"aggregate": []}}}
    return 200, json.dumps(body).encode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StubCp:
    """Answers from `script` in order (the last one repeats); records what it received."""
    directory: Path
    script: list[tuple[int, bytes]] = field(default_factory=list)
    tls: bool = True
    received: list[Received] = field(default_factory=list)

    def start(self) -> "StubCp":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                              json.loads(raw)))
                status, body = stub.script[0] if len(stub.script) == 1 else stub.script.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", "application/json" if body[:1] in b"{[" else "text/plain")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.cert, self.key = self_signed(self.directory)
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
