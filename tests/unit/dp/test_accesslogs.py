"""kuma-dp's access log streamer: lines Envoy writes to the pipe reach the TCP address they name."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from appliance.dp.accesslogs import AccessLogStreamer, parse_line


def test_a_text_message_is_sent_as_written() -> None:
    assert parse_line(b'{"address":"127.0.0.1:5000","message":"GET / 200\\n"}\n') == ("127.0.0.1:5000", b"GET / 200\n")


def test_a_json_message_is_sent_as_go_writes_it() -> None:
    line = b'{"message":{"src":"web","dst":"a<b"},"address":"logs:9"}\n'
    assert parse_line(line) == ("logs:9", b'{"dst":"a\\u003cb","src":"web"}\n')


def test_the_legacy_format_and_junk() -> None:
    assert parse_line(b"10.0.0.1:5000;hello\n") == ("10.0.0.1:5000", b"hello\n")
    assert parse_line(b"no separator\n") is None
    assert parse_line(b"[1, 2]\n") is None


@pytest.fixture
def receiver() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    yield server
    server.close()


def _read_lines(conn: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        chunk = conn.recv(4096)
        assert chunk, "the streamer closed the connection"
        data += chunk
    return data.splitlines()


def test_lines_written_to_the_pipe_reach_their_address(tmp_path: Path, receiver: socket.socket) -> None:
    address = "127.0.0.1:%d" % receiver.getsockname()[1]
    streamer = AccessLogStreamer(str(tmp_path / "kuma-al-web-1-default.sock"))
    streamer.start()
    try:
        mode = os.stat(streamer.path).st_mode
        assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600   # only Envoy (our user) may write
        with open(streamer.path, "wb", buffering=0) as pipe:   # as Envoy does: open, append lines
            pipe.write(b'{"address":"%s","message":"first\\n"}\n' % address.encode())
            pipe.write(b'{"address":"127.0.0.1:1","message":"nobody listens\\n"}\n')
            pipe.write(b'{"address":"%s","message":{"n":2}}\n' % address.encode())
        conn, _ = receiver.accept()
        with conn:
            conn.settimeout(10)
            assert _read_lines(conn, 2) == [b"first", b'{"n":2}']
    finally:
        streamer.stop()
    assert not os.path.exists(streamer.path)
