"""Every setting kuma-cp understands: its path, type, default and Kuma 2.14 env name.

The table is the single source for the loader, `GET /config` and the documented
`config/kuma-cp.conf.yaml` (a test keeps the file and this table in step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.gocompat import GO_TLS_VERSIONS


@dataclass(frozen=True)
class Setting:
    path: str           # dotted YAML path, e.g. "apiServer.http.port"
    kind: type          # int, str, bool, float or list
    default: Any
    env: str            # KUMA_* name, as Kuma 2.14 spells it
    choices: tuple[str, ...] = ()
    duration: bool = False  # a Go duration string such as "5s" or "1m30s"
    secret: bool = False    # shown as "*****" by `GET /config`, as Kuma sanitises it


# Kuma's static access lists: who (users, groups) may do each action; its defaults give
# mesh-system:admin everything, and let anyone view proxy config dumps and control-plane metadata.
_ANYONE = ["mesh-system:unauthenticated", "mesh-system:authenticated"]
ACCESS_ACTIONS: tuple[tuple[str, str, list[str], list[str]], ...] = (
    # (action, the middle of its KUMA_ACCESS_STATIC_* variables, default users, default groups)
    ("adminResources", "ADMIN_RESOURCES", ["mesh-system:admin"], ["mesh-system:admin"]),
    ("generateDpToken", "GENERATE_DP_TOKEN", ["mesh-system:admin"], ["mesh-system:admin"]),
    ("generateUserToken", "GENERATE_USER_TOKEN", ["mesh-system:admin"], ["mesh-system:admin"]),
    ("generateZoneToken", "GENERATE_ZONE_TOKEN", ["mesh-system:admin"], ["mesh-system:admin"]),
    ("viewConfigDump", "GET_CONFIG_DUMP", [], _ANYONE),
    ("viewStats", "VIEW_STATS", [], _ANYONE),
    ("viewClusters", "VIEW_CLUSTERS", [], _ANYONE),
    ("controlPlaneMetadata", "CONTROL_PLANE_METADATA", [], _ANYONE),
)
ACCESS_LISTS: tuple[Setting, ...] = tuple(
    Setting(f"access.static.{action}.{who}", list, default, f"KUMA_ACCESS_STATIC_{env}_{who.upper()}")
    for action, env, users, groups in ACCESS_ACTIONS for who, default in (("users", users), ("groups", groups)))

SETTINGS: tuple[Setting, ...] = (
    Setting("environment", str, "universal", "KUMA_ENVIRONMENT", choices=("universal",)),
    Setting("mode", str, "standalone", "KUMA_MODE", choices=("standalone", "zone")),
    Setting("store.type", str, "sqlite", "KUMA_STORE_TYPE", choices=("sqlite", "memory", "postgres")),
    Setting("store.sqlite.path", str, "", "KUMA_STORE_SQLITE_PATH"),
    Setting("store.sqlite.busyTimeout", str, "5s", "KUMA_STORE_SQLITE_BUSY_TIMEOUT", duration=True),
    Setting("store.postgres.host", str, "127.0.0.1", "KUMA_STORE_POSTGRES_HOST"),
    Setting("store.postgres.port", int, 15432, "KUMA_STORE_POSTGRES_PORT"),
    Setting("store.postgres.user", str, "kuma", "KUMA_STORE_POSTGRES_USER"),
    Setting("store.postgres.password", str, "kuma", "KUMA_STORE_POSTGRES_PASSWORD", secret=True),
    Setting("store.postgres.dbName", str, "kuma", "KUMA_STORE_POSTGRES_DB_NAME"),
    Setting("store.postgres.connectionTimeout", int, 5, "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT"),
    Setting("store.postgres.minOpenConnections", int, 0, "KUMA_STORE_POSTGRES_MIN_OPEN_CONNECTIONS"),
    Setting("store.postgres.maxOpenConnections", int, 50, "KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS"),
    Setting("store.postgres.minReconnectInterval", str, "10s", "KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL",
            duration=True),
    Setting("store.postgres.maxReconnectInterval", str, "60s", "KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL",
            duration=True),
    Setting("store.postgres.tls.mode", str, "disable", "KUMA_STORE_POSTGRES_TLS_MODE",
            choices=("disable", "verifyNone", "verifyCa", "verifyFull")),
    Setting("store.postgres.tls.certPath", str, "", "KUMA_STORE_POSTGRES_TLS_CERT_PATH"),
    Setting("store.postgres.tls.keyPath", str, "", "KUMA_STORE_POSTGRES_TLS_KEY_PATH"),
    Setting("store.postgres.tls.caPath", str, "", "KUMA_STORE_POSTGRES_TLS_CA_PATH"),
    Setting("store.postgres.tolerateNewerDBVersions", bool, False, "KUMA_STORE_POSTGRES_TOLERATE_NEWER_DB_VERSIONS"),
    Setting("apiServer.http.enabled", bool, True, "KUMA_API_SERVER_HTTP_ENABLED"),
    Setting("apiServer.http.interface", str, "0.0.0.0", "KUMA_API_SERVER_HTTP_INTERFACE"),
    Setting("apiServer.http.port", int, 5681, "KUMA_API_SERVER_HTTP_PORT"),
    Setting("apiServer.https.enabled", bool, True, "KUMA_API_SERVER_HTTPS_ENABLED"),
    Setting("apiServer.https.interface", str, "0.0.0.0", "KUMA_API_SERVER_HTTPS_INTERFACE"),
    Setting("apiServer.https.port", int, 5682, "KUMA_API_SERVER_HTTPS_PORT"),
    Setting("apiServer.https.tlsCertFile", str, "", "KUMA_API_SERVER_HTTPS_TLS_CERT_FILE"),
    Setting("apiServer.https.tlsKeyFile", str, "", "KUMA_API_SERVER_HTTPS_TLS_KEY_FILE"),
    Setting("apiServer.https.tlsCaFile", str, "", "KUMA_API_SERVER_HTTPS_TLS_CA_FILE"),
    Setting("apiServer.https.tlsMinVersion", str, "TLSv1_2", "KUMA_API_SERVER_HTTPS_TLS_MIN_VERSION",
            choices=("", *GO_TLS_VERSIONS)),
    Setting("apiServer.https.tlsMaxVersion", str, "", "KUMA_API_SERVER_HTTPS_TLS_MAX_VERSION",
            choices=("", *GO_TLS_VERSIONS)),
    Setting("apiServer.https.tlsCipherSuites", list, [], "KUMA_API_SERVER_HTTPS_TLS_CIPHER_SUITES"),
    Setting("apiServer.https.requireClientCert", bool, False, "KUMA_API_SERVER_HTTPS_REQUIRE_CLIENT_CERT"),
    Setting("apiServer.authn.type", str, "tokens", "KUMA_API_SERVER_AUTHN_TYPE", choices=("tokens",)),
    Setting("apiServer.authn.localhostIsAdmin", bool, True, "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN"),
    Setting("apiServer.authn.tokens.bootstrapAdminToken", bool, True,
            "KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN"),
    Setting("apiServer.authn.tokens.enableIssuer", bool, True, "KUMA_API_SERVER_AUTHN_TOKENS_ENABLE_ISSUER"),
    Setting("apiServer.readOnly", bool, False, "KUMA_API_SERVER_READ_ONLY"),
    Setting("apiServer.corsAllowedDomains", list, [], "KUMA_API_SERVER_CORS_ALLOWED_DOMAINS"),
    Setting("apiServer.gui.enabled", bool, True, "KUMA_API_SERVER_GUI_ENABLED"),
    Setting("apiServer.gui.rootUrl", str, "", "KUMA_API_SERVER_GUI_ROOT_URL"),
    Setting("apiServer.gui.basePath", str, "/gui", "KUMA_API_SERVER_GUI_BASE_PATH"),
    Setting("apiServer.threads", int, 8, "KUMA_API_SERVER_THREADS"),
    Setting("dpServer.port", int, 5678, "KUMA_DP_SERVER_PORT"),
    Setting("dpServer.tlsCertFile", str, "", "KUMA_DP_SERVER_TLS_CERT_FILE"),
    Setting("dpServer.tlsKeyFile", str, "", "KUMA_DP_SERVER_TLS_KEY_FILE"),
    Setting("dpServer.authn.dpProxy.type", str, "dpToken", "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE",
            choices=("dpToken", "none", "")),
    Setting("dpServer.hds.enabled", bool, True, "KUMA_DP_SERVER_HDS_ENABLED"),
    Setting("dpServer.hds.interval", str, "5s", "KUMA_DP_SERVER_HDS_INTERVAL", duration=True),
    Setting("dpServer.hds.refreshInterval", str, "10s", "KUMA_DP_SERVER_HDS_REFRESH_INTERVAL", duration=True),
    Setting("dpServer.hds.checkDefaults.timeout", str, "2s", "KUMA_DP_SERVER_HDS_CHECK_TIMEOUT", duration=True),
    Setting("dpServer.hds.checkDefaults.interval", str, "1s", "KUMA_DP_SERVER_HDS_CHECK_INTERVAL", duration=True),
    Setting("dpServer.hds.checkDefaults.noTrafficInterval", str, "1s", "KUMA_DP_SERVER_HDS_CHECK_NO_TRAFFIC_INTERVAL",
            duration=True),
    Setting("dpServer.hds.checkDefaults.healthyThreshold", int, 1, "KUMA_DP_SERVER_HDS_CHECK_HEALTHY_THRESHOLD"),
    Setting("dpServer.hds.checkDefaults.unhealthyThreshold", int, 1, "KUMA_DP_SERVER_HDS_CHECK_UNHEALTHY_THRESHOLD"),
    Setting("xdsServer.dataplaneStatusFlushInterval", str, "10s", "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL",
            duration=True),
    Setting("experimental.deltaXds", bool, False, "KUMA_EXPERIMENTAL_DELTA_XDS"),
    Setting("diagnostics.serverPort", int, 5680, "KUMA_DIAGNOSTICS_SERVER_PORT"),
    Setting("monitoringAssignmentServer.enabled", bool, True, "KUMA_MONITORING_ASSIGNMENT_SERVER_ENABLED"),
    Setting("monitoringAssignmentServer.port", int, 5676, "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT"),
    Setting("monitoringAssignmentServer.defaultFetchTimeout", str, "30s",
            "KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT", duration=True),
    Setting("general.workDir", str, "", "KUMA_GENERAL_WORK_DIR"),
    Setting("general.tlsCertFile", str, "", "KUMA_GENERAL_TLS_CERT_FILE"),
    Setting("general.tlsKeyFile", str, "", "KUMA_GENERAL_TLS_KEY_FILE"),
    Setting("defaults.skipMeshCreation", bool, False, "KUMA_DEFAULTS_SKIP_MESH_CREATION"),
    Setting("defaults.skipHostnameGenerators", bool, False, "KUMA_DEFAULTS_SKIP_HOSTNAME_GENERATORS"),
    Setting("access.type", str, "static", "KUMA_ACCESS_TYPE", choices=("static",)),
    *ACCESS_LISTS,
    Setting("runtime.universal.dataplaneCleanupAge", str, "72h0m0s", "KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE",
            duration=True),
    Setting("runtime.universal.zoneResourceCleanupAge", str, "72h0m0s",
            "KUMA_RUNTIME_UNIVERSAL_ZONE_RESOURCE_CLEANUP_AGE", duration=True),
    Setting("multizone.zone.name", str, "default", "KUMA_MULTIZONE_ZONE_NAME"),
    Setting("dnsServer.CIDR", str, "240.0.0.0/4", "KUMA_DNS_SERVER_CIDR"),
    Setting("dnsServer.serviceVipEnabled", bool, True, "KUMA_DNS_SERVER_SERVICE_VIP_ENABLED"),
    Setting("ipam.meshService.cidr", str, "241.0.0.0/8", "KUMA_IPAM_MESH_SERVICE_CIDR"),
    Setting("ipam.meshExternalService.cidr", str, "242.0.0.0/8", "KUMA_IPAM_MESH_EXTERNAL_SERVICE_CIDR"),
    Setting("meshService.deletionGracePeriod", str, "1h", "KUMA_MESH_SERVICE_DELETION_GRACE_PERIOD", duration=True),
    Setting("egress.enabled", bool, False, "KUMA_EGRESS_ENABLED"),
    Setting("egress.name", str, "", "KUMA_EGRESS_NAME"),
    Setting("egress.address", str, "", "KUMA_EGRESS_ADDRESS"),
    Setting("egress.port", int, 10002, "KUMA_EGRESS_PORT"),
    Setting("egress.envoyBinary", str, "", "KUMA_EGRESS_ENVOY_BINARY"),
)

BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
