"""`POST /bootstrap`: Kuma 2.14's request in, the Envoy bootstrap for kuma-dp out."""
from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.xds.snapshot import DEFAULT_ADMIN_PORT

XDS_CONNECT_TIMEOUT = "1s"


class BootstrapError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BootstrapParams:
    xds_host: str            # the host kuma-dp used to reach us (Envoy connects back to it)
    xds_port: int
    ca_pem: bytes            # what Envoy trusts for the CP's certificate
    delta: bool              # DELTA_GRPC instead of GRPC
    hds: bool = False        # the proxy runs the health checks HDS gives it (dpServer.hds.enabled)


def parse_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BootstrapError(400, "bootstrap request must be a JSON object")
    for field in ("mesh", "name", "proxyType", "dataplaneToken", "dataplaneResource", "caCert", "workdir"):
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise BootstrapError(400, f"bootstrap request: {field} must be a string")
    return body


def _metrics_tls_paths(request: dict[str, Any]) -> dict[str, str]:
    resources = request.get("metricsResources")
    resources = resources if isinstance(resources, dict) else {}
    return {"metricsCertPath": str(resources.get("certPath") or ""), "metricsKeyPath": str(resources.get("keyPath") or "")}


def _transparent_proxy_metadata(request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dns_port = request.get("dnsPort")
    if isinstance(dns_port, int) and not isinstance(dns_port, bool) and dns_port > 0:
        out["dataplane.dns.port"] = str(dns_port)
    if isinstance(request.get("dataplaneConfig"), dict):
        out["transparentProxy"] = request["dataplaneConfig"]
    return out


def admin_socket(workdir: str) -> str:
    """Where Envoy's admin API listens when the Dataplane sets no networking.admin.port."""
    return f"{(workdir or '/tmp').rstrip('/')}/envoy-admin.sock"


def _san_matchers(host: str) -> list[dict[str, Any]]:
    return [{"sanType": "DNS", "matcher": {"exact": host}}, {"sanType": "IP_ADDRESS", "matcher": {"exact": host}}]


def render(request: dict[str, Any], mesh: str, name: str, service: str, params: BootstrapParams,
           admin_port: int | None, aggregate: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The BootstrapResponse: {"bootstrap": <YAML, base64 as Go encodes []byte>, "kumaSidecarConfiguration"}."""
    token = request.get("dataplaneToken") or ""
    proxy_type = request.get("proxyType") or "dataplane"
    workdir = request.get("workdir") or "/tmp"
    version = request.get("version") or {}
    grpc_service: dict[str, Any] = {"envoyGrpc": {"clusterName": "ads_cluster"}}
    if token:
        grpc_service["initialMetadata"] = [{"key": "authorization", "value": token}]
    api_type = "DELTA_GRPC" if params.delta else "GRPC"
    socket_path = admin_socket(workdir)
    bootstrap = {
        "node": {
            "id": f"{mesh}.{name}",
            "cluster": service or name,
            "metadata": {
                "dataplane.proxyType": proxy_type,
                "version": version,
                "features": request.get("features") or [],
                "ipv6Enabled": bool(request.get("ipv6Enabled")),
                "workdir": workdir,
                # ProvidedTLS metrics (MeshMetric, Mesh.metrics): the files Envoy serves the endpoint with
                **{key: path for key, path in _metrics_tls_paths(request).items() if path},
                # As Kuma: the proxy carries the definition kuma-dp registered, so that whichever
                # instance its stream reaches knows to re-register it and to remove it when it leaves.
                **({"dataplane.resource": request["dataplaneResource"]} if request.get("dataplaneResource") else {}),
                # kuma-dp's embedded DNS port and transparent proxy config (`--transparent-proxy`), as Kuma
                # passes them on: the control plane serves DNS records and capture listeners from them
                **_transparent_proxy_metadata(request),
                # Where Envoy's admin API is, as Kuma 2.14 announces it: the control plane gives the proxy a
                # `kuma:envoy:admin` listener at its own address and this port, forwarding there (mTLS only).
                "dataplane.admin.port": str(admin_port or DEFAULT_ADMIN_PORT),
                "dataplane.admin.address": "127.0.0.1",
                **({} if admin_port else {"dataplane.admin.socketPath": socket_path}),
            },
        },
        # Without networking.admin.port the admin API sits on a socket in kuma-dp's work dir, as
        # Kuma 2.14 does (envoyAdminUnixSocket): several proxies on one VM never fight over a port.
        "admin": {"address": ({"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}} if admin_port
                              else {"pipe": {"path": socket_path}}),
                  "accessLogPath": "/dev/null"},
        "layeredRuntime": {"layers": [{"name": "kuma", "staticLayer": {
            "re2.max_program_size.error_level": 4294967295, "re2.max_program_size.warn_level": 1000}}]},
        "dynamicResources": {
            "adsConfig": {"apiType": api_type, "transportApiVersion": "V3", "setNodeOnFirstMessageOnly": True,
                          "grpcServices": [grpc_service]},
            "cdsConfig": {"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"},
            "ldsConfig": {"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"},
        },
        "staticResources": {
            "clusters": [{
                "name": "ads_cluster",
                "type": "STRICT_DNS",
                "connectTimeout": XDS_CONNECT_TIMEOUT,
                "loadAssignment": {"clusterName": "ads_cluster", "endpoints": [{"lbEndpoints": [{"endpoint": {
                    "address": {"socketAddress": {"address": params.xds_host, "portValue": params.xds_port}}}}]}]},
                "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
                "upstreamConnectionOptions": {"tcpKeepalive": {"keepaliveInterval": 10, "keepaliveProbes": 3,
                                                               "keepaliveTime": 10}},
                "transportSocket": {"name": "envoy.transport_sockets.tls", "typedConfig": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": params.xds_host,
                    "commonTlsContext": {
                        "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_2"},
                        "alpnProtocols": ["h2"],
                        "validationContextSdsSecretConfig": {"name": "cp_validation_ctx"}}}},
            }],
            "secrets": [{"name": "cp_validation_ctx", "validationContext": {
                "matchTypedSubjectAltNames": _san_matchers(params.xds_host),
                "trustedCa": {"inlineBytes": base64.b64encode(params.ca_pem).decode()}}}],
        },
    }
    if params.hds and proxy_type == "dataplane":
        # As Kuma: HDS on the same connection as ADS (GRPC also when ADS is delta), with the same token
        bootstrap["hdsConfig"] = {"apiType": "GRPC", "transportApiVersion": "V3", "setNodeOnFirstMessageOnly": True,
                                  "grpcServices": [copy.deepcopy(grpc_service)]}   # no YAML alias
    text = yaml.safe_dump(bootstrap, sort_keys=True)
    return {"bootstrap": base64.b64encode(text.encode()).decode(),
            "kumaSidecarConfiguration": {"networking": {"corefileTemplate": None, "address": ""},
                                         "metrics": {"aggregate": aggregate or []}}}
