"""The fake Envoy of the fleet benchmark: one asyncio ADS client per proxy, many per process.

It speaks ADS as Envoy does, so the control plane's consistency is tested, not just its speed:
- state of the world by default (`delta=True`: the incremental protocol); CDS first, LDS once the
  clusters are warm (every EDS cluster has its endpoints), as Envoy's cluster manager does;
- after clusters: EDS for every EDS cluster; after listeners: RDS for every route configuration an
  HTTP connection manager names; SDS for every secret a TLS context of a listener or cluster names;
- every response ACKed (SotW: version_info + response_nonce + the current names; delta: the nonce),
  or NACKed (error_detail, the previous version kept) when `nack_every` says so;
- on a broken stream: reconnect with jittered exponential backoff and resend every subscription
  (SotW: with the versions it holds; delta: `initial_resource_versions`).

Each client records when its streams opened, when it first held a complete config, and one event
per response: (type index, received, ACK written, wire bytes, NACKed, endpoints of the watched cluster).
All times are `time.monotonic()`, which is one clock for every process on the machine.

`worker_main` runs a share of the fleet in its own process with its own event loop and answers the
orchestrator's commands on a pipe (see `_Worker.handle`).
"""
from __future__ import annotations

import asyncio
import random
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TYPES = (CDS, EDS, LDS, RDS, SDS)          # an event's type is an index into this
SHORT = ("CDS", "EDS", "LDS", "RDS", "SDS")
_INDEX = {t: i for i, t in enumerate(TYPES)}
NAMED = (EDS, RDS, SDS)                     # requested by name; CDS and LDS are wildcard
_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
_DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


@dataclass
class Options:
    target: str                      # host:port of the DP server
    ca_pem: bytes                    # the DP server's certificate (self-signed)
    delta: bool = False
    nack_every: int = 0              # NACK every K-th response after the first complete config; 0: never
    watch_cluster: str = "svc-0"     # events record this cluster's endpoint count (churn scenario)
    backoff_base: float = 0.25       # reconnect: jittered exponential backoff, seconds
    backoff_max: float = 1.0
    tokens: dict[str, str] = field(default_factory=dict)   # dataplane name -> token; empty: no auth
    keep_raw: frozenset[str] = frozenset()                # names whose resources' bytes are kept (checks)


# --- what a resource names ---------------------------------------------------------------------

@dataclass(frozen=True)
class Info:
    name: str
    crc: int
    eds: str = ""                    # a cluster of type EDS: the ClusterLoadAssignment it needs
    rds: tuple[str, ...] = ()        # a listener: route configurations its HCMs name
    sds: tuple[str, ...] = ()        # secrets named by TLS contexts
    endpoints: int = -1              # a ClusterLoadAssignment: its number of endpoints


# Many proxies get the same bytes (shared clusters, endpoints, CA): parse each distinct value once.
_PARSED: dict[tuple[str, bytes], Info] = {}


def _tls_secrets(socket: Any, down: bool) -> list[str]:
    if not socket.HasField("typed_config"):
        return []
    url = socket.typed_config.type_url
    if url == _TLS_UP:
        common = tls_pb2.UpstreamTlsContext.FromString(socket.typed_config.value).common_tls_context
    elif url == _TLS_DOWN:
        common = tls_pb2.DownstreamTlsContext.FromString(socket.typed_config.value).common_tls_context
    else:
        return []
    out = [s.name for s in common.tls_certificate_sds_secret_configs]
    if common.HasField("validation_context_sds_secret_config"):
        out.append(common.validation_context_sds_secret_config.name)
    if common.HasField("combined_validation_context"):
        cvc = common.combined_validation_context
        if cvc.HasField("validation_context_sds_secret_config"):
            out.append(cvc.validation_context_sds_secret_config.name)
    return out


