"""A proxy's Envoy admin views, as Kuma 2.14 serves them: `GET /meshes/{mesh}/dataplanes/{name}/xds|stats|clusters`
and `GET /zoneegresses/{name}/xds|stats|clusters`.

The control plane asks the proxy's `kuma:envoy:admin` listener (xds/generate/admin.py) at the proxy's
address and admin port (`networking.admin.port`, default 9901), over mutual TLS with its client certificate
from the Envoy admin CA; the proxy's certificate must come from that CA and name the address. A proxy at
127.0.0.1 has no such listener: its Envoy admin is asked directly over HTTP, as Kuma does, after checking
(`/server_info`) that the Envoy there is this proxy's: another proxy's admin on that port (or one whose
admin is a Unix socket, which the control plane cannot reach) is an error, not another proxy's answer.

Config dumps pass `sanitize` first: Envoy redacts private keys itself, and the dataplane token in the
bootstrap (which Envoy shows as it is) is replaced, as Kuma's inspector does.
"""
from __future__ import annotations

import http.client
import os
import re
import ssl
import tempfile
import threading
from typing import Any
from urllib.parse import urlencode

import falcon
import orjson

from appliance.api import auth
from appliance.api.errors import KumaError
from appliance.ca.envoy_admin import EnvoyAdminCa, issue_client_cert
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.xds.admin_tls import load_admin_ca
from appliance.xds.snapshot import DEFAULT_ADMIN_PORT

TIMEOUT = 5.0
REDACTED = "[redacted]"
# view path segment -> (Envoy admin path, access list)
VIEWS = {"xds": ("config_dump", "viewConfigDump"), "stats": ("stats", "viewStats"),
         "clusters": ("clusters", "viewClusters")}
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_SECRET_FIELDS = {"private_key", "privateKey", "password"}


class AdminUnreachable(Exception):
    pass


def _tokens(node: Any, found: set[str]) -> None:
    """Every `authorization` value of gRPC initial metadata (the dataplane token, in the bootstrap)."""
    if isinstance(node, dict):
        for key in ("initial_metadata", "initialMetadata"):
            for header in node.get(key) or ():
                if isinstance(header, dict) and str(header.get("key", "")).lower() == "authorization":
                    found.add(str(header.get("value", "")))
        for value in node.values():
            _tokens(value, found)
    elif isinstance(node, list):
        for value in node:
            _tokens(value, found)


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ({"inline_string": REDACTED} if k in _SECRET_FIELDS and isinstance(v, dict) else _mask(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v) for v in node]
    return node


def sanitize(config_dump: bytes) -> bytes:
    """The config dump without tokens or private keys: each token replaced wherever it appears, every
    private key field (Envoy's own redaction, kept) and PEM private key masked."""
    dump = orjson.loads(config_dump)
    tokens: set[str] = set()
    _tokens(dump, tokens)
    text = orjson.dumps(_mask(dump), option=orjson.OPT_INDENT_2).decode()
    for token in sorted(filter(None, tokens), key=len, reverse=True):
        text = text.replace(token, REDACTED)
    return _PEM_KEY.sub(REDACTED, text).encode()


class EnvoyAdminClient:
    """GETs from proxies' Envoy admin APIs through their `kuma:envoy:admin` listeners."""

    def __init__(self, manager: ResourceManager, timeout: float = TIMEOUT) -> None:
        self.manager = manager
        self.timeout = timeout
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        """The client context, built once (as Kuma: a new Envoy admin CA needs a restart)."""
        with self._lock:
            if self._context is None:
                ca = load_admin_ca(self.manager.store)
                if ca is None:
                    raise AdminUnreachable("the Envoy admin CA (GlobalSecret envoy-admin-ca) does not exist yet")
                self._context = _client_context(ca)
            return self._context

    def get(self, node_id: str, address: str, port: int, path: str, query: list[tuple[str, str]]) -> bytes:
        """GET `path` from the admin API of the proxy `node_id` (its Envoy node id) at `address`:`port`."""
        if address != "127.0.0.1":
            return self._get(http.client.HTTPSConnection(address, port, timeout=self.timeout, context=self._tls()),
                             path, query)
        found = _node_id(self._get(http.client.HTTPConnection(address, port, timeout=self.timeout), "server_info", []))
        if found != node_id:
            raise AdminUnreachable(f"the Envoy admin API at {_host_port(address, port)} is not this proxy's (it is "
                                   f"{found or 'unknown'}'s): give the proxy its own networking.admin.port")
        return self._get(http.client.HTTPConnection(address, port, timeout=self.timeout), path, query)

    @staticmethod
    def _get(conn: http.client.HTTPConnection, path: str, query: list[tuple[str, str]]) -> bytes:
        target = f"/{path}" + (f"?{urlencode(query)}" if query else "")
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise AdminUnreachable(f"cannot reach the Envoy admin API at {_host_port(conn.host, conn.port)}: "
                                   f"{getattr(e, 'reason', None) or getattr(e, 'strerror', None) or e}") from None
        finally:
            conn.close()
        if response.status != 200:
            raise AdminUnreachable(f"envoy response [{response.status} {response.reason}]")
        return body


