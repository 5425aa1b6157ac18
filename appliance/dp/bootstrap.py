"""`POST /bootstrap`: Kuma 2.14's BootstrapRequest out, the Envoy bootstrap back, retried as kuma-dp
retries it (app/kuma-dp/pkg/dataplane/envoy/remote_bootstrap.go at v2.14.3).

Retry policy, as Kuma's: a constant backoff (controlPlane.retry.backoff, 3 s) for at most
controlPlane.retry.maxDuration (5 min) counted from the first attempt, the last wait cut short so
that one attempt falls at the end (sethvargo/go-retry's WithMaxDuration over NewConstant); each
attempt times out after 10 s. Retried: the control plane unreachable, "dataplane not found yet"
(a 404 with an empty body) and any status other than 200 and 4xx. Not retried: other 4xx (a
refused token, an invalid dataplane), which print the control plane's message in one line.
Where we differ from Kuma: a certificate that does not verify stops at once with what to do about
it, where Kuma retries it for five minutes.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import os
import socket
import ssl
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from appliance import __version__
from appliance.dp.config import DpConfig, DpError
from appliance.dp.envoy import EnvoyVersion
from appliance.dp.resource import Identity, resource_json
from appliance.dp.tproxy import FEATURE_EMBEDDED_DNS, FEATURE_TPROXY_METADATA
from appliance.gocompat import format_seconds

log = logging.getLogger("kuma-dp")

REQUEST_TIMEOUT = 10.0  # seconds per attempt: Kuma's http.Client{Timeout: 10s}

# Features announce what this kuma-dp can do, so the control plane generates config that uses it.
# Kuma 2.14's kuma-dp also announces feature-otel-via-kuma-dp: it needs kuma-dp to relay OpenTelemetry
# through a socket, which we do not run, so we leave it out. The access log pipe (tcp backends) we serve:
# appliance/dp/accesslogs.py.
FEATURES = ["feature-strict-inbound-ports", "feature-reuse-port", "feature-tcp-accesslog-via-named-pipe"]

# Where the OS keeps its CA bundle; the control plane points Envoy at it for external TLS.
# (app/kuma-dp/pkg/dataplane/certificate/cert.go, taken from Go's crypto/x509 list)
_SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                    "/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem",
                    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem")


@dataclass(frozen=True)
class Bootstrap:
    yaml_text: str               # written to <work dir>/bootstrap.yaml as received
    config: dict[str, Any]       # the same, parsed (for the admin address)
    sidecar: dict[str, Any]      # kumaSidecarConfiguration


def system_ca_path() -> str:
    return next((p for p in _SYSTEM_CA_FILES if os.path.exists(p)), "")


def max_memory_bytes() -> int:
    """The cgroup memory limit (v2, then v1), 0 when unlimited; Envoy's overload manager uses it.
    cgroup v2 says "max" for no limit, v1 a number near 2**63: both mean 0 here."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(path).read_text().strip())
        except (OSError, ValueError):
            continue
        return limit if limit < 2**62 else 0
    return 0