def parse(type_url: str, value: bytes) -> Info:
    key = (type_url, value)
    info = _PARSED.get(key)
    if info is not None:
        return info
    crc = zlib.crc32(value)
    if type_url == CDS:
        c = cluster_pb2.Cluster.FromString(value)
        sds = _tls_secrets(c.transport_socket, False) if c.HasField("transport_socket") else []
        for m in c.transport_socket_matches:
            sds += _tls_secrets(m.transport_socket, False)
        eds = (c.eds_cluster_config.service_name or c.name) if c.type == cluster_pb2.Cluster.EDS else ""
        info = Info(c.name, crc, eds=eds, sds=tuple(sds))
    elif type_url == LDS:
        lis = listener_pb2.Listener.FromString(value)
        chains = list(lis.filter_chains)
        if lis.HasField("default_filter_chain"):
            chains.append(lis.default_filter_chain)
        rds: list[str] = []
        sds = []
        for chain in chains:
            if chain.HasField("transport_socket"):
                sds += _tls_secrets(chain.transport_socket, True)
            for f in chain.filters:
                if f.typed_config.type_url == _HCM:
                    hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                    if hcm.HasField("rds"):
                        rds.append(hcm.rds.route_config_name)
        info = Info(lis.name, crc, rds=tuple(rds), sds=tuple(sds))
    elif type_url == EDS:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(value)
        info = Info(cla.cluster_name, crc, endpoints=sum(len(e.lb_endpoints) for e in cla.endpoints))
    elif type_url == RDS:
        info = Info(route_pb2.RouteConfiguration.FromString(value).name, crc)
    elif type_url == SDS:
        info = Info(secret_pb2.Secret.FromString(value).name, crc)
    else:
        info = Info("", crc)
    if len(_PARSED) > 50_000:
        _PARSED.clear()
    _PARSED[key] = info
    return info


def _sotw_response(raw: bytes) -> tuple[int, discovery_pb2.DiscoveryResponse]:
    return len(raw), discovery_pb2.DiscoveryResponse.FromString(raw)


def _delta_response(raw: bytes) -> tuple[int, discovery_pb2.DeltaDiscoveryResponse]:
    return len(raw), discovery_pb2.DeltaDiscoveryResponse.FromString(raw)


class StreamEnded(Exception):
    pass


# --- one proxy ---------------------------------------------------------------------------------

