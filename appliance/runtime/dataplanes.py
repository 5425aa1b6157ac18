"""The data-plane side of kuma-cp: DP server (TLS :5678), bootstrap, ADS, insights, DP lifecycle.

Runs one asyncio loop in its own thread; the store's writer threads reach it only through the
change hub (one thread-safe call per commit). Its parts: dp_auth (tokens), dp_registration and
dp_definition (kuma-dp's proxies written through core), dp_lifecycle (connect, disconnect,
deregistration), dp_bootstrap (POST /bootstrap).
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.health.v3 import hds_pb2_grpc

from appliance.ca.server_cert import ServerCert
from appliance.core.manager import ResourceManager
from appliance.insights.dataplane import STATUS_FLUSH_INTERVAL, InsightRecorder
from appliance.runtime.dp_auth import DataplaneAuth
from appliance.runtime.dp_bootstrap import BootstrapEndpoint
from appliance.runtime.dp_lifecycle import DataplaneLifecycle
from appliance.runtime.dp_registration import Registrar
from appliance.runtime.dpserver import DpServer, socket_name
from appliance.xds import bootstrap
from appliance.xds.cache import Generate, XdsCache
from appliance.xds.hds import HdsServer
from appliance.xds.health import EnvoyAdmin, HdsSettings
from appliance.xds.server import AdsServer


class DataplaneServer:
    """The DP server's parts put together on one asyncio loop: what run.py starts and the API inspects."""

    def __init__(self, manager: ResourceManager, cert: ServerCert, host: str, port: int, instance_id: str,
                 generate: Generate, auth_enabled: bool = True, delta: bool = False, zone: str = "",
                 status_flush_interval: float = STATUS_FLUSH_INTERVAL, work_dir: Path | None = None,
                 hds: HdsSettings | None = None) -> None:
        """`work_dir`: where issued workload certificates are kept across restarts (none: memory only).
        `hds`: dpServer.hds.* (default: Kuma's defaults, enabled). `zone`: a zone token must be for this
        zone (or for none)."""
        self.manager = manager
        self.store = manager.store
        self.cert = cert
        self.host, self.port = host, port
        self.instance_id = instance_id
        self.generate = generate
        self.status_flush_interval = status_flush_interval
        self.work_dir = work_dir
        self.hds_settings = hds or HdsSettings()
        self.hds: HdsServer | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="xds", daemon=True)
        self.auth = DataplaneAuth(manager, auth_enabled, zone)
        self.registrar = Registrar(manager, self.auth)
        self.bootstrap_http = BootstrapEndpoint(self.registrar, port, cert.ca_pem, delta, self.hds_settings.enabled)
        self.cache: XdsCache | None = None
        self.insights: InsightRecorder | None = None
        self.lifecycle: DataplaneLifecycle | None = None
        self.ads: AdsServer | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Bind (errors raise here, in the caller's thread) and serve."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        self.cache = XdsCache(self.store, self.generate, self.loop,
                              identities_dir=self.work_dir / "identities" if self.work_dir else None)
        self.insights = InsightRecorder(self.store, self.instance_id, self.loop, self.status_flush_interval)
        self.lifecycle = DataplaneLifecycle(self.manager, self.registrar, self.instance_id, self.loop,
                                            self.insights, self.cache)
        self.insights.on_connect.append(self.lifecycle.on_connect)
        self.insights.on_disconnect.append(self.lifecycle.on_disconnect)
        self.grpc_name = socket_name("xds")
        self.grpc = grpc.aio.server(options=[("grpc.server.max_pending_requests", 10000),
                                             ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                                             ("grpc.keepalive_permit_without_calls", 1),
                                             ("grpc.http2.min_ping_interval_without_data_ms", 10000)])
        self.ads = AdsServer(self.cache, self.auth.authenticate, self.insights)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads, self.grpc)
        self.cache.on_identity = self._on_identity
        if self.hds_settings.enabled:
            self.hds = HdsServer(self.manager, self.hds_settings, self.auth.authenticate, _envoy_admin, self.loop)
            hds_pb2_grpc.add_HealthDiscoveryServiceServicer_to_server(self.hds, self.grpc)
        self._unsubscribe = self.auth.watch(self.loop, self.ads, *([self.hds] if self.hds else []))
        # TLS ends in gRPC's C core (its own threads), not on this loop: the front only splices bytes
        credentials = grpc.ssl_server_credentials([(self.cert.key_path.read_bytes(), self.cert.cert_path.read_bytes())])
        if not self.grpc.add_secure_port(f"unix-abstract:{self.grpc_name}", credentials):
            raise RuntimeError("could not start the ADS server (gRPC refused its listening socket)")
        await self.grpc.start()
        self.front = DpServer(self.host, self.port, str(self.cert.cert_path), str(self.cert.key_path),
                              self.grpc_name, self.bootstrap_http)
        await self.front.start()

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()

        async def _stop() -> None:
            await self.front.stop()
            await self.grpc.stop(grace=1)
            if self.insights:
                await self.insights.close()   # after the streams: their disconnects are written too
            if self.cache:
                self.cache.close()
            if self.hds:
                self.hds.close()
        try:
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the xDS loop and return its result (for the API's inspect endpoints)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def streams_active(self) -> int:
        """ADS streams open on this instance now (without waiting for the xDS loop, which may be busy)."""
        return self.insights.streams if self.insights else 0

    def config_for(self, mesh: str, name: str) -> dict[str, dict[str, Any]]:
        assert self.cache is not None
        return self.call(lambda: self.cache.generate_for(mesh, name))

    def _on_identity(self, key: tuple[str, str]) -> None:
        times = self.cache.identities.certificate_times(*key) if self.cache else None
        if times and self.insights:
            self.insights.certificate(key, *times)


def _envoy_admin(dataplane: dict[str, Any], node: object) -> EnvoyAdmin:
    """Where the proxy's Envoy admin listens, as its bootstrap put it: networking.admin.port, else the socket in
    kuma-dp's work dir (its node metadata)."""
    port = ((dataplane.get("networking") or {}).get("admin") or {}).get("port")
    if port:
        return EnvoyAdmin(port=int(port))
    fields = getattr(getattr(node, "metadata", None), "fields", {})
    workdir = fields["workdir"].string_value if "workdir" in fields else ""
    return EnvoyAdmin(pipe=bootstrap.admin_socket(workdir))
