"""`kuma-cp run`: open the store, create the defaults, serve the API and diagnostics until signalled."""
from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
from typing import Any

import falcon

from appliance import __version__
from appliance.api.app import create_app
from appliance.config import Config
from appliance.core.events import ChangeHub
from appliance.core.manager import Labelling, ResourceManager
from appliance.egress.managed import EgressError, ManagedEgress
from appliance.runtime.bootstrap import ensure_defaults
from appliance.runtime.dataplanes import DataplaneServer
from appliance.runtime.http import BindError, HttpServer
from appliance.ca.server_cert import ensure_server_cert, load_server_cert, machine_names
from appliance.store import Store
from appliance.store.memory import MemoryStore
from appliance.store.sqlite import SQLiteStore

log = logging.getLogger("kuma-cp")


class StartupError(Exception):
    """A reason not to start, said in one line."""


def open_store(config: Config) -> Store:
    hub = ChangeHub()
    if config["store.type"] == "memory":
        return MemoryStore(hub)
    return SQLiteStore(config.sqlite_path, hub, busy_timeout=config.seconds("store.sqlite.busyTimeout"))


class Health:
    def __init__(self, ready: threading.Event) -> None:
        self.ready = ready

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.ready.is_set():
            resp.text = "ok"
        else:
            resp.status = 503
            resp.text = "not ready"


def _diagnostics_app(ready: threading.Event) -> falcon.App:
    app = falcon.App()
    health = Health(ready)
    app.add_route("/ready", health)
    app.add_route("/healthy", health)
    return app


def _serve(app: Any, host: str, port: int, threads: int, what: str, setting: str) -> HttpServer:
    try:
        return HttpServer(app, host, port, threads)
    except BindError as e:
        raise StartupError(f"cannot listen on {host}:{port} for the {what} ({setting}): {e}")


def _dataplane_server(config: Config, manager: ResourceManager, instance_id: str) -> DataplaneServer:
    try:
        if config["dpServer.tlsCertFile"] or config["dpServer.tlsKeyFile"]:
            cert = load_server_cert(config["dpServer.tlsCertFile"], config["dpServer.tlsKeyFile"])
        else:
            cert = ensure_server_cert(config.work_dir, *machine_names())
            if cert.generated:
                log.info("generated the DP server certificate %s", cert.cert_path)
    except ValueError as e:
        raise StartupError(f"DP server certificate (dpServer.tlsCertFile/tlsKeyFile): {e}")
    from appliance.xds.generate import generate_sidecar
    server = DataplaneServer(manager, cert, "0.0.0.0", config["dpServer.port"], instance_id, generate_sidecar,
                             auth_enabled=config["dpServer.authn.dpProxy.type"] != "none",
                             delta=config["experimental.deltaXds"], zone=config["multizone.zone.name"],
                             status_flush_interval=config.seconds("xdsServer.dataplaneStatusFlushInterval"),
                             work_dir=config.work_dir)
    try:
        server.start()
    except OSError as e:
        raise StartupError(f"cannot listen on 0.0.0.0:{config['dpServer.port']} for the DP server "
                           f"(dpServer.port): {e.strerror}")
    return server


def _managed_egress(config: Config, manager: ResourceManager, dataplanes: DataplaneServer) -> ManagedEgress:
    try:
        egress = ManagedEgress(manager.store, config.work_dir, config["egress.name"], config["egress.address"],
                               config["egress.port"], config["multizone.zone.name"], config["dpServer.port"],
                               dataplanes.cert.ca_pem, config["egress.envoyBinary"],
                               auth_enabled=config["dpServer.authn.dpProxy.type"] != "none")
        egress.start()
    except (EgressError, OSError) as e:
        raise StartupError(str(e))
    return egress


def run(config: Config) -> int:
    work_dir = config.work_dir
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"cannot create work dir {work_dir} (general.workDir): {e.strerror}")
    store = open_store(config)
    manager = ResourceManager(store, Labelling(zone=config["multizone.zone.name"]))
    ensure_defaults(manager, config["defaults.skipMeshCreation"],
                    config["apiServer.authn.tokens.bootstrapAdminToken"])
    instance_id = f"{socket.gethostname()}-{secrets.token_hex(2)}"
    ready = threading.Event()

    servers: list[HttpServer] = []
    dataplanes = _dataplane_server(config, manager, instance_id)
    try:
        if config["apiServer.http.enabled"]:
            api = create_app(config, manager, instance_id, dataplanes)
            servers.append(_serve(api, config["apiServer.http.interface"], config["apiServer.http.port"],
                                  config["apiServer.threads"], "API server", "apiServer.http.port"))
        servers.append(_serve(_diagnostics_app(ready), "0.0.0.0", config["diagnostics.serverPort"], 2,
                              "diagnostics server", "diagnostics.serverPort"))
    except StartupError:
        dataplanes.stop()
        raise
    for server in servers:
        server.start()
    egress = None
    if config["egress.enabled"]:
        try:
            egress = _managed_egress(config, manager, dataplanes)
        except StartupError:
            for server in servers:
                server.stop()
            dataplanes.stop()
            raise

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ready.set()
    store_desc = config["store.type"] + (f" {config.sqlite_path}" if config["store.type"] == "sqlite" else "")
    log.info("kuma-cp %s ready: mode=%s store=%s api=:%s dp-server=:%s diagnostics=:%s (pid %d)", __version__,
             config["mode"], store_desc, config["apiServer.http.port"], config["dpServer.port"],
             config["diagnostics.serverPort"], os.getpid())
    stop.wait()
    ready.clear()
    if egress is not None:
        egress.stop()
    for server in servers:
        server.stop()
    dataplanes.stop()
    store.close()
    log.info("stopped")
    return 0
