"""The monitoring assignment server on :5676 (Kuma 2.14's `monitoringAssignmentServer`).

- `POST /v3/discovery:monitoringassignments`: Kuma's MADS v1 over HTTP, as Prometheus' `kuma_sd` speaks it
  (discovery/xds): a DiscoveryRequest in JSON (node.id = the client id), a DiscoveryResponse in JSON back. A
  request carrying the current version waits up to `fetch-timeout` (default `defaultFetchTimeout`) for a
  change and answers 304 Not Modified when nothing changed.
- the same over gRPC (`FetchMonitoringAssignments`, runtime/mads_grpc.py), on the same port as Kuma serves it:
  a front reads each connection's first bytes and hands an HTTP/2 preface to gRPC, anything else to HTTP.
- `GET /http_sd[?mesh=NAME]`: the same assignments in Prometheus' generic HTTP SD format (`http_sd_configs`),
  for any Prometheus, including those built without kuma_sd.
What is assigned is xds/mads.py's to decide; this module reads the store and answers.
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
import falcon
import grpc

from appliance.api.errors import KumaError, install
from appliance.core.events import Change
from appliance.gocompat import parse_seconds
from appliance.runtime import mads_grpc
from appliance.runtime.dpserver import socket_name
from appliance.runtime.http import HttpServer
from appliance.runtime.splice import Splicer, listening_sockets
from appliance.store import ListQuery, Store, StoreUnavailable
from appliance.xds import mads
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

PATH = "/v3/discovery:monitoringassignments"
# types whose changes never change an assignment
_IGNORED = {"DataplaneInsight", "ZoneEgressInsight", "GlobalSecret", "Secret"}


def load_meshes(store: Store, mesh: str | None = None) -> list[mads.Mesh]:
    revision = store.revision()
    out = []
    for m in store.list(ListQuery(type="Mesh")).items:
        if mesh is not None and m.name != mesh:
            continue
        snapshot = build_snapshot(store, m.name, revision)
        if snapshot is None:
            continue
        proxies = [proxy_from_dataplane(dp) for dp in store.list(ListQuery(type="Dataplane", mesh=m.name)).items]
        out.append((snapshot, sorted(proxies, key=lambda p: p.name)))
    return out


class _Changes:
    """Wakes long-polling requests when the store changes (no polling of the store)."""

    def __init__(self, store: Store) -> None:
        self._condition = threading.Condition()
        self._count = 0
        self.unsubscribe = store.hub.subscribe(self._changed)

    def _changed(self, changes: list[Change]) -> None:
        if any(c.type not in _IGNORED for c in changes):
            with self._condition:
                self._count += 1
                self._condition.notify_all()

    @property
    def count(self) -> int:
        return self._count

    def wait_after(self, seen: int, deadline: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._count != seen, max(0.0, deadline - time.monotonic()))


class MonitoringAssignments:
    def __init__(self, store: Store, default_fetch_timeout: float) -> None:
        self.store = store
        self.default_fetch_timeout = default_fetch_timeout
        self.changes = _Changes(store)
        self._nonces = itertools.count(1)

    def _assignments(self, client_id: str) -> list[mads.Assignment]:
        try:
            return mads.assignments(load_meshes(self.store), client_id)
        except StoreUnavailable as e:
            raise KumaError(503, "Could not fetch MonitoringAssignments", str(e))

    def current(self, client_id: str) -> tuple[list[mads.Assignment], str]:
        found = mads.assignments(load_meshes(self.store), client_id)
        return found, mads.version(found)

    def nonce(self) -> str:
        return format(next(self._nonces), "x")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            request = json.loads(req.bounded_stream.read() or b"{}")
            if not isinstance(request, dict):
                raise ValueError("a DiscoveryRequest must be a JSON object")
            node = request.get("node") or {}
            client_id = str(node.get("id") or "") if isinstance(node, dict) else ""
            known = str(request.get("version_info") or request.get("versionInfo") or "")
        except (ValueError, UnicodeDecodeError) as e:
            raise KumaError(400, "Could not parse request body", str(e))
        timeout_text = req.get_param("fetch-timeout")
        try:
            timeout = parse_seconds(timeout_text) if timeout_text else self.default_fetch_timeout
        except ValueError as e:
            raise KumaError(400, "Could not parse fetch-timeout", str(e))
        deadline = time.monotonic() + timeout
        while True:
            seen = self.changes.count
            found = self._assignments(client_id)
            version = mads.version(found)
            if version != known or timeout <= 0:
                break
            if not self.changes.wait_after(seen, deadline):
                resp.status = falcon.HTTP_304
                return
        resp.content_type = "application/json"
        resp.text = json.dumps({"version_info": version, "resources": [mads.resource_json(a) for a in found],
                                "type_url": mads.ASSIGNMENT_TYPE, "nonce": self.nonce()})


class HttpSd:
    def __init__(self, store: Store) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        mesh = req.get_param("mesh")
        try:
            meshes = load_meshes(self.store, mesh)
        except StoreUnavailable as e:
            raise KumaError(503, "Service Unavailable", str(e))
        if mesh is not None and not meshes:
            raise KumaError(404, "Not found", f"mesh {mesh!r} not found")
        resp.content_type = "application/json"
        resp.text = json.dumps(mads.http_sd(mads.assignments(meshes)))


def create_app(assignments: MonitoringAssignments) -> falcon.App:
    app = falcon.App()
    install(app)   # every failure in Kuma's error body
    app.add_route(PATH, assignments)
    app.add_route("/http_sd", HttpSd(assignments.store))
    return app


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class MadsServer:
    """HTTP and gRPC on one port (Kuma's monitoringAssignmentServer.port), each behind the front on a unix socket
    of its own. Binding the port raises OSError here, so that start-up stops on a port in use."""

    def __init__(self, store: Store, host: str, port: int, default_fetch_timeout: float, threads: int = 8) -> None:
        self.assignments = MonitoringAssignments(store, default_fetch_timeout)
        self.http_name, self.grpc_name = socket_name("mads-http"), socket_name("mads-grpc")
        http_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        http_socket.bind("\0" + self.http_name)
        http_socket.listen(128)
        self.http = HttpServer(create_app(self.assignments), "", 0, threads, sockets=[http_socket])
        self.grpc = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="mads-grpc"),
                                options=[("grpc.so_reuseport", 0)])
        self.grpc.add_generic_rpc_handlers((mads_grpc.handler(self.assignments.current, self.assignments.nonce),))
        self.grpc.add_insecure_port("unix-abstract:" + self.grpc_name)
        self.front = Splicer(listening_sockets(host, port), self._route)

    def _route(self, first: bytes) -> str | None:
        if len(first) < len(H2_PREFACE) and H2_PREFACE.startswith(first):
            return None   # could still be gRPC: read on
        return self.grpc_name if first.startswith(H2_PREFACE) else self.http_name

    def start(self) -> None:
        self.http.start()
        self.grpc.start()
        self.front.start()

    def stop(self) -> None:
        self.front.stop()
        self.grpc.stop(1).wait(2)
        self.http.stop()
        self.assignments.changes.unsubscribe()
