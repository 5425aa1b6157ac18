"""kuma-dp's embedded DNS proxy, as Kuma 2.14's (app/kuma-dp/pkg/dataplane/dnsproxy).

UDP only, on the addresses tproxy.dns_addresses gives (127.0.0.1:15053 by default, where
`kumactl install transparent-proxy --redirect-dns` sends the app's queries). An A or AAAA question for a
name of the mesh's table is answered here, authoritatively, with its virtual IPs (no IP of that family:
an empty NOERROR answer); every other question goes to the first nameserver of /etc/resolv.conf and its
answer comes back as it is (SERVFAIL when it does not answer in 2 s). kuma-dp runs as the user the
iptables rules exclude, so its own queries reach the resolver and do not come back here.

The table is Kuma's DNSProxyConfig (pkg/dns/dpapi): `{"records": [{"name", "ips"}], "ttl"}`, served by
Envoy's `_kuma:dynamicconfig` listener at /dns and re-read every second with its ETag, as Kuma's config
fetcher does. One difference: names match whatever their case (DNS names are case-insensitive; Kuma's
map lookup is exact).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from appliance.dp.config import DpError
from appliance.dp.metrics import DynamicConfig

log = logging.getLogger("kuma-dp")

PATH = "/dns"                # pkg/dns/dpapi PATH
REFRESH_INTERVAL = 1.0       # dataplane.dynamicConfiguration.refreshInterval: 1s
UPSTREAM_TIMEOUT = 2.0       # miekg/dns Client's default read timeout
RESOLV_CONF = "/etc/resolv.conf"

Forward = Callable[[dns.message.Message], dns.message.Message]


@dataclass(frozen=True)
class Table:
    """Lower-case absolute names ("backend.mesh.") to their IPv4 and IPv6 addresses."""
    a: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aaaa: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ttl: int = 0


def _family(text: str) -> tuple[str, str] | None:
    """Kuma's split: an address with a dot is an A record (an IPv4-mapped one as its IPv4), one with a
    colon an AAAA record; None for what is not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if "." in text:
        v4 = ip if ip.version == 4 else ip.ipv4_mapped   # type: ignore[union-attr]
        return ("a", str(v4)) if v4 is not None else None
    return "aaaa", str(ip)


def table_from(config: dict[str, Any]) -> Table:
    """The table of one DNSProxyConfig document."""
    a: dict[str, tuple[str, ...]] = {}
    aaaa: dict[str, tuple[str, ...]] = {}
    for record in config.get("records") or []:
        name = str(record.get("name") or "").lower().rstrip(".") + "."
        ips: dict[str, list[str]] = {"a": [], "aaaa": []}
        for text in record.get("ips") or []:
            kind = _family(str(text))
            if kind is None:
                log.warning("DNS proxy: invalid IP address %r for %s, skipped", text, name)
                continue
            ips[kind[0]].append(kind[1])
        a[name], aaaa[name] = tuple(ips["a"]), tuple(ips["aaaa"])
    return Table(a, aaaa, int(config.get("ttl") or 0))


def answer(query: dns.message.Message, table: Table, forward: Forward) -> dns.message.Message:
    """The reply to one query: from the table for its first question when that is an A/AAAA question
    for a name of the mesh, else the upstream resolver's."""
    if query.question:
        if len(query.question) > 1:
            log.info("DNS proxy: only the first of %d questions is answered", len(query.question))
        question = query.question[0]
        by_type = {dns.rdatatype.A: table.a, dns.rdatatype.AAAA: table.aaaa}.get(question.rdtype)
        ips = by_type.get(question.name.to_text().lower()) if by_type is not None else None
        if ips is not None:
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            if ips:
                reply.answer.append(dns.rrset.from_text_list(question.name, table.ttl, dns.rdataclass.IN,
                                                             question.rdtype, list(ips)))
            return reply
    try:
        return forward(query)
    except (OSError, dns.exception.DNSException) as e:
        log.warning("DNS proxy: the upstream resolver failed: %s", e)
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.SERVFAIL)
        return reply


def upstream(resolv_conf: str = RESOLV_CONF) -> Forward:
    """Kuma's upstream: the first nameserver of /etc/resolv.conf, port 53, over UDP."""
    try:
        lines = Path(resolv_conf).read_text().splitlines()
    except OSError as e:
        raise DpError(f"failed to read DNS for {resolv_conf}: {e.strerror}")
    servers = [parts[1] for parts in (line.split() for line in lines) if len(parts) > 1 and parts[0] == "nameserver"]
    if not servers:
        raise DpError(f"no server found in {resolv_conf}")
    server = servers[0]
    return lambda query: dns.query.udp(query, server, port=53, timeout=UPSTREAM_TIMEOUT)


class _Server(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "::" next to "0.0.0.0" on the same port: each family on its own socket, as Kuma binds them
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class DnsProxy:
    def __init__(self, addresses: list[tuple[str, int]], forward: Forward) -> None:
        self.addresses = addresses
        self.forward = forward
        self.config: DynamicConfig | None = None
        self.table = Table()
        self._servers: list[_Server] = []
        self._stop = threading.Event()
        self._configured = threading.Event()

    def set_table(self, table: Table) -> None:
        self.table = table      # one reference swap: a query sees the old table or the new one
        if not self._configured.is_set():
            self._configured.set()
            log.info("DNS proxy received first configuration, %d records", len(table.a))

    def handle(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None         # not a DNS query: nothing to answer
        return answer(query, self.table, self.forward).to_wire()

    def start(self, config: DynamicConfig | None = None) -> None:
        """`config`: where the table comes from (Envoy's /dns route); None leaves it to set_table."""
        self.config = config
        self._stop.clear()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = proxy.handle(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        for host, port in self.addresses:
            server_class = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in host
                                                       else socket.AF_INET})
            try:
                server = server_class((host, port), Handler)
            except OSError as e:
                if ":" in host and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    log.warning("DNS proxy: no IPv6 here (%s), listening on IPv4 only", e.strerror)
                    continue
                self.stop()
                raise DpError(f"cannot start the DNS proxy on {host}:{port}: {e.strerror or e}")
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, name=f"dns-{host}", daemon=True).start()
        if self.config is not None:
            threading.Thread(target=self._refresh, name="dns-config", daemon=True).start()
        log.info("running with embedded DNS proxy on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    def _refresh(self) -> None:
        assert self.config is not None
        last: dict[str, Any] | None = None
        while not self._stop.is_set():
            try:
                doc = self.config.current()
            except ValueError as e:
                log.warning("DNS proxy: the table from Envoy is not JSON: %s", e)
                doc = None
            if doc is not None and doc is not last:   # the same object: a 304, nothing changed
                self.set_table(table_from(doc))
                last = doc
            self._stop.wait(REFRESH_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
