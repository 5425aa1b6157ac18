"""`kuma-cp run`: open the store, create the defaults, serve the API and diagnostics until signalled."""
from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import socket
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import falcon

from appliance import KUMA_COMPAT_VERSION, PRODUCT, __version__
from appliance.api.app import create_app
from appliance.config import Config
from appliance.core.events import Change, ChangeHub
from appliance.core.manager import Labelling, ResourceManager
from appliance.egress.managed import EgressError, ManagedEgress
from appliance.runtime.defaults import ensure_defaults
from appliance.runtime.dataplanes import DataplaneServer
from appliance.runtime.http import BindError, HttpServer
from appliance.runtime.https import HttpsServer, TlsSettings, server_context
from appliance.runtime.leader import AlwaysLeader, Leadership, PostgresLeaderElector
from appliance.runtime.leader_jobs import LeaderJobs
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.runtime.vips_sync import VipSync
from appliance.runtime.metrics import Gauge, Metrics, process_gauges
from appliance.ca.server_cert import (KEY_FILE_NAME, ServerCert, ensure_server_cert, load_server_cert,
                                      machine_names)
from appliance.store import Store, metered
from appliance.store.file_modes import PRIVATE_DIR, PRIVATE_FILE, private_dir, restrict
from appliance.store.memory import MemoryStore
from appliance.store.sqlite import SQLiteStore
from appliance.xds.health import HdsSettings

log = logging.getLogger("kuma-cp")


class StartupError(Exception):
    """A reason not to start, said in one line."""


def open_store(config: Config) -> Store:
    hub = ChangeHub()
    if config["store.type"] == "memory":
        return MemoryStore(hub)
    if config["store.type"] == "postgres":
        from appliance.store.postgres import PostgresSettings, PostgresStore
        return PostgresStore(PostgresSettings.from_config(config), hub)
    return SQLiteStore(config.sqlite_path, hub, busy_timeout=config.seconds("store.sqlite.busyTimeout"))


def migrate(config: Config) -> str:
    """`kuma-cp migrate up`: bring the PostgreSQL schema to this binary's version; say what was done."""
    if config["store.type"] != "postgres":
        return f"store.type is {config['store.type']}: nothing to migrate (SQLite migrates itself at start)"
    from appliance.store.pg_connect import PostgresSettings, connect
    from appliance.store.pg_schema import SCHEMA_VERSION, migrate_up
    settings = PostgresSettings.from_config(config)
    with connect(settings) as conn:
        found, applied = migrate_up(conn, settings.tolerate_newer_db_versions)
    where = f"PostgreSQL {settings.address}/{settings.db_name}"
    if applied:
        return f"{where}: schema migrated from version {found} to {applied[-1]} (applied {len(applied)} step(s))"
    if found > SCHEMA_VERSION:
        return (f"{where}: schema is at version {found}, newer than this kuma-cp ({SCHEMA_VERSION}); "
                f"left as it is (store.postgres.tolerateNewerDBVersions)")
    return f"{where}: schema is up to date (version {found}), nothing to do"


class Health:
    """`/healthy`: the process serves. `/ready` (given the store): it also reaches its database."""

    def __init__(self, ready: threading.Event, store: Store | None = None) -> None:
        self.ready = ready
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.ready.is_set() and (self.store is None or self.store.healthy()):
            resp.text = "ok"
        else:
            resp.status = 503
            resp.text = "not ready"


def _diagnostics_app(ready: threading.Event, metrics: Metrics, store: Store) -> falcon.App:
    app = falcon.App()
    app.add_route("/ready", Health(ready, store))
    app.add_route("/healthy", Health(ready))
    app.add_route("/metrics", metrics)
    return app


def _leadership(config: Config, instance_id: str) -> Leadership:
    """Several instances share a PostgreSQL store and elect a leader there; any other store has one instance."""
    if config["store.type"] != "postgres":
        return AlwaysLeader(instance_id)
    import psycopg
    from appliance.store.pg_connect import PostgresSettings
    kwargs = PostgresSettings.from_config(config).connect_kwargs()
    return PostgresLeaderElector(
        lambda name: psycopg.connect(autocommit=True, **{**kwargs, "application_name": name}), instance_id)


class _SeenRevision:
    """The newest change-log revision this instance has seen: known without asking the database, so
    that /metrics answers at once while the database is down."""

    def __init__(self, store: Store) -> None:
        self.revision = store.revision()
        store.hub.subscribe(self._seen)

    def _seen(self, changes: list[Change]) -> None:
        self.revision = max(self.revision, *(c.revision for c in changes))


