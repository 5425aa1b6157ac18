"""kuma-dp's embedded DNS proxy: Kuma's /dns table answered on a real UDP socket, everything else sent
to an upstream resolver (a stand-in function here), and the table re-read from a `_kuma:dynamicconfig`
route with its ETag."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler
import socketserver
from pathlib import Path
from typing import Any, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from appliance.dp.config import DpError
from appliance.dp.dnsproxy import PATH, DnsProxy, Table, answer, table_from, upstream
from appliance.dp.metrics import DynamicConfig
from tests.support import eventually

# Kuma's DNSProxyConfig as its dns_generator writes it: IPv4 VIPs and their IPv6 (::ffff:) forms, TTL 30
TABLE = {"records": [{"name": "backend.mesh", "ips": ["240.0.0.1", "::ffff:f000:1"]},
                     {"name": "web.mesh", "ips": ["240.0.0.2"]},
                     {"name": "bad.mesh", "ips": ["not-an-ip", "240.0.0.3"]}],
         "ttl": 30, "extraLabels": {"mesh": "default"}}


def _upstream(query: dns.message.Message) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text(query.question[0].name, 123, "IN", "A", "17.0.0.1"))
    return reply


def _ask(name: str, rdtype: str, table: dict[str, Any] = TABLE) -> dns.message.Message:
    return answer(dns.message.make_query(name, rdtype), table_from(table), _upstream)


def _ips(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def test_mesh_names_answer_with_their_vips_and_other_names_go_upstream() -> None:
    reply = _ask("backend.mesh.", "A")
    assert (reply.rcode(), _ips(reply), reply.answer[0].ttl) == (dns.rcode.NOERROR, ["240.0.0.1"], 30)
    assert reply.flags & dns.flags.AA
    assert _ips(_ask("backend.mesh.", "AAAA")) == ["::ffff:240.0.0.1"]
    assert _ips(_ask("BACKEND.Mesh.", "A")) == ["240.0.0.1"]      # DNS names have no case
    nodata = _ask("web.mesh.", "AAAA")                              # a mesh name without IPv6: no answer, no error
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert _ips(_ask("bad.mesh.", "A")) == ["240.0.0.3"]            # a bad address is skipped, not the record
    assert _ips(_ask("example.com.", "A")) == ["17.0.0.1"]          # not the mesh's: the host's resolver
    assert _ips(_ask("backend.mesh.", "MX")) == ["17.0.0.1"]        # only A and AAAA are the mesh's


def test_an_upstream_that_fails_is_servfail() -> None:
    def failing(query: dns.message.Message) -> dns.message.Message:
        raise dns.exception.Timeout()

    reply = answer(dns.message.make_query("example.com.", "A"), Table(), failing)
    assert (reply.rcode(), reply.answer) == (dns.rcode.SERVFAIL, [])


def test_upstream_is_the_first_nameserver_of_resolv_conf(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("# comment\nsearch example\n")
    with pytest.raises(DpError, match="no server found in"):
        upstream(str(tmp_path / "resolv.conf"))
    with pytest.raises(DpError, match="failed to read DNS for"):
        upstream(str(tmp_path / "absent"))


@pytest.fixture
def proxy() -> Iterator[tuple[DnsProxy, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = DnsProxy([("127.0.0.1", port)], _upstream)
    server.start()
    try:
        yield server, port
    finally:
        server.stop()


def test_answers_over_udp_and_a_new_table_takes_over(proxy: tuple[DnsProxy, int]) -> None:
    server, port = proxy

    def ask(name: str) -> list[str]:
        return _ips(dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5))

    assert ask("backend.mesh.") == ["17.0.0.1"]        # no table yet: everything goes upstream
    server.set_table(table_from(TABLE))
    assert ask("backend.mesh.") == ["240.0.0.1"] and ask("example.com.") == ["17.0.0.1"]
    server.set_table(table_from({"records": [], "ttl": 30}))
    assert ask("backend.mesh.") == ["17.0.0.1"]
    # garbage is not answered; the proxy goes on
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00", ("127.0.0.1", port))
    assert ask("web.mesh.") == ["17.0.0.1"]


class _DynConf:
    """Envoy's `_kuma:dynamicconfig` listener in miniature: /dns with an ETag, 304 when it matches."""

    def __init__(self, path: str) -> None:
        self.doc: dict[str, Any] = TABLE
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # noqa: N802
                owner.requests += 1
                body = json.dumps(owner.doc).encode()
                etag = hashlib.sha256(body).hexdigest()
                if self.path != PATH:
                    self.send_response(404)
                    body = b""
                elif self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    body = b""
                else:
                    self.send_response(200)
                    self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_table_is_read_from_envoys_dns_route_and_refreshed(proxy: tuple[DnsProxy, int], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server, port = proxy
    server.stop()
    monkeypatch.setattr("appliance.dp.dnsproxy.REFRESH_INTERVAL", 0.05)
    envoy = _DynConf(str(tmp_path / "dynconf.sock"))
    try:
        server.start(DynamicConfig(str(tmp_path / "dynconf.sock"), PATH))

        def ask() -> list[str]:
            return _ips(dns.query.udp(dns.message.make_query("web.mesh.", "A"), "127.0.0.1", port=port, timeout=5))

        eventually(lambda: ask() == ["240.0.0.2"], "the first table")
        envoy.doc = {"records": [{"name": "web.mesh", "ips": ["240.0.0.9"]}], "ttl": 30}
        eventually(lambda: ask() == ["240.0.0.9"], "the changed table")
        seen = envoy.requests
        eventually(lambda: envoy.requests > seen + 2, "more polls")   # polled on, unchanged (304): the table stays
        assert ask() == ["240.0.0.9"]
    finally:
        envoy.server.shutdown()
        envoy.server.server_close()

