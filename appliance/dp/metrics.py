"""kuma-dp's metrics hijacker: what Envoy's Prometheus listener forwards a scrape to.

As kuma-dp 2.14 (app/kuma-dp/pkg/dataplane/metrics): an HTTP server on the Unix socket
`<work dir>/kuma-mh-<name>-<mesh>.sock`, which the control plane points the listener's cluster at.
- `/meshmetric...` (MeshMetric): Envoy's stats (`usedonly` unless `sidecar.includeUnused`) filtered by the
  profiles, then each of `applications`' own metrics, all with the policy's extra labels. The settings come
  from Envoy's `_kuma:dynamicconfig` listener (another Unix socket), read on each scrape with the last ETag,
  so an unchanged config is a 304 and a changed policy shows at the next scrape.
- anything else (Mesh.metrics): Envoy's `/stats/prometheus` with the query the control plane put in the path
  (`filter=`, `usedonly`), then the metrics of the backend's `aggregate` applications, as they are.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from appliance.dp import prom_text
from appliance.dp.envoy import AdminAddress, UnixHTTPConnection

log = logging.getLogger("kuma-dp")

MESHMETRIC_PATH = "/meshmetric"
TIMEOUT = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
         ) -> tuple[int, bytes, http.client.HTTPMessage]:
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def _admin_connection(admin: AdminAddress) -> http.client.HTTPConnection:
    if admin.socket_path:
        return UnixHTTPConnection(admin.socket_path, TIMEOUT)
    return http.client.HTTPConnection(admin.host, admin.port, timeout=TIMEOUT)


class DynamicConfig:
    """One route of Envoy's `_kuma:dynamicconfig` listener: /meshmetric (MeshMetric's settings), /dns (the
    embedded DNS proxy's table). `current()` is the last document, re-read with its ETag (an unchanged one is
    the same object); None when the route or the listener is absent."""

    def __init__(self, socket_path: str, path: str = MESHMETRIC_PATH) -> None:
        self.socket_path = socket_path
        self.path = path
        self._etag = ""
        self._config: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def current(self) -> dict[str, Any] | None:
        with self._lock:
            try:
                status, body, headers = _get(UnixHTTPConnection(self.socket_path, TIMEOUT), self.path,
                                             {"If-None-Match": self._etag} if self._etag else {})
            except OSError:
                return None     # the listener is absent (no MeshMetric, no DNS for this proxy)
            if status == 200:
                self._config = json.loads(body)
                self._etag = headers.get("Etag", "")
            elif status != 304:
                return None
            return self._config


class Hijacker:
    def __init__(self, socket_path: str, admin: AdminAddress, config: DynamicConfig,
                 aggregate: list[dict[str, Any]] | None = None) -> None:
        """`aggregate`: Mesh.metrics' applications, from the bootstrap (kumaSidecarConfiguration.metrics)."""
        self.socket_path = socket_path
        self.admin = admin
        self.config = config
        self.aggregate = aggregate or []
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def start(self) -> None:
        if os.path.exists(self.socket_path):   # left by a kuma-dp that was killed
            os.unlink(self.socket_path)
        hijacker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # noqa: N802 (http.server's name)
                status, body = hijacker.scrape(self.path)
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self) -> str:
                return "envoy"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics hijacker: " + format, *args)

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        self._server = Server(self.socket_path, Handler)
        os.chmod(self.socket_path, 0o600)   # only Envoy (our child, same user) scrapes through it
        threading.Thread(target=self._server.serve_forever, name="metrics-hijacker", daemon=True).start()
        log.info("metrics hijacker listening on unix://%s", self.socket_path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def _envoy_stats(self, query: str) -> str:
        status, body, _ = _get(_admin_connection(self.admin), "/stats/prometheus" + (f"?{query}" if query else ""))
        if status != 200:
            raise OSError(f"Envoy's admin API answered {status}")
        return body.decode("utf-8", "replace")

    def scrape(self, path: str) -> tuple[int, bytes]:
        parts = urlsplit(path)
        try:
            if parts.path.startswith(MESHMETRIC_PATH):
                config = self.config.current()
                if config is None:
                    return 404, b"no MeshMetric for this proxy\n"
                return 200, meshmetric_scrape(config, self._envoy_stats, application).encode()
            return 200, legacy_scrape(self._envoy_stats(parts.query), self.aggregate, application).encode()
        except OSError as e:
            log.warning("metrics hijacker: cannot read Envoy's stats: %s", e)
            return 503, f"cannot read Envoy's stats: {e}\n".encode()

    def gather(self, config: dict[str, Any]) -> tuple[list[prom_text.Family], dict[str, str]]:
        """What a MeshMetric scrape publishes now (for the OpenTelemetry pusher)."""
        return meshmetric_families(config, self._envoy_stats, application)


def application(address: str, port: int, path: str) -> str:
    status, body, _ = _get(http.client.HTTPConnection(address or "127.0.0.1", port, timeout=TIMEOUT), path)
    if status != 200:
        raise OSError(f"answered {status}")
    return body.decode("utf-8", "replace")


def meshmetric_families(config: dict[str, Any], envoy_stats: Any, application: Any
                        ) -> tuple[list[prom_text.Family], dict[str, str]]:
    """Envoy's families (profiles applied) and each application's, and the extra labels for all of them. An
    application that cannot be read is left out (and logged): the rest still answers, as in Kuma."""
    metrics = (config.get("observability") or {}).get("metrics") or {}
    sidecar = metrics.get("sidecar") or {}
    labels = {prom_text.label_name(k): v for k, v in (metrics.get("extraLabels") or {}).items()}
    query = "text_readouts" + ("" if sidecar.get("includeUnused") else "&usedonly")
    families = prom_text.profile_filter(sidecar)(prom_text.parse(envoy_stats(query)))
    for app in metrics.get("applications") or []:
        name = app.get("name") or f"{app.get('address') or '127.0.0.1'}:{app.get('port')}"
        try:
            text = application(app.get("address") or "", int(app.get("port") or 0), app.get("path") or "/metrics")
        except (OSError, http.client.HTTPException) as e:
            log.warning("metrics hijacker: cannot read the metrics of application %s: %s", name, e)
            continue
        families += prom_text.parse(text)
    return families, labels


def legacy_scrape(envoy: str, aggregate: list[dict[str, Any]], application: Any) -> str:
    """Mesh.metrics: Envoy's stats, then each `aggregate` application's metrics as they are."""
    out = [envoy if envoy.endswith("\n") or not envoy else envoy + "\n"]
    for app in aggregate:
        try:
            text = application(app.get("address") or "", int(app.get("port") or 0), app.get("path") or "/metrics")
        except (OSError, http.client.HTTPException) as e:
            log.warning("metrics hijacker: cannot read the metrics of application %s: %s", app.get("name"), e)
            continue
        out.append(text if text.endswith("\n") or not text else text + "\n")
    return "".join(out)


def meshmetric_scrape(config: dict[str, Any], envoy_stats: Any, application: Any) -> str:
    families, labels = meshmetric_families(config, envoy_stats, application)
    return prom_text.render(families, labels)