def ipv6_enabled() -> bool:
    """Kuma turns IPv6 off when the host has no non-loopback IPv6 address."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[0] != "0" * 31 + "1" for line in lines if line.strip())


def _absolute(path: str) -> str:
    """Envoy reads the file, from its own working directory: give it the whole path."""
    return str(Path(path).absolute()) if path else ""


def build_request(cfg: DpConfig, ident: Identity, token: str, token_path: str, envoy: EnvoyVersion,
                  work_dir: Path, ca_pem: str, tproxy: dict[str, Any] | None = None,
                  embedded_dns: bool = False) -> dict[str, Any]:
    """Kuma 2.14's BootstrapRequest (pkg/xds/bootstrap/types/bootstrap_request.go), field for field;
    the fields for parts of kuma-dp we do not run (readiness reporter, probes, OpenTelemetry) are left
    out, as Kuma leaves them out when those parts are off. `tproxy`: the DataplaneConfig of
    --transparent-proxy (`dataplaneConfig`); `embedded_dns`: kuma-dp's DNS proxy runs, so the control
    plane serves its table at /dns instead of an Envoy DNS listener."""
    request: dict[str, Any] = {"mesh": ident.mesh, "name": ident.name, "proxyType": cfg.proxy_type}
    if token:
        request["dataplaneToken"] = token
    if token_path:
        request["dataplaneTokenPath"] = token_path
    if ident.resource is not None:
        request["dataplaneResource"] = resource_json(ident.resource)
    metadata = {"HOST_IP": os.environ["HOST_IP"]} if os.environ.get("HOST_IP") else {}
    request.update({
        "version": {
            "kumaDp": {"version": __version__, "gitTag": f"v{__version__}", "gitCommit": "unknown",
                       "buildDate": "unknown"},
            "envoy": {"version": envoy.version, "build": envoy.build,
                      "kumaDpCompatible": envoy.kuma_dp_compatible},
        },
        "caCert": ca_pem,
        "dynamicMetadata": metadata,
        "dnsPort": cfg.dns_envoy_port,
        "operatingSystem": {"win32": "windows"}.get(sys.platform, sys.platform),
        "features": [*FEATURES, *([FEATURE_EMBEDDED_DNS] if embedded_dns else []),
                     *([FEATURE_TPROXY_METADATA] if tproxy is not None else [])],
        "resources": {"maxHeapSizeBytes": max_memory_bytes()},
        "workdir": str(work_dir),
        "metricsResources": {"certPath": _absolute(cfg.metrics_cert_path), "keyPath": _absolute(cfg.metrics_key_path)},
        "systemCaPath": system_ca_path(),
        **({"dataplaneConfig": tproxy} if tproxy is not None else {}),
        "ipv6Enabled": ipv6_enabled(),
        "spireResources": {"socketPath": ""},
    })
    return request


class _Retryable(Exception):
    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def _cp_message(body: bytes) -> str:
    """The control plane's reason in one line: Kuma's JSON error body (title, detail, the invalid
    fields), or its plain-text body as the bootstrap handler writes it."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and (doc.get("title") or doc.get("detail") or doc.get("details")):
        parts = [str(p) for p in dict.fromkeys((doc.get("title"), doc.get("detail") or doc.get("details"))) if p]
        fields = [f"{c.get('field')}: {c.get('reason') or c.get('message')}"
                  for c in (doc.get("invalid_parameters") or doc.get("causes") or []) if isinstance(c, dict)]
        text = ": ".join(parts) + (f" ({'; '.join(fields)})" if fields else "")
    return " ".join(text.split())[:1000] or "(no message)"


