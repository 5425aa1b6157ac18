"""The HTTPS API (apiServer.https, :5682): TLS in front of a private waitress server.

waitress speaks plain HTTP only, so a small front accepts the TLS connections (handshake with a
deadline, client certificate when required), then relays each one to a waitress server that
listens on 127.0.0.1 at a port of its own. The API must still see who is calling: the front
records, by the local port of its relay connection, the client's address, and a WSGI layer gives
the API that address (REMOTE_ADDR) and `https` as the scheme. A request that did not come through
the front (someone on this host dialling the private port) finds no record and is refused, so the
private port never turns a remote client into "localhost".

One thread per connection, at most MAX_CONNECTIONS at once (the API is for operators and kumactl,
not for proxies); a connection idle for IDLE_TIMEOUT is closed.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from appliance.gocompat import GO_TLS_CIPHER_SUITES
from appliance.runtime.http import BindError, HttpServer
from appliance.runtime.splice import listening_sockets

log = logging.getLogger("appliance.https")

MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
_CHUNK = 64 * 1024
_VERSIONS = {"TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}
_TLS13_SUITES = {0x1301, 0x1302, 0x1303}


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str
    ca_file: str = ""               # the CA of client certificates
    require_client_cert: bool = False
    min_version: str = "TLSv1_2"    # "" = TLS 1.2, as Go's default for servers
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()   # Go names; TLS 1.3 suites are always on, as in Go


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The TLS context of the HTTPS API; ValueError with one line naming the file or setting."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load the certificate {settings.cert_file} and key {settings.key_file}: "
                         f"{getattr(e, 'strerror', None) or e}")
    ctx.minimum_version = _VERSIONS.get(settings.min_version, ssl.TLSVersion.TLSv1_2)
    if settings.max_version:
        ctx.maximum_version = _VERSIONS[settings.max_version]
    if settings.cipher_suites:
        _set_cipher_suites(ctx, settings.cipher_suites)
    if settings.ca_file:
        try:
            ctx.load_verify_locations(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load the client CA file {settings.ca_file} (apiServer.https.tlsCaFile): "
                             f"{getattr(e, 'strerror', None) or e}")
    ctx.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _set_cipher_suites(ctx: ssl.SSLContext, names: Iterable[str]) -> None:
    """Go's names to OpenSSL's, by IANA code point. Only TLS 1.2 suites can be chosen (as in Go); a
    list of TLS 1.3 suites only leaves no TLS 1.2 suite, so TLS 1.3 becomes the minimum."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    openssl = {c["id"] & 0xFFFF: c["name"] for c in probe.get_ciphers()}
    chosen = []
    for name in names:
        code = GO_TLS_CIPHER_SUITES[name]
        if code in _TLS13_SUITES:
            continue
        if code not in openssl:
            raise ValueError(f"TLS cipher suite {name} (apiServer.https.tlsCipherSuites) is not available in "
                             f"this build's OpenSSL")
        chosen.append(openssl[code])
    if chosen:
        ctx.set_ciphers(":".join(chosen))
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3


@dataclass(frozen=True)
class _Client:
    address: str
    port: int


class HttpsServer:
    """The HTTPS API: TLS on (host, port), the WSGI app behind it on a private waitress server."""

    def __init__(self, app: Callable, host: str, port: int, threads: int, context: ssl.SSLContext) -> None:
        self._clients: dict[int, _Client] = {}   # relay connection's local port -> the real client
        self._lock = threading.Lock()
        self._backend = HttpServer(_FromFront(app, self._client_of), "127.0.0.1", 0, threads)
        try:
            self._sockets = listening_sockets(host, port)
        except OSError as e:
            self._backend.stop()
            raise BindError(e.strerror or str(e)) from e
        for sock in self._sockets:
            sock.setblocking(True)
        self._context = context
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    def start(self) -> "HttpsServer":
        self._backend.start()
        for sock in self._sockets:
            thread = threading.Thread(target=self._accept, args=(sock,), name=f"https-{self.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() below
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._backend.stop()

    def _client_of(self, local_port: int) -> _Client | None:
        with self._lock:
            return self._clients.get(local_port)

    def _accept(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, address = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()   # over MAX_CONNECTIONS: refuse rather than queue without bound
                continue
            threading.Thread(target=self._serve, args=(conn, address), daemon=True, name="https-conn").start()

    def _serve(self, raw: socket.socket, address: tuple) -> None:
        relay: socket.socket | None = None
        local_port = 0
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT)
            try:
                tls = self._context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("HTTPS API: TLS handshake with %s failed: %s", address[0], e)
                return
            raw = tls
            relay = socket.create_connection(("127.0.0.1", self._backend.port), timeout=HANDSHAKE_TIMEOUT)
            local_port = relay.getsockname()[1]
            with self._lock:
                self._clients[local_port] = _Client(address[0], address[1])
            tls.settimeout(IDLE_TIMEOUT)
            relay.settimeout(IDLE_TIMEOUT)
            _relay(tls, relay)
        except OSError as e:
            log.debug("HTTPS API: connection from %s ended: %s", address[0], e)
        finally:
            if local_port:
                with self._lock:
                    self._clients.pop(local_port, None)
            for s in (relay, raw):
                if s is not None:
                    s.close()
            self._slots.release()


def _relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Bytes both ways until either side closes or both stay idle for IDLE_TIMEOUT.

    One thread per connection, so the TLS object is never used by two threads at once; bytes that
    OpenSSL already decrypted (pending) are read before waiting on the socket again."""
    while True:
        if tls.pending():
            ready = [tls]
        else:
            ready, _, _ = select.select([tls, plain], [], [], IDLE_TIMEOUT)
            if not ready:
                return
        if tls in ready:
            try:
                data = tls.recv(_CHUNK)
            except ssl.SSLWantReadError:
                data = None   # a TLS record not complete yet, or a TLS 1.3 ticket: nothing for the app
            if data == b"":
                return
            if data:
                plain.sendall(data)
        if plain in ready:
            data = plain.recv(_CHUNK)
            if not data:
                return
            tls.sendall(data)


class _FromFront:
    """WSGI: the caller as the TLS front saw them; a request that bypassed the front gets 403."""

    def __init__(self, app: Callable, client_of: Callable[[int], _Client | None]) -> None:
        self.app = app
        self.client_of = client_of

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        client = self.client_of(int(environ.get("REMOTE_PORT") or 0)) \
            if environ.get("REMOTE_ADDR") == "127.0.0.1" else None
        if client is None:
            body = (b'{"type":"/std-errors","status":403,"title":"Access Denied",'
                    b'"detail":"this port only serves the HTTPS front (apiServer.https)"}')
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        environ["REMOTE_ADDR"] = client.address
        environ["REMOTE_HOST"] = client.address
        environ["REMOTE_PORT"] = str(client.port)
        environ["wsgi.url_scheme"] = "https"
        environ["HTTPS"] = "on"
        return self.app(environ, start_response)