def _metrics(instance_id: str, leadership: Leadership, store: Store, dataplanes: DataplaneServer) -> Metrics:
    build = {"product": PRODUCT, "version": __version__, "based_on_kuma": KUMA_COMPAT_VERSION,
             "build_date": "unknown", "git_commit": "unknown", "git_tag": "unknown",
             "instance_id": instance_id, "cluster_id": instance_id.split("-")[0]}   # as GET / says
    seen = _SeenRevision(store)
    return Metrics([
        Gauge("cp_info", "Static information about the CP instance", lambda: 1.0, tuple(build.items())),
        Gauge("leader", "1 indicates that this instance is leader", lambda: 1.0 if leadership.is_leader else 0.0),
        Gauge("xds_streams_active", "Number of active connections between a server and a client",
              dataplanes.streams_active),
        Gauge("store_revision", "The newest change-log revision this instance has seen",
              lambda: seen.revision),
        *process_gauges(),
    ])


def _serve(app: Any, host: str, port: int, threads: int, what: str, setting: str) -> HttpServer:
    try:
        return HttpServer(app, host, port, threads)
    except BindError as e:
        raise StartupError(f"cannot listen on {host}:{port} for the {what} ({setting}): {e}")


def _server_cert(config: Config, section: str, what: str) -> ServerCert:
    """The certificate of a TLS server: its section's files, else general.tlsCertFile/tlsKeyFile (as
    Kuma), else the one generated into the work dir (shared by the DP server and the HTTPS API)."""
    cert_file, key_file = config[f"{section}.tlsCertFile"], config[f"{section}.tlsKeyFile"]
    if not cert_file and not key_file:
        cert_file, key_file = config["general.tlsCertFile"], config["general.tlsKeyFile"]
    try:
        if cert_file or key_file:
            return load_server_cert(cert_file, key_file)
        cert = ensure_server_cert(config.work_dir, *machine_names())
    except ValueError as e:
        raise StartupError(f"{what} certificate ({section}.tlsCertFile/tlsKeyFile): {e}")
    if cert.generated:
        log.info("generated the control plane's server certificate %s", cert.cert_path)
    return cert


def _https_api(config: Config, api: Any) -> HttpsServer:
    cert = _server_cert(config, "apiServer.https", "HTTPS API")
    settings = TlsSettings(str(cert.cert_path), str(cert.key_path), config["apiServer.https.tlsCaFile"],
                           config["apiServer.https.requireClientCert"], config["apiServer.https.tlsMinVersion"],
                           config["apiServer.https.tlsMaxVersion"], tuple(config["apiServer.https.tlsCipherSuites"]))
    try:
        context = server_context(settings)
    except ValueError as e:
        raise StartupError(f"HTTPS API: {e}")
    host, port = config["apiServer.https.interface"], config["apiServer.https.port"]
    try:
        return HttpsServer(api, host, port, config["apiServer.threads"], context)
    except BindError as e:
        raise StartupError(f"cannot listen on {host}:{port} for the HTTPS API (apiServer.https.port): {e}")


def _hds_settings(config: Config) -> HdsSettings:
    def ns(path: str) -> int:
        return round(config.seconds(f"dpServer.hds.{path}") * 1e9)
    return HdsSettings(enabled=config["dpServer.hds.enabled"], interval=ns("interval"),
                       refresh_interval=ns("refreshInterval"), timeout=ns("checkDefaults.timeout"),
                       check_interval=ns("checkDefaults.interval"),
                       no_traffic_interval=ns("checkDefaults.noTrafficInterval"),
                       healthy_threshold=config["dpServer.hds.checkDefaults.healthyThreshold"],
                       unhealthy_threshold=config["dpServer.hds.checkDefaults.unhealthyThreshold"])


def _dataplane_server(config: Config, manager: ResourceManager, instance_id: str) -> DataplaneServer:
    cert = _server_cert(config, "dpServer", "DP server")
    from appliance.xds.generate import generate_sidecar
    server = DataplaneServer(manager, cert, "", config["dpServer.port"], instance_id, generate_sidecar,
                             auth_enabled=config["dpServer.authn.dpProxy.type"] != "none",
                             delta=config["experimental.deltaXds"], zone=config["multizone.zone.name"],
                             status_flush_interval=config.seconds("xdsServer.dataplaneStatusFlushInterval"),
                             work_dir=config.work_dir, hds=_hds_settings(config))
    try:
        server.start()
    except OSError as e:
        raise StartupError(f"cannot listen on :{config['dpServer.port']} for the DP server "
                           f"(dpServer.port): {e.strerror}")
    return server


def _mads(config: Config, store: Store) -> Any:
    """The monitoring assignment server (Prometheus service discovery), serving."""
    from appliance.runtime.mads import MadsServer
    port = config["monitoringAssignmentServer.port"]
    try:
        server = MadsServer(store, "", port, config.seconds("monitoringAssignmentServer.defaultFetchTimeout"))
    except OSError as e:
        raise StartupError(f"cannot listen on :{port} for the monitoring assignment server "
                           f"(monitoringAssignmentServer.port): {e.strerror or e}")
    server.start()
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