class BootstrapClient:
    def __init__(self, cfg: DpConfig, ca_pem: str, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.ca_pem = ca_pem
        self.sleep = sleep
        self.clock = clock
        url = urllib.parse.urlsplit(cfg.cp_address)
        if url.scheme not in ("http", "https"):
            raise DpError(f"unsupported URL scheme {url.scheme!r} in --cp-address={cfg.cp_address}, "
                          "must be http or https")
        try:
            self.host, self.port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        except ValueError as e:
            raise DpError(f"invalid --cp-address={cfg.cp_address}: {e}")
        if not self.host:
            raise DpError(f"invalid --cp-address={cfg.cp_address}: no host")
        self.url = f"{url.scheme}://{url.netloc}/bootstrap"
        self.tls = self._tls_context() if url.scheme == "https" else None

    def _tls_context(self) -> ssl.SSLContext:
        if self.cfg.skip_verify:
            log.warning("--skip-verify is set, the Control Plane certificate will not be verified")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_pem:
            try:
                ctx = ssl.create_default_context(cadata=self.ca_pem)
            except (ssl.SSLError, ValueError) as e:
                raise DpError(f"could not add the certificate from --ca-cert-file as a CA: {e}")
            # Go trusts every certificate in RootCAs as an anchor, intermediates and leaves too.
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        else:
            # Kuma 2.14 verifies against the system's trust store when no CA is given.
            ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The DP server answers h2 (ADS) and HTTP/1.1 (bootstrap) on one port, chosen by ALPN.
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def fetch(self, request: dict[str, Any]) -> Bootstrap:
        body = json.dumps(request).encode()
        start = self.clock()
        while True:
            log.info("trying to fetch bootstrap configuration from the Control Plane at %s", self.url)
            try:
                return self._attempt(body)
            except _Retryable as e:
                remaining = self.cfg.retry_max_duration - (self.clock() - start)
                if remaining <= 0:
                    raise DpError(self._give_up(e, request))
                if e.not_found:
                    log.info("Dataplane %s is not yet known to the Control Plane, retrying in %s",
                             request.get("name"), format_seconds(self.cfg.retry_backoff))
                else:
                    log.info("could not fetch bootstrap configuration (%s), retrying in %s", e,
                             format_seconds(self.cfg.retry_backoff))
                self.sleep(min(self.cfg.retry_backoff, remaining))

    def _give_up(self, e: _Retryable, request: dict[str, Any]) -> str:
        waited = format_seconds(self.cfg.retry_max_duration)
        if e.not_found:
            who = f"{request.get('mesh')}/{request.get('name')}" if request.get("mesh") else request.get("name")
            return (f"the control plane at {self.url} does not know dataplane {who} (gave up after {waited}): "
                    "create the Dataplane on kuma-cp before starting kuma-dp or pass it with --dataplane-file")
        return (f"could not fetch the Envoy bootstrap from {self.url} for {waited} (last error: {e}); "
                "check --cp-address and that kuma-cp is running")

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=REQUEST_TIMEOUT)
        return http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)

    def _attempt(self, body: bytes) -> Bootstrap:
        conn = self._connection()
        try:
            conn.request("POST", "/bootstrap", body=body,
                         headers={"Accept": "application/json", "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLCertVerificationError as e:
            by = f"by --ca-cert-file={self.cfg.ca_cert_file}" if self.cfg.ca_cert_file else (
                "by the given CA" if self.ca_pem else "by this system")
            raise DpError(f"the control plane's TLS certificate at {self.url} is not trusted {by} "
                          f"({e.verify_message}): pass --ca-cert-file with the CA that signed the control plane's "
                          "certificate (kuma-cp's generated one is <its workDir>/kuma-cp.crt), or --skip-verify")
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(_connection_error(e))
        finally:
            conn.close()
        if resp.status == 200:
            return _parse_response(data, self.url)
        if resp.status == 404 and not data.strip():
            raise _Retryable("dataplane not found", not_found=True)
        if 400 <= resp.status < 500:
            hint = ""
            if resp.status == 404:
                hint = ("; is --cp-address the DP server (port 5678 by default) and not the API server "
                        "(port 5681)?")
            elif resp.status in (401, 403):
                hint = "; check the dataplane token (--dataplane-token-file)"
            raise DpError(f"the control plane refused the bootstrap request (HTTP {resp.status}): "
                          f"{_cp_message(data)}{hint}")
        raise _Retryable(f"unexpected status code {resp.status}"
                         + (f": {_cp_message(data)[:200]}" if data.strip() else ""))


def _connection_error(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no answer within {REQUEST_TIMEOUT:g}s"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host: {e.strerror}"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _parse_response(data: bytes, url: str) -> Bootstrap:
    """BootstrapResponse (bootstrap_response.go): `bootstrap` is Go's []byte, so base64 in JSON."""
    try:
        doc = json.loads(data)
        text = base64.b64decode(doc["bootstrap"], validate=True).decode()
        config = yaml.safe_load(text)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DpError(f"the control plane at {url} sent a response that is not a bootstrap ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]})")
    if not isinstance(config, dict):
        raise DpError(f"the control plane at {url} sent a bootstrap that is not an Envoy configuration")
    sidecar = doc.get("kumaSidecarConfiguration") if isinstance(doc, dict) else None
    return Bootstrap(yaml_text=text, config=config, sidecar=sidecar if isinstance(sidecar, dict) else {})