class FakeEnvoy:
    def __init__(self, mesh: str, name: str, channel: grpc.aio.Channel, opts: Options) -> None:
        self.name = name
        self.opts = opts
        self.node = base_pb2.Node(id=f"{mesh}.{name}", cluster=name, user_agent_name="envoy")
        token = opts.tokens.get(name)
        self.metadata = (("authorization", token),) if token else None
        if opts.delta:
            self.method = channel.stream_stream(
                _DELTA, request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=_delta_response)
        else:
            self.method = channel.stream_stream(
                _SOTW, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=_sotw_response)
        self.keep_raw = name in opts.keep_raw
        # what this Envoy applied (ACKed), and what the CP sent last (NACKed or not)
        self.accepted: dict[str, dict[str, Info]] = {t: {} for t in TYPES}
        self.received: dict[str, dict[str, Info]] = {t: {} for t in TYPES}
        self.raw: dict[str, dict[str, bytes]] = {t: {} for t in TYPES}
        self.versions: dict[str, str] = {}              # SotW: accepted version_info per type
        self.dversions: dict[str, dict[str, str]] = {t: {} for t in TYPES}   # delta: per resource
        self.initialized: set[str] = set()              # types that got at least one response ever
        self.want: dict[str, frozenset[str]] = {t: frozenset() for t in NAMED}
        self.lds_started = False
        # per stream
        self.call: Any = None
        self.stream_no = 0
        self.nonces: dict[str, str] = {}
        self.requested: dict[str, frozenset[str]] = {}  # SotW: names sent on this stream, per type
        self.got: set[str] = set()                      # types answered on this stream
        self.connected = False
        self.stream_open_t = 0.0
        self.stream_first_recv_t = 0.0
        self.stream_synced_t = 0.0
        self.first_node = True
        # figures
        self.open_t = 0.0
        self.first_complete_t = 0.0
        self.bytes_to_complete = 0
        self.responses = 0
        self.after_complete = 0
        self.nacks = 0
        self.bytes = 0
        self.last_recv = 0.0
        self.events: list[tuple] = []
        self.last_error = ""
        self.error_counts: dict[str, int] = {}         # every stream that ended, by reason
        self.nacked_last: set[str] = set()             # types whose latest response was NACKed

    # --- state -----------------------------------------------------------------------------
    def complete(self) -> bool:
        if CDS not in self.initialized or LDS not in self.initialized:
            return False
        return all(self.want[t] <= self.accepted[t].keys() for t in NAMED)

    def delivered(self) -> bool:
        """The CP sent every name this Envoy asks for (accepted or, with `nack_every`, NACKed)."""
        if CDS not in self.initialized or LDS not in self.initialized:
            return False
        return all(self.want[t] <= self.received[t].keys() for t in NAMED)

    def synced(self) -> bool:
        """Delivered, on a live stream that answered every subscription (SotW always answers)."""
        if not self.connected or not self.delivered():
            return False
        if self.opts.delta:
            return True
        return all(t in self.got for t in self.requested)

    def missing(self) -> dict[str, list[str]]:
        out = {SHORT[_INDEX[t]]: sorted(self.want[t] - self.received[t].keys()) for t in NAMED}
        out = {k: v for k, v in out.items() if v}
        for t in (CDS, LDS):
            if t not in self.initialized:
                out[SHORT[_INDEX[t]]] = ["(no response)"]
        return out

    def _wants_after(self, t: str) -> list[str]:
        """Recompute the named subscriptions from the accepted clusters and listeners; the types that changed."""
        changed = []
        clusters, listeners = self.accepted[CDS].values(), self.accepted[LDS].values()
        new = {
            EDS: frozenset(c.eds for c in clusters if c.eds),
            RDS: frozenset(r for lis in listeners for r in lis.rds),
            SDS: frozenset(s for x in (*clusters, *listeners) for s in x.sds),
        }
        for nt in NAMED:
            if new[nt] != self.want[nt]:
                self.want[nt] = new[nt]
                changed.append(nt)
        return changed

    def _maybe_start_lds(self) -> bool:
        """Envoy starts LDS once the clusters are warm (every EDS cluster has its endpoints)."""
        if self.lds_started or CDS not in self.initialized:
            return False
        if not self.want[EDS] <= self.accepted[EDS].keys():
            return False
        self.lds_started = True
        return True

    def _should_nack(self) -> bool:
        if not self.opts.nack_every or not self.first_complete_t:
            return False
        self.after_complete += 1
        return self.after_complete % self.opts.nack_every == 0

    # --- the stream ------------------------------------------------------------------------
    async def run(self) -> None:
        attempt = 0
        while True:
            self.last_error = ""
            try:
                await self._stream()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                self.last_error = f"{e.code().name}: {e.details()}"
            except (StreamEnded, grpc.aio.UsageError, ConnectionError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
            finally:
                if self.last_error:
                    self.error_counts[self.last_error] = self.error_counts.get(self.last_error, 0) + 1
                self.connected = False
                if self.call is not None:
                    self.call.cancel()
                    self.call = None
            if self.stream_first_recv_t:
                attempt = 0
            await asyncio.sleep(random.uniform(0, min(self.opts.backoff_max, self.opts.backoff_base * 2 ** attempt)))
            attempt += 1

    async def _write(self, request: Any) -> None:
        if self.first_node:
            request.node.CopyFrom(self.node)
            self.first_node = False
        await self.call.write(request)

    async def _stream(self) -> None:
        self.stream_no += 1
        self.nonces, self.requested, self.got = {}, {}, set()
        self.first_node = True
        self.stream_first_recv_t = self.stream_synced_t = 0.0
        self.call = self.method(metadata=self.metadata)
        self.stream_open_t = time.monotonic()
        if not self.open_t:
            self.open_t = self.stream_open_t
        self.connected = True
        # every subscription Envoy holds, in its order: clusters, endpoints, listeners, routes, secrets
        types = [CDS] + [t for t in (EDS,) if self.want[t]] + ([LDS] if self.lds_started else []) \
            + [t for t in (RDS, SDS) if self.want[t]]
        for t in types:
            await self._subscribe(t, initial=True)
        on_response = self._on_delta if self.opts.delta else self._on_sotw
        while True:
            message = await self.call.read()
            if message is grpc.aio.EOF:
                raise StreamEnded("the control plane closed the stream")
            await on_response(*message)

    async def _subscribe(self, t: str, initial: bool = False, previous: frozenset[str] = frozenset()) -> None:
        if self.opts.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(type_url=t)
            if initial:
                request.initial_resource_versions.update(self.dversions[t])
                if t in NAMED:
                    request.resource_names_subscribe.extend(sorted(self.want[t]))
            else:
                request.resource_names_subscribe.extend(sorted(self.want[t] - previous))
                request.resource_names_unsubscribe.extend(sorted(previous - self.want[t]))
        else:
            names = self.want[t] if t in NAMED else frozenset()
            request = discovery_pb2.DiscoveryRequest(type_url=t, version_info=self.versions.get(t, ""),
                                                     response_nonce=self.nonces.get(t, ""),
                                                     resource_names=sorted(names))
            self.requested[t] = names
        await self._write(request)

    def _record(self, t: str, recv: float, nbytes: int, nacked: bool, infos: dict[str, Info]) -> None:
        self.responses += 1
        self.bytes += nbytes
        self.last_recv = recv
        if not self.stream_first_recv_t:
            self.stream_first_recv_t = recv
        self.got.add(t)
        if nacked:
            self.nacks += 1
            self.nacked_last.add(t)
        else:
            self.nacked_last.discard(t)
        if not self.first_complete_t:
            self.bytes_to_complete += nbytes
        watched = infos.get(self.opts.watch_cluster) if t == EDS else None
        self.events.append((_INDEX[t], recv, 0.0, nbytes, nacked, watched.endpoints if watched else -1,
                            self.stream_no, len(infos)))

    def _acked(self) -> None:
        now = time.monotonic()
        event = self.events[-1]
        self.events[-1] = (event[0], event[1], now, *event[3:])
        if not self.first_complete_t and self.complete():
            self.first_complete_t = now
        if not self.stream_synced_t and self.synced():
            self.stream_synced_t = now

    async def _on_sotw(self, nbytes: int, resp: discovery_pb2.DiscoveryResponse) -> None:
        recv = time.monotonic()
        t = resp.type_url
        infos: dict[str, Info] = {}
        for a in resp.resources:
            info = parse(t, a.value)
            infos[info.name] = info
            if self.keep_raw:
                self.raw[t][info.name] = a.value
        if self.keep_raw:
            self.raw[t] = {n: v for n, v in self.raw[t].items() if n in infos}
        self.received[t] = infos
        nack = self._should_nack()
        self._record(t, recv, nbytes, nack, infos)
        self.nonces[t] = resp.nonce
        if nack:
            await self._write(discovery_pb2.DiscoveryRequest(
                type_url=t, version_info=self.versions.get(t, ""), response_nonce=resp.nonce,
                resource_names=sorted(self.requested.get(t, ())),
                error_detail=status_pb2.Status(code=3, message=f"fake NACK of {t.rsplit('.', 1)[-1]}")))
            self._acked()
            return
        self.accepted[t] = infos
        self.versions[t] = resp.version_info
        self.initialized.add(t)
        changed = self._wants_after(t) if t in (CDS, LDS) else []
        await self._write(discovery_pb2.DiscoveryRequest(
            type_url=t, version_info=resp.version_info, response_nonce=resp.nonce,
            resource_names=sorted(self.requested.get(t, ()))))
        for nt in changed:
            if self.want[nt] or nt in self.requested:
                await self._subscribe(nt)
        if self._maybe_start_lds():
            await self._subscribe(LDS)
        self._acked()

    async def _on_delta(self, nbytes: int, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        recv = time.monotonic()
        t = resp.type_url
        # what the CP believes we have (it counts a NACKed resource as sent) and what we applied
        received, infos = dict(self.received[t]), dict(self.accepted[t])
        versions = dict(self.dversions[t])
        raw = self.raw[t] if self.keep_raw else None
        changed: dict[str, Info] = {}
        for r in resp.resources:
            info = changed[r.name] = parse(t, r.resource.value)
            received[r.name] = infos[r.name] = info
            versions[r.name] = r.version
            if raw is not None:
                raw[r.name] = r.resource.value
        for n in resp.removed_resources:
            received.pop(n, None)
            infos.pop(n, None)
            versions.pop(n, None)
            if raw is not None:
                raw.pop(n, None)
        self.received[t] = received
        nack = self._should_nack()
        self._record(t, recv, nbytes, nack, changed)
        self.nonces[t] = resp.nonce
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=t, response_nonce=resp.nonce)
        if nack:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=f"fake NACK of {t.rsplit('.', 1)[-1]}"))
            await self._write(request)
            self._acked()
            return
        self.accepted[t] = infos
        self.dversions[t] = versions
        self.initialized.add(t)
        before = dict(self.want)
        resubscribe = self._wants_after(t) if t in (CDS, LDS) else []
        await self._write(request)
        for nt in resubscribe:
            # an unsubscribed resource is forgotten, as Envoy does
            for gone in before[nt] - self.want[nt]:
                self.accepted[nt].pop(gone, None)
                self.dversions[nt].pop(gone, None)
                self.received[nt].pop(gone, None)
                self.raw[nt].pop(gone, None)
            await self._subscribe(nt, previous=before[nt])
        if self._maybe_start_lds():
            await self._subscribe(LDS, initial=True)
        self._acked()


