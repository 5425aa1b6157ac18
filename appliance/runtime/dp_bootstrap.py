"""POST /bootstrap on the DP server: kuma-dp's request registers its proxy and is answered with the
Envoy bootstrap; every other path or method, and every refusal, with Kuma's status and body."""
from __future__ import annotations

from typing import Any

import orjson

from appliance.api import codec
from appliance.api.errors import KumaError
from appliance.core.resources.mesh import enabled_backend
from appliance.core.resources.model import Resource
from appliance.policies.meshmetric import plugin as meshmetric
from appliance.runtime.dp_registration import Registrar
from appliance.store import Store
from appliance.xds import bootstrap

# Kuma's answer (422, plain text) to a bootstrap request without a token while dataplane auth is on
DP_TOKEN_REQUIRED = ("Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > "
                     "/path/file' and provide it via --dataplane-token-file=/path/file argument to Kuma DP")


class BootstrapEndpoint:
    """The DP server's HTTP handler (DpServer's `http`)."""

    def __init__(self, registrar: Registrar, port: int, ca_pem: bytes, delta: bool, hds: bool) -> None:
        """`port`: the DP server's, where the bootstrap points Envoy's xDS; `delta`, `hds`: what Envoy is told to use."""
        self.registrar = registrar
        self.store = registrar.store
        self.auth_enabled = registrar.auth.enabled
        self.port = port
        self.ca_pem = ca_pem
        self.delta = delta
        self.hds = hds

    async def __call__(self, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, str, bytes]:
        if path != "/bootstrap":
            return 404, "text/plain", b"not found"
        if method != "POST":
            return 405, "text/plain", b"use POST"
        try:
            # the REST API's decoder, with its limits on size and nesting
            request = bootstrap.parse_request(codec.parse_body(body or b"null", "application/json", "bootstrap request"))
        except KumaError as e:
            return e.status, "application/json", orjson.dumps(e.body())
        except bootstrap.BootstrapError as e:
            return 400, "application/json", orjson.dumps(KumaError(400, "Bad Request", str(e)).body())
        if self.auth_enabled and not request.get("dataplaneToken") and not request.get("dataplaneTokenPath"):
            return 422, "text/plain; charset=utf-8", DP_TOKEN_REQUIRED.encode()
        egress = request.get("proxyType") == "egress"
        mesh = "" if egress else request.get("mesh") or "default"
        name = request.get("name") or ""
        try:
            dataplane = self.registrar.register(mesh, name, request)
        except KumaError as e:
            return e.status, "application/json", orjson.dumps(e.body())
        if dataplane is None:
            return 404, "text/plain", b""   # kuma-dp retries until the dataplane exists
        host = (headers.get("host") or "localhost").rsplit(":", 1)[0].strip("[]")
        inbounds = (dataplane.content.get("networking") or {}).get("inbound") or []
        service = next((ib.get("tags", {}).get("kuma.io/service") for ib in inbounds if ib.get("tags")), name)
        if egress:
            service = "zone-egress"  # Kuma's node.cluster for a zone egress
        admin_port = ((dataplane.content.get("networking") or {}).get("admin") or {}).get("port")
        params = bootstrap.BootstrapParams(xds_host=host, xds_port=self.port, ca_pem=self.ca_pem,
                                           delta=self.delta, hds=self.hds)
        response = bootstrap.render(request, mesh, dataplane.name, service or name, params, admin_port,
                                    aggregate(self.store, mesh, dataplane) if not egress else [])
        return 200, "application/json", orjson.dumps(response)


def aggregate(store: Store, mesh: str, dataplane: Resource) -> list[dict[str, Any]]:
    """Mesh.metrics' applications to merge into the proxy's scrape (kuma-dp reads them once, as in Kuma)."""
    found = store.get("Mesh", "", mesh)
    if found is None:
        return []
    conf = meshmetric.prometheus_conf(enabled_backend(found.content, "metrics"), dataplane.content.get("metrics"))
    return meshmetric.aggregate(conf, (dataplane.content.get("networking") or {}).get("address") or "")
