"""The data-plane side of kuma-cp: DP server (TLS :5678), bootstrap, ADS, insights, DP lifecycle.

Runs one asyncio loop in its own thread; the store's writer threads reach it only through the
change hub (one thread-safe call per commit).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Callable

import grpc
import orjson
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.health.v3 import hds_pb2_grpc

from appliance.api import codec
from appliance.api.errors import KumaError, from_exception
from appliance.ca.server_cert import ServerCert
from appliance.core.events import Change
from appliance.core.manager import ResourceManager
from appliance.core.resources import dataplane as dataplane_resource
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.core.validation import BadRequest, ValidationError
from appliance.policies.meshmetric import plugin as meshmetric
from appliance.insights.dataplane import STATUS_FLUSH_INTERVAL, InsightRecorder, open_subscriptions
from appliance.runtime.dpserver import DpServer, socket_name
from appliance.store import AlreadyExists, Conflict, NotFound
from appliance.tokens import claims, issuer, signing
from appliance.xds import bootstrap
from appliance.xds.cache import Generate, XdsCache
from appliance.xds.hds import HdsServer
from appliance.xds.health import EnvoyAdmin, HdsSettings
from appliance.xds.server import AdsServer
from appliance.xds.snapshot import enabled_metrics_backend

log = logging.getLogger("appliance.dataplanes")
# Kuma removes a dataplane that kuma-dp registered some seconds after its stream closes.
DEREGISTER_AFTER = 5.0
# Kuma's answer (422, plain text) to a bootstrap request without a token while dataplane auth is on
DP_TOKEN_REQUIRED = ("Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > "
                     "/path/file' and provide it via --dataplane-token-file=/path/file argument to Kuma DP")


class DataplaneServer:
    def __init__(self, manager: ResourceManager, cert: ServerCert, host: str, port: int, instance_id: str,
                 generate: Generate, auth_enabled: bool = True, delta: bool = False, zone: str = "",
                 status_flush_interval: float = STATUS_FLUSH_INTERVAL, work_dir: Path | None = None,
                 hds: HdsSettings | None = None) -> None:
        """`work_dir`: where issued workload certificates are kept across restarts (none: memory only).
        `hds`: dpServer.hds.* (default: Kuma's defaults, enabled)."""
        self.manager = manager
        self.store = manager.store
        self.cert = cert
        self.host, self.port = host, port
        self.instance_id = instance_id
        self.generate = generate
        self.auth_enabled = auth_enabled
        self.delta = delta
        self.zone = zone          # a zone token must be for this zone (or for none)
        self.status_flush_interval = status_flush_interval
        self.work_dir = work_dir
        self.hds_settings = hds or HdsSettings()
        self.hds: HdsServer | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="xds", daemon=True)
        self._registered: set[tuple[str, str]] = set()
        self._pending_removal: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.cache: XdsCache | None = None
        self.insights: InsightRecorder | None = None
        self.ads: AdsServer | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bind (errors raise here, in the caller's thread) and serve."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        self.cache = XdsCache(self.store, self.generate, self.loop,
                              identities_dir=self.work_dir / "identities" if self.work_dir else None)
        self.insights = InsightRecorder(self.store, self.instance_id, self.loop, self.status_flush_interval)
        self.insights.on_connect.append(self._on_connect)
        self.insights.on_disconnect.append(self._on_disconnect)
        self.grpc_name = socket_name("xds")
        self.grpc = grpc.aio.server(options=[("grpc.server.max_pending_requests", 10000),
                                             ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                                             ("grpc.keepalive_permit_without_calls", 1),
                                             ("grpc.http2.min_ping_interval_without_data_ms", 10000)])
        self.ads = AdsServer(self.cache, self._authenticate, self.insights)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads, self.grpc)
        self._unsubscribe = self.store.hub.subscribe(self._from_writer_thread)
        self.cache.on_identity = self._on_identity
        if self.hds_settings.enabled:
            self.hds = HdsServer(self.manager, self.hds_settings, self._authenticate, _envoy_admin, self.loop)
            hds_pb2_grpc.add_HealthDiscoveryServiceServicer_to_server(self.hds, self.grpc)
        # TLS ends in gRPC's C core (its own threads), not on this loop: the front only splices bytes
        credentials = grpc.ssl_server_credentials([(self.cert.key_path.read_bytes(), self.cert.cert_path.read_bytes())])
        if not self.grpc.add_secure_port(f"unix-abstract:{self.grpc_name}", credentials):
            raise RuntimeError("could not start the ADS server (gRPC refused its listening socket)")
        await self.grpc.start()
        self.front = DpServer(self.host, self.port, str(self.cert.cert_path), str(self.cert.key_path),
                              self.grpc_name, self._http)
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

    # --- authentication ----------------------------------------------------------------------
    # As Kuma (pkg/xds/auth): a stream is authenticated on its first request, against the Dataplane
    # its node metadata carries (kuma-dp --dataplane-file) and against the stored one. The stored one
    # is what the stream is served (its certificate, its config), so the token must allow it even
    # when the proxy brings a definition of its own.
    def _authenticate(self, node: object, metadata: dict[str, str]) -> tuple[str, str]:
        """A sidecar's node id is `<mesh>.<name>`; a zone egress's is `.<name>` (it belongs to no mesh)."""
        node_id = getattr(node, "id", "")
        mesh, sep, name = node_id.partition(".")
        if not sep or not name:
            raise PermissionError(f"node id {node_id!r} is not <mesh>.<name>")
        token = _bearer(metadata)
        if self.auth_enabled and not token:
            raise PermissionError("authentication failed: no dataplane token (kuma-dp --dataplane-token-file)")
        if not mesh:
            if self.auth_enabled:
                self._check_zone_token(token, "egress")
            return mesh, name
        raw = _node_definition(node)
        try:
            definition = self._definition(raw, "Dataplane", mesh, name, exact=True) if raw else None
        except KumaError as e:
            raise PermissionError(f"authentication failed: {e.detail}") from None
        stored = self.store.get("Dataplane", mesh, name)
        if self.auth_enabled:
            if definition is None and stored is None:
                raise PermissionError(f'resource "{mesh}.{name}" not found; create a Dataplane in Kuma CP first or '
                                      "pass it as an argument to kuma-dp")
            self._check_token(token, mesh, name, definition, stored)
        if definition is not None:
            try:   # the definition is registered from this stream: the API's rules apply to it
                self._check_rules(definition, stored)
            except KumaError as e:
                raise PermissionError(f"the Dataplane in the node metadata is not valid: {_explain(e)}") from None
        return mesh, name

    def _verified(self, mesh: str, token: str) -> dict[str, Any]:
        """The claims of a dataplane token (zone token for mesh "") that is signed, current and not revoked."""
        try:
            if mesh:
                return issuer.verify_dataplane_token(self.store, mesh, token)
            return issuer.verify_zone_token(self.store, token)
        except (signing.InvalidToken, issuer.SigningKeyNotFound) as e:
            hint = "" if mesh else " (a zone egress needs a zone token: kumactl generate zone-token --scope egress)"
            raise PermissionError(f"authentication failed: {e}{hint}")

    # A token is checked again, on every open stream it opened, when a secret that decides it changes
    # (its mesh's revocations or signing keys): a revoked token loses its stream at once, not at the
    # proxy's next reconnect. Claims are not checked again: they did not change.
    def _from_writer_thread(self, changes: list[Change]) -> None:
        meshes = {mesh for c in changes if (mesh := issuer.proxy_tokens_of(c.type, c.mesh, c.name)) is not None}
        if meshes and self.auth_enabled:
            self.loop.call_soon_threadsafe(self._recheck_tokens, meshes)

    def _recheck_tokens(self, meshes: set[str]) -> None:
        if self.ads is None:
            return

        def check(key: tuple[str, str], metadata: dict[str, str]) -> None:
            self._verified(key[0], _bearer(metadata))
        closed = self.ads.recheck(check, meshes)
        if closed:
            log.info("closed %d xDS stream(s) whose token is no longer valid", closed)

    def _check_zone_token(self, token: str, scope: str) -> None:
        """Kuma's zone-entity check: a zone token whose scope includes `scope`, for this zone."""
        claims = self._verified("", token)
        scopes = claims.get("Scope") or []
        if scopes and scope not in scopes:
            raise PermissionError(f"authentication failed: token cannot be used to authenticate zone entity "
                                  f"({scope} is out of token's scope: {scopes})")
        if claims.get("Zone") and self.zone and claims["Zone"] != self.zone:
            raise PermissionError(f"authentication failed: zone from requestor: {self.zone} is different than "
                                  f"in token: {claims['Zone']}")

    def _check_token(self, token: str, mesh: str, name: str, definition: Resource | None,
                     stored: Resource | None) -> None:
        """The dataplane token must allow the proxy's own definition and the Dataplane stored under its
        name (Kuma's validateUpsert: a token that may not manage the registered proxy cannot replace it)."""
        token_claims = self._verified(mesh, token)
        try:
            if definition is not None:
                claims.check_dataplane(token_claims, mesh, name, definition.content, definition.labels)
        except claims.TokenMismatch as e:
            raise PermissionError(f"authentication failed: {e}")
        try:
            if stored is not None and (definition is None or (stored.content, stored.labels)
                                       != (definition.content, definition.labels)):
                claims.check_dataplane(token_claims, mesh, name, stored.content, stored.labels)
        except claims.TokenMismatch as e:
            prefix = "you are trying to override existing proxy to which you don't have an access.: " if definition else ""
            raise PermissionError(f"authentication failed: {prefix}{e}")

    def _on_identity(self, key: tuple[str, str]) -> None:
        issued = self.cache.identities._issued.get(key) if self.cache else None
        if issued and self.insights:
            self.insights.certificate(key, issued.identity.expires, issued.issued_at)

    # --- kuma-dp registered dataplanes -------------------------------------------------------
    # kuma-dp registers its dataplane at bootstrap, through one instance; its ADS stream may later
    # reach another (several instances behind one address, or after an instance died). The node
    # metadata carries the definition, so the instance holding the stream owns the registration.
    # A proxy may have several streams: a restarted kuma-dp's new Envoy connects while the old one
    # still drains, or someone connects with the proxy's token. The Dataplane goes only when the
    # last of them is gone.
    def _on_connect(self, key: tuple[str, str], node: object) -> None:
        raw = _node_definition(node)
        if not raw:
            return
        pending = self._pending_removal.pop(key, None)
        if pending:
            pending.cancel()
        self._registered.add(key)
        if self.store.get("Dataplane" if key[0] else "ZoneEgress", *key) is not None:
            return
        try:   # removed meanwhile (by the instance the proxy left): register it again
            self._register(key[0], key[1], {"dataplaneResource": raw}, authenticated=True)
            log.info("%s %s registered again from its proxy's metadata", "dataplane" if key[0] else "zone egress",
                     ".".join(key).lstrip("."))
        except KumaError as e:
            log.warning("could not register %s from its proxy's metadata: %s", ".".join(key).lstrip("."), e)

    def _on_disconnect(self, key: tuple[str, str]) -> None:
        still_open = self.insights.open_streams(key) if self.insights else 0
        if still_open:
            log.info("a stream of %s closed; %d still open, it stays registered", ".".join(key).lstrip("."),
                     still_open)
            return
        if key in self._registered:
            self._pending_removal[key] = self.loop.call_later(DEREGISTER_AFTER, self._deregister, key)
        if self.cache:
            self.cache.identities.forget(*key)

    def _deregister(self, key: tuple[str, str]) -> None:
        self._pending_removal.pop(key, None)
        if self.insights and self.insights.is_online(key):
            return
        self._registered.discard(key)
        if self._connected_elsewhere(key):
            return
        try:
            self.manager.delete("Dataplane" if key[0] else "ZoneEgress", *key)
            log.info("%s %s deregistered after its proxy disconnected",
                     "dataplane" if key[0] else "zone egress", ".".join(key).lstrip("."))
        except NotFound:
            pass

    def _connected_elsewhere(self, key: tuple[str, str]) -> bool:
        """A stream of the proxy is open on another instance: that instance owns it now."""
        insight = self.store.get("DataplaneInsight" if key[0] else "ZoneEgressInsight", *key)
        return any(sub.get("controlPlaneInstanceId") != self.instance_id for sub in open_subscriptions(insight))

    # --- POST /bootstrap ---------------------------------------------------------------------
    async def _http(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
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
            dataplane = self._register(mesh, name, request)
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
        params = bootstrap.BootstrapParams(xds_host=host, xds_port=self.port, ca_pem=self.cert.ca_pem,
                                           delta=self.delta, hds=self.hds_settings.enabled)
        response = bootstrap.render(request, mesh, dataplane.name, service or name, params, admin_port,
                                    self._aggregate(mesh, dataplane) if not egress else [])
        return 200, "application/json", orjson.dumps(response)

    def _aggregate(self, mesh: str, dataplane: Resource) -> list[dict[str, Any]]:
        """Mesh.metrics' applications to merge into the proxy's scrape (kuma-dp reads them once, as in Kuma)."""
        found = self.manager.store.get("Mesh", "", mesh)
        if found is None:
            return []
        conf = meshmetric.prometheus_conf(enabled_metrics_backend(found), dataplane.content.get("metrics"))
        return meshmetric.aggregate(conf, (dataplane.content.get("networking") or {}).get("address") or "")

    def _definition(self, raw: Any, type_name: str, mesh: str, name: str, exact: bool = False) -> Resource:
        """kuma-dp's definition of its proxy (YAML or JSON), decoded with the REST API's limits and
        validated as the API does. `exact`: it must be for `mesh`/`name` (the node id of its stream);
        otherwise these fill in what it leaves out."""
        if not isinstance(raw, str):
            raise KumaError(400, "Bad Request", "invalid dataplaneResource: expected a string")
        body = codec.parse_body(raw.encode(), None, "dataplaneResource")
        if not isinstance(body, dict):
            raise KumaError(400, "Bad Request", "invalid dataplaneResource: expected an object")
        try:
            res = codec.decode(registry.get(type_name), body)
        except ValidationError as e:
            raise KumaError(400, f"Invalid {type_name}", "Resource is not valid", e.violations)
        if exact and (res.mesh if mesh else "", res.name) != (mesh, name):
            raise KumaError(400, "Bad Request", f"proxyId {mesh}.{name} does not match proxy resource "
                            f"{res.mesh}.{res.name}")
        res.mesh = res.mesh or mesh if mesh else ""
        res.name = res.name or name
        return res

    def _register(self, mesh: str, name: str, request: dict[str, Any],
                  authenticated: bool = False) -> Resource | None:
        """Create or update the proxy's resource from kuma-dp's definition: a Dataplane, or (mesh "") a ZoneEgress.

        `authenticated`: the caller checked the proxy's token already (its ADS stream), whose node id
        is `mesh`.`name`."""
        type_name = "Dataplane" if mesh else "ZoneEgress"
        raw = request.get("dataplaneResource")
        token = request.get("dataplaneToken") or ""
        if not raw:
            current = self.store.get(type_name, mesh, name)
            if current is not None and self.auth_enabled and token and not authenticated:
                self._authorize_bootstrap(token, mesh, name, None, current)
            return current
        res = self._definition(raw, type_name, mesh, name, exact=authenticated)
        key = (res.mesh, res.name)
        current = self.store.get(type_name, *key)
        if self.auth_enabled and not authenticated:
            self._authorize_bootstrap(token, res.mesh, res.name, res, current)
        self._check_rules(res, current)
        if current is not None and type_name == "Dataplane":
            res.content = dataplane_resource.keep_probed_health(res.content, current.content)
        pending = self._pending_removal.pop(key, None)
        if pending:
            pending.cancel()
        try:
            if current is None:
                self.manager.create(res)
            elif current.content != res.content or current.labels != self.manager.compute_labels(
                    registry.get(type_name), res):
                self.manager.update(res, current.version)
        except (AlreadyExists, Conflict):
            pass  # registered concurrently: what is stored now is served
        except Exception as e:
            raise from_exception(e, "Could not register the dataplane")
        self._registered.add(key)
        return self.store.get(type_name, *key)

    def _check_rules(self, res: Resource, current: Resource | None) -> None:
        """What the REST API refuses, kuma-dp cannot register either: the same rules, the same answer."""
        try:
            self.manager.check_write(registry.get(res.type), res, current)
        except (ValidationError, BadRequest) as e:
            raise from_exception(e, "Could not process a resource")

    def _authorize_bootstrap(self, token: str, mesh: str, name: str, definition: Resource | None,
                             current: Resource | None) -> None:
        try:
            if mesh:
                self._check_token(token, mesh, name, definition, current)
            else:
                self._check_zone_token(token, "egress")
        except PermissionError as e:
            raise KumaError(401, "Unauthenticated", str(e))


def _explain(e: KumaError) -> str:
    """An API error as one line (an ADS refusal has only a message): the detail, then each field's reason."""
    return "; ".join([e.detail] + [f"{v.field}: {v.reason}" for v in e.invalid])


def _node_definition(node: object) -> str:
    """The Dataplane kuma-dp put in its Envoy's node metadata (--dataplane-file), or ""."""
    fields = getattr(getattr(node, "metadata", None), "fields", {})
    return fields["dataplane.resource"].string_value if "dataplane.resource" in fields else ""


def _bearer(metadata: dict[str, str]) -> str:
    """The token a stream's gRPC metadata carries (kuma-dp sends `authorization: <token>`)."""
    return metadata.get("authorization", "").removeprefix("Bearer ").strip()


def _envoy_admin(dataplane: dict[str, Any], node: object) -> EnvoyAdmin:
    """Where the proxy's Envoy admin listens, as its bootstrap put it: networking.admin.port, else the socket in
    kuma-dp's work dir (its node metadata)."""
    port = ((dataplane.get("networking") or {}).get("admin") or {}).get("port")
    if port:
        return EnvoyAdmin(port=int(port))
    fields = getattr(getattr(node, "metadata", None), "fields", {})
    workdir = fields["workdir"].string_value if "workdir" in fields else ""
    return EnvoyAdmin(pipe=bootstrap.admin_socket(workdir))