# --- one process of the fleet ------------------------------------------------------------------

def _channel(opts: Options) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=opts.ca_pem)
    return grpc.aio.secure_channel(opts.target, credentials, options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.use_local_subchannel_pool", 1),      # one TCP connection per proxy, as real Envoys
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # short reconnect backoff for the restart scenario; the connect deadline stays grpc's 20 s
        # (grpc.min_reconnect_backoff_ms would shorten it and make a busy CP look refused)
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ])


class _Worker:
    def __init__(self, conn: Connection, mesh: str, names: list[str], opts: Options) -> None:
        self.conn = conn
        self.opts = opts
        self.channels = {n: _channel(opts) for n in names}
        self.clients = {n: FakeEnvoy(mesh, n, self.channels[n], opts) for n in names}
        self.tasks: list[asyncio.Task] = []
        self.done = asyncio.Event()

    def on_readable(self) -> None:
        try:
            command, *args = self.conn.recv()
        except EOFError:
            self.done.set()
            return
        reply = getattr(self, f"cmd_{command}")(*args)
        if reply is not None:
            self.conn.send(reply)

    def cmd_start(self) -> str:
        self.tasks = [asyncio.ensure_future(c.run()) for c in self.clients.values()]
        return "started"

    def cmd_status(self, since: float = 0.0) -> dict:
        cs = self.clients.values()
        errors: dict[str, int] = {}
        for c in cs:
            for reason, count in c.error_counts.items():
                errors[reason] = errors.get(reason, 0) + count
        return {"clients": len(self.clients), "connected": sum(c.connected for c in cs),
                "complete": sum(bool(c.first_complete_t) for c in cs),
                "synced": sum(c.synced() for c in cs),
                "responded_since": sum(c.stream_first_recv_t >= since for c in cs) if since else 0,
                "updated_since": sum(c.last_recv >= since for c in cs) if since else 0,
                "responses": sum(c.responses for c in cs), "nacks": sum(c.nacks for c in cs),
                "reconnects": sum(max(0, c.stream_no - 1) for c in cs),
                "last_recv": max((c.last_recv for c in cs), default=0.0), "errors": errors}

    def cmd_connect(self) -> dict:
        return {n: (c.open_t, c.first_complete_t, c.bytes_to_complete) for n, c in self.clients.items()}

    def cmd_events(self, since: float) -> dict:
        return {n: [e for e in c.events if e[1] >= since] for n, c in self.clients.items()}

    def cmd_first_acks(self, since: float, types: list[int]) -> dict:
        """Per proxy, when it ACKed the first response of one of `types` received since `since` (0.0: none yet)."""
        out = {}
        for n, c in self.clients.items():
            first = 0.0
            for e in reversed(c.events):
                if e[1] < since:
                    break
                if e[0] in types and e[2]:
                    first = e[2]
            out[n] = first
        return out

    def cmd_streams(self) -> dict:
        return {n: (c.stream_no, c.stream_open_t, c.stream_first_recv_t, c.stream_synced_t)
                for n, c in self.clients.items()}

    def cmd_final(self) -> dict:
        out: dict[str, Any] = {"unsynced": {}, "resources": {}}
        for n, c in self.clients.items():
            if not c.synced():
                out["unsynced"][n] = {"connected": c.connected, "missing": c.missing(), "error": c.last_error}
            if c.keep_raw:
                out["resources"][n] = {
                    "received": {SHORT[_INDEX[t]]: {k: c.raw[t].get(k, b"") for k in c.received[t]} for t in TYPES},
                    "accepted": {SHORT[_INDEX[t]]: sorted(c.accepted[t]) for t in TYPES},
                    "nacked_last": sorted(SHORT[_INDEX[t]] for t in c.nacked_last)}
        return out

    def cmd_stop(self) -> str:
        self.done.set()
        return "stopped"


async def _serve(conn: Connection, mesh: str, names: list[str], opts: Options) -> None:
    worker = _Worker(conn, mesh, names, opts)
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), worker.on_readable)
    conn.send("ready")
    await worker.done.wait()
    loop.remove_reader(conn.fileno())
    for task in worker.tasks:
        task.cancel()
    await asyncio.gather(*worker.tasks, return_exceptions=True)
    await asyncio.gather(*(ch.close() for ch in worker.channels.values()), return_exceptions=True)


def worker_main(conn: Connection, mesh: str, names: list[str], opts: Options) -> None:
    """Entry point of a fleet process (multiprocessing, spawn)."""
    asyncio.run(_serve(conn, mesh, names, opts))
    try:
        conn.send("exited")
    except (BrokenPipeError, OSError):
        pass