def _node_id(server_info: bytes) -> str:
    """The node id in Envoy's `/server_info` ("" when it is not Envoy's answer)."""
    try:
        info = orjson.loads(server_info)
    except orjson.JSONDecodeError:
        return ""
    node = info.get("node") if isinstance(info, dict) else None
    return str(node.get("id") or "") if isinstance(node, dict) else ""


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _client_context(ca: EnvoyAdminCa) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.cert_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert_pem, key_pem = issue_client_cert(ca)
    # ssl loads a key only from a file: a private one, gone as soon as it is read
    with tempfile.TemporaryDirectory(prefix="kuma-admin-") as directory:
        path = os.path.join(directory, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    return context


def _query(req: falcon.Request, view: str) -> list[tuple[str, str]]:
    """Kuma's query parameters for each view, passed on to Envoy."""
    def flag(name: str, default: bool) -> bool:
        value = (req.get_param(name) or "").lower()
        return {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}.get(value, default)
    if view == "xds":
        return [("include_eds", "true")] if flag("include_eds", False) else []
    query = [("format", "json")] if req.get_param("format") == "json" else []
    if view == "stats" and flag("usedonly", True):
        query.append(("usedonly", ""))
    return query


class AdminView:
    """One view of one kind of proxy; `find` gives the proxy's resource (or raises Kuma's 404)."""

    def __init__(self, manager: ResourceManager, client: EnvoyAdminClient, view: str, type_name: str) -> None:
        self.manager = manager
        self.client = client
        self.view = view
        self.type_name = type_name

    def _find(self, mesh: str, name: str) -> Resource:
        found = self.manager.get(self.type_name, mesh, name)
        if found is None:
            # Kuma's titles, its zone egress one included
            what = "dataplane" if self.type_name == "Dataplane" else "zone ingress"
            raise KumaError(404, f"Could not get {what} resource", "Not found")
        return found

    def respond(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        envoy_path, access = VIEWS[self.view]
        auth.require_view(req, access)   # before the lookup, as Kuma: no probing for names without access
        proxy = self._find(mesh, name)
        networking = proxy.content.get("networking") or {}
        port = int((networking.get("admin") or {}).get("port") or DEFAULT_ADMIN_PORT)
        try:
            body = self.client.get(f"{mesh}.{name}", str(networking.get("address") or ""), port, envoy_path,
                                   _query(req, self.view))
            if self.view == "xds":
                body = sanitize(body)
        except (AdminUnreachable, ValueError) as e:
            raise KumaError(500, "Could not execute admin operation", str(e))
        json_out = self.view == "xds" or req.get_param("format") == "json"
        resp.content_type = "application/json" if json_out else "text/plain"
        resp.data = body


class DataplaneAdminView(AdminView):
    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        self.respond(req, resp, mesh, name)


class ZoneEgressAdminView(AdminView):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.respond(req, resp, "", name)


def add_routes(app: falcon.App, manager: ResourceManager) -> None:
    client = EnvoyAdminClient(manager)
    for view in VIEWS:
        app.add_route(f"/meshes/{{mesh}}/dataplanes/{{name}}/{view}",
                      DataplaneAdminView(manager, client, view, "Dataplane"))
        app.add_route(f"/zoneegresses/{{name}}/{view}", ZoneEgressAdminView(manager, client, view, "ZoneEgress"))
