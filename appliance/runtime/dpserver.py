"""The DP server on :5678: one TLS port for both `POST /bootstrap` (HTTP/1.1) and ADS (gRPC, h2).

TLS does not end on this port. The front (splice.py, a thread of its own) reads the client's TLS
ClientHello, picks the backend by the protocols it offers (ALPN "h2": ADS, anything else:
bootstrap) and splices the raw bytes to it: the gRPC server terminates TLS itself, in its C core
and off the event loop, and the bootstrap server (HTTP/1.1, once per kuma-dp start) terminates it
in asyncio. Both backends listen on abstract unix sockets and present the same certificate, so a
client verifies the DP server's certificate exactly as if TLS ended here.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from typing import Awaitable, Callable

import orjson

from appliance.runtime.splice import Splicer, listening_sockets

log = logging.getLogger("appliance.dpserver")

# (method, path, headers, body) -> (status, content type, body)
HttpHandler = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, str, bytes]]]
MAX_BODY = 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


def socket_name(what: str) -> str:
    """A fresh abstract unix socket name for one of the DP server's backends."""
    return f"kuma-cp-{what}-{secrets.token_hex(6)}"


class NotTls(ValueError):
    """The first bytes of a connection are not a TLS ClientHello."""


def client_hello_alpn(data: bytes) -> list[str] | None:
    """The ALPN protocols a TLS ClientHello offers (empty without the extension), or None while
    `data` does not yet hold the whole ClientHello. Raises NotTls when it cannot be one."""
    handshake = bytearray()
    at = 0
    while True:   # the handshake message may span several records
        if len(data) < at + 5:
            return None
        if data[at] != 0x16 or data[at + 1] != 3:
            raise NotTls("not a TLS handshake record")
        length = int.from_bytes(data[at + 3:at + 5], "big")
        if len(data) < at + 5 + length:
            return None
        handshake += data[at + 5:at + 5 + length]
        at += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 1:
                raise NotTls("the first handshake message is not a ClientHello")
            if len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                break
    try:
        return _alpn(bytes(handshake[4:4 + int.from_bytes(handshake[1:4], "big")]))
    except IndexError:
        raise NotTls("truncated ClientHello") from None


def _alpn(hello: bytes) -> list[str]:
    at = 2 + 32                                             # version, random
    at += 1 + hello[at]                                     # session id
    at += 2 + int.from_bytes(hello[at:at + 2], "big")       # cipher suites
    at += 1 + hello[at]                                     # compression methods
    if at >= len(hello):
        return []                                           # no extensions
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(hello[at:at + 2], "big"), int.from_bytes(hello[at + 2:at + 4], "big")
        body = hello[at + 4:at + 4 + size]
        at += 4 + size
        if kind == 16:   # application_layer_protocol_negotiation
            protocols, k = [], 2
            while k < len(body):
                protocols.append(body[k + 1:k + 1 + body[k]].decode("latin-1"))
                k += 1 + body[k]
            return protocols
    return []


class DpServer:
    def __init__(self, host: str, port: int, cert_file: str, key_file: str, grpc_abstract_name: str,
                 handle_http: HttpHandler) -> None:
        """`grpc_abstract_name`: where the gRPC server listens, terminating TLS with the same certificate."""
        self.host, self.port = host, port
        self.grpc_name = grpc_abstract_name
        self.http_name = socket_name("bootstrap")
        self.handle_http = handle_http
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(cert_file, key_file)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl.set_alpn_protocols(["http/1.1"])
        self._http_server: asyncio.base_events.Server | None = None
        self._front: Splicer | None = None

    async def start(self) -> None:
        """Listen (an error, e.g. the port in use, raises here) and serve."""
        self._http_server = await asyncio.start_unix_server(self._connection, "\0" + self.http_name, ssl=self.ssl)
        self._front = Splicer(listening_sockets(self.host, self.port), self._route)
        self._front.start()

    @property
    def addresses(self) -> list[tuple]:
        return [s.getsockname() for s in self._front.listeners.values()] if self._front else []

    def _route(self, hello: bytes) -> str | None:
        alpn = client_hello_alpn(hello)
        if alpn is None:
            return None
        return self.grpc_name if "h2" in alpn else self.http_name

    async def stop(self) -> None:
        if self._front:
            await asyncio.get_running_loop().run_in_executor(None, self._front.stop)
        if self._http_server:
            self._http_server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._http(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, _ = lines[0].split(" ", 2)
        except ValueError:
            return await self._reply(writer, 400, "text/plain", b"malformed request line")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            return await self._reply(writer, 413, "text/plain", b"request body too large")
        body = await reader.readexactly(length) if length else b""
        try:
            status, content_type, payload = await self.handle_http(method, path.split("?")[0], headers, body)
        except Exception:
            log.exception("bootstrap request failed")
            status, content_type, payload = 500, "application/json", orjson.dumps({"title": "Internal Server Error"})
        await self._reply(writer, status, content_type, payload)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()
