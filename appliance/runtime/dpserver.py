"""The DP server on :5678: one TLS port for both `POST /bootstrap` (HTTP/1.1) and ADS (gRPC, h2).

TLS ends here; ALPN picks the protocol. h2 connections are relayed, already decrypted, to the
gRPC server listening on an abstract unix socket; HTTP/1.1 requests are answered directly.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from typing import Awaitable, Callable

import orjson

log = logging.getLogger("appliance.dpserver")

# (method, path, headers, body, client host) -> (status, content type, body)
HttpHandler = Callable[[str, str, dict[str, str], bytes, str], Awaitable[tuple[int, str, bytes]]]
MAX_BODY = 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


def grpc_socket_name() -> str:
    return f"kuma-cp-xds-{secrets.token_hex(6)}"


class DpServer:
    def __init__(self, host: str, port: int, cert_file: str, key_file: str, grpc_abstract_name: str,
                 handle_http: HttpHandler) -> None:
        self.host, self.port = host, port
        self.grpc_name = grpc_abstract_name
        self.handle_http = handle_http
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(cert_file, key_file)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl.set_alpn_protocols(["h2", "http/1.1"])
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.ssl,
                                                  reuse_address=True, backlog=4096)

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
        try:
            if alpn == "h2":
                await self._relay(reader, writer)
            else:
                await self._http(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection("\0" + self.grpc_name)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                try:
                    dst.write_eof() if dst.can_write_eof() else dst.close()
                except (OSError, RuntimeError):
                    pass

        tasks = [asyncio.ensure_future(copy(reader, up_writer)), asyncio.ensure_future(copy(up_reader, writer))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            up_writer.close()

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
        peer = writer.get_extra_info("peername")
        try:
            status, content_type, payload = await self.handle_http(method, path.split("?")[0], headers, body,
                                                                   peer[0] if peer else "")
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