def _private_work_dir(work_dir: Path) -> None:
    """The work dir 0700 (an existing one at most 0750), its secret files 0600: the SQLite store
    (its driver sees to it), the DP server's key, issued workload keys and the egress token."""
    try:
        private_dir(work_dir)
        for path in (work_dir / KEY_FILE_NAME, work_dir / "egress" / "token"):
            restrict(path, PRIVATE_FILE)
        identities = work_dir / "identities"
        if identities.is_dir():
            restrict(identities, PRIVATE_DIR)
            for path in identities.rglob("*"):
                restrict(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
    except OSError as e:
        raise StartupError(f"cannot prepare work dir {work_dir} (general.workDir): {e.strerror}")


# Generating proxies' config allocates millions of short-lived objects per change; at the default threshold
# (700) the collector runs thousands of times per change and scans the long-lived snapshots and memos again
# and again: about 15 % of the generation's CPU at 1,000 proxies. Cycles are still collected, less often.
GC_THRESHOLDS = (50_000, 20, 20)


def run(config: Config) -> int:
    _private_work_dir(config.work_dir)
    gc.set_threshold(*GC_THRESHOLDS)
    # Whatever started is stopped, in reverse order, however `run` ends: a failed start or a signal.
    with ExitStack() as started:
        store = metered.instrument(open_store(config))
        started.callback(store.close)
        manager = ResourceManager(store, Labelling(zone=config["multizone.zone.name"]))
        instance_id = f"{socket.gethostname()}-{secrets.token_hex(2)}"
        leadership = _leadership(config, instance_id)
        LeaderJobs(manager, leadership,
                   lambda: ensure_defaults(manager, config["defaults.skipMeshCreation"],
                                           config["apiServer.authn.tokens.bootstrapAdminToken"],
                                           config["defaults.skipHostnameGenerators"]),
                   {"Dataplane": config.seconds("runtime.universal.dataplaneCleanupAge"),
                    "ZoneEgress": config.seconds("runtime.universal.zoneResourceCleanupAge")},
                   vips=VipSync(store, config["dnsServer.CIDR"], config["dnsServer.serviceVipEnabled"]),
                   mesh_services=MeshServiceSync(store, config["multizone.zone.name"], config["ipam.meshService.cidr"],
                                                 config.seconds("meshService.deletionGracePeriod"),
                                                 config["ipam.meshExternalService.cidr"]))
        leadership.start()   # the leader (the only instance, on SQLite) creates the defaults before serving
        started.callback(leadership.stop)
        ready = threading.Event()
        dataplanes = _dataplane_server(config, manager, instance_id)
        started.callback(dataplanes.stop)
        servers: list[HttpServer | HttpsServer] = []
        if config["apiServer.http.enabled"] or config["apiServer.https.enabled"]:
            api = create_app(config, manager, instance_id, dataplanes)
            if config["apiServer.http.enabled"]:
                servers.append(_serve(api, config["apiServer.http.interface"], config["apiServer.http.port"],
                                      config["apiServer.threads"], "API server", "apiServer.http.port"))
                started.callback(servers[-1].stop)
            if config["apiServer.https.enabled"]:
                servers.append(_https_api(config, api))
                started.callback(servers[-1].stop)
        servers.append(_serve(_diagnostics_app(ready, _metrics(instance_id, leadership, store, dataplanes), store),
                              "0.0.0.0", config["diagnostics.serverPort"], 2,
                              "diagnostics server", "diagnostics.serverPort"))
        started.callback(servers[-1].stop)
        if config["monitoringAssignmentServer.enabled"]:
            started.callback(_mads(config, store).stop)
        for server in servers:   # every port bound before any serves
            server.start()
        if config["egress.enabled"]:
            started.callback(_managed_egress(config, manager, dataplanes).stop)

        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            log.info("signal %s received, stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        ready.set()
        started.callback(ready.clear)   # first thing on the way down: /ready answers 503
        store_desc = config["store.type"] + (f" {config.sqlite_path}" if config["store.type"] == "sqlite" else "")
        log.info("kuma-cp %s ready: mode=%s store=%s api=:%s https-api=%s dp-server=:%s diagnostics=:%s (pid %d)",
                 __version__, config["mode"], store_desc, config["apiServer.http.port"],
                 f":{config['apiServer.https.port']}" if config["apiServer.https.enabled"] else "off",
                 config["dpServer.port"], config["diagnostics.serverPort"], os.getpid())
        stop.wait()
    log.info("stopped")
    return 0
