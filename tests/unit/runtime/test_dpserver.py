"""The DP server's front: one TLS port, routed by the ClientHello's ALPN, bytes spliced to the backends.

Real TLS over 127.0.0.1 and abstract unix sockets; the gRPC backend is a stand-in TLS server that
says which protocol it negotiated (the real ADS server has its own tests)."""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from appliance.ca.server_cert import ensure_server_cert
from appliance.runtime.dpserver import DpServer, NotTls, client_hello_alpn, socket_name


def _hello(alpn: list[str] | None) -> bytes:
    """The bytes a real TLS client sends first."""
    context = ssl.create_default_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_client_hello_alpn() -> None:
    hello = _hello(["h2", "http/1.1"])
    assert client_hello_alpn(hello) == ["h2", "http/1.1"]
    assert client_hello_alpn(_hello(None)) == []
    for cut in (0, 3, 5, len(hello) - 1):
        assert client_hello_alpn(hello[:cut]) is None   # not all there yet
    with pytest.raises(NotTls):
        client_hello_alpn(b"POST /bootstrap HTTP/1.1\r\n")


def test_client_hello_alpn_across_records() -> None:
    hello = _hello(["h2"])
    body = hello[5:]
    split = hello[:3] + (20).to_bytes(2, "big") + body[:20] + hello[:3] + (len(body) - 20).to_bytes(2, "big") + body[20:]
    assert client_hello_alpn(split[:30]) is None
    assert client_hello_alpn(split) == ["h2"]


@pytest.fixture
def cert(tmp_path: Path):
    return ensure_server_cert(tmp_path, [], [])


def test_front_routes_by_alpn_and_the_client_verifies_the_cp_certificate(cert) -> None:
    async def scenario() -> None:
        backend_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        backend_ssl.load_cert_chain(cert.cert_path, cert.key_path)
        backend_ssl.set_alpn_protocols(["h2"])
        closed = asyncio.Event()

        async def grpc_stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"backend {writer.get_extra_info('ssl_object').selected_alpn_protocol()}\n".encode())
            await writer.drain()
            size = int(await reader.readline())
            writer.write(b"x" * size)   # more than any socket buffer holds: the front must pace it
            await writer.drain()
            await reader.read()   # until the client's side is gone
            closed.set()
            writer.close()

        grpc_name = socket_name("test")
        backend = await asyncio.start_unix_server(grpc_stand_in, "\0" + grpc_name, ssl=backend_ssl)

        async def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
            return 200, "text/plain", f"{method} {path} {body.decode()}".encode()

        front = DpServer("127.0.0.1", 0, str(cert.cert_path), str(cert.key_path), grpc_name, handle)
        await front.start()
        port = front.addresses[0][1]
        client = ssl.create_default_context(cadata=cert.ca_pem.decode())

        client.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert await reader.readline() == b"backend h2\n"
        writer.write(b"%d\n" % (8 << 20))
        assert len(await reader.readexactly(8 << 20)) == 8 << 20
        writer.close()
        await asyncio.wait_for(closed.wait(), 5)   # the backend's connection ends with the client's

        client.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        writer.write(b"POST /bootstrap HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        response = await reader.read()
        assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\nPOST /bootstrap {}")
        writer.close()

        # not TLS at all: the connection is dropped
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await front.stop()
        backend.close()

    asyncio.run(scenario())
