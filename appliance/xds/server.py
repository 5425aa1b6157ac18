"""ADS over gRPC: state of the world (StreamAggregatedResources) and delta (DeltaAggregatedResources).

The cache decides what a proxy should have; this module only delivers it, per the xDS protocol:
per-type versions (content hashes), nonces, ACK/NACK, stale requests ignored, nothing resent that
the proxy already has, and pushes ordered make-before-break.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from appliance.xds.watch import NodeMetadata, ProxyWatch, node_metadata
from appliance.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT, WILDCARD_TYPES, Packed
from appliance.xds.stream_state import (USERS_OF_CLUSTERS, TypeState, confirmed, delta_in_place, nonce, sent,
                                        sotw_in_place, sotw_version)

log = logging.getLogger("appliance.xds")

# (the Envoy Node of the stream's first request, gRPC metadata) -> the proxy key (mesh, name),
# or raise PermissionError with the reason
Authenticate = Callable[[object, dict[str, str]], tuple[str, str]]
# (the proxy key, the stream's gRPC metadata) -> None, or raise PermissionError: may the stream go on?
Recheck = Callable[[tuple[str, str], dict[str, str]], None]


@dataclass
class StreamStats:
    """What insights record about one stream."""
    responses_sent: dict[str, int] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)
    nacks: dict[str, int] = field(default_factory=dict)
    last_nack: str = ""


class StreamObserver:
    """Hooks for insights; the default does nothing. A proxy may have several streams at once (a
    restarted kuma-dp's new Envoy while the old one drains): `stats` tells one stream from another."""

    def connected(self, key: tuple[str, str], node: object, delta: bool, stats: StreamStats) -> None: ...
    def disconnected(self, key: tuple[str, str], stats: StreamStats) -> None: ...
    def changed(self, key: tuple[str, str]) -> None: ...


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


@dataclass(eq=False)
class _Close:
    """Put on a stream's queue: end the stream, telling the proxy why."""
    reason: str


@dataclass(eq=False)
class _OpenStream:
    key: tuple[str, str]
    metadata: dict[str, str]
    queue: asyncio.Queue


class ConfigSource(Protocol):
    """What the ADS server needs of a config cache: a watch per proxy stream (its `changed` event says when to
    push), the proxy's resources made ready off the event loop, then read. xds/cache.py's XdsCache is the one
    kuma-cp runs; the protocol tests and benchmarks may pass another."""

    def watch(self, mesh: str, name: str, node: NodeMetadata | None = None) -> ProxyWatch: ...

    def unwatch(self, watch: ProxyWatch) -> None: ...

    async def prepare(self, watch: ProxyWatch) -> None: ...

    def resources(self, watch: ProxyWatch) -> dict[str, dict[str, Packed]]: ...


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cache: ConfigSource, authenticate: Authenticate, observer: StreamObserver | None = None) -> None:
        self.cache = cache
        self.authenticate = authenticate
        self.observer = observer or StreamObserver()
        self._open_streams: set[_OpenStream] = set()

    def recheck(self, check: Recheck, meshes: set[str]) -> int:
        """Close every open stream of a proxy in `meshes` that `check` no longer lets in (a revoked
        token, a removed signing key); on the loop. Returns how many were closed."""
        closed = 0
        for stream in list(self._open_streams):
            if stream.key[0] not in meshes:
                continue
            try:
                check(stream.key, stream.metadata)
            except PermissionError as e:
                stream.queue.put_nowait(_Close(str(e)))
                self._open_streams.discard(stream)
                closed += 1
        return closed

    async def _open(self, node: object, context: grpc.aio.ServicerContext, delta: bool,
                    stats: StreamStats, queue: asyncio.Queue) -> tuple[ProxyWatch, _OpenStream]:
        metadata = _metadata(context)
        try:
            key = self.authenticate(node, metadata)
        except PermissionError as e:
            log.warning("refused xDS stream of %s: %s", getattr(node, "id", ""), e)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            raise
        watch = self.cache.watch(*key, node_metadata(node))
        stream = _OpenStream(key, metadata, queue)
        self._open_streams.add(stream)
        self.observer.connected(key, node, delta, stats)
        return watch, stream

    async def _stream(self, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext, delta: bool,
                      on_request: Callable, on_change: Callable) -> AsyncIterator:
        """One ADS stream: requests and store changes, handled one at a time, in arrival order."""
        queue: asyncio.Queue = asyncio.Queue()
        reader = asyncio.ensure_future(_pump(request_iterator, queue))
        watch: ProxyWatch | None = None
        stream: _OpenStream | None = None
        states: dict[str, TypeState] = {}
        stats = StreamStats()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, _Close):
                    log.warning("closed the xDS stream of %s: %s", ".".join(watch.key).lstrip(".") if watch else "",
                                item.reason)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, item.reason)
                if item is _CHANGED:
                    assert watch is not None
                    watch.changed.clear()
                    await self.cache.prepare(watch)
                    for response in on_change(watch, states, stats):
                        yield response
                    continue
                if watch is None:
                    watch, stream = await self._open(item.node, context, delta, stats, queue)
                    watch.changed.callback = lambda: queue.put_nowait(_CHANGED)
                    if watch.changed.pending:
                        queue.put_nowait(_CHANGED)
                await self.cache.prepare(watch)
                for response in on_request(watch, states, stats, item):
                    yield response
        finally:
            reader.cancel()
            if stream is not None:
                self._open_streams.discard(stream)
            if watch is not None:
                watch.changed.callback = None
                self.cache.unwatch(watch)
                self.observer.disconnected(watch.key, stats)

    # --- state of the world --------------------------------------------------------------------
    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
                                        context: grpc.aio.ServicerContext
                                        ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        # grpc.aio wants an async generator function here, hence the loop
        async for response in self._stream(request_iterator, context, False, self._sotw_request, self._sotw_push):
            yield response

    def _sotw_request(self, watch: ProxyWatch, states: dict[str, TypeState], stats: StreamStats,
                      request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        t = request.type_url
        state = states.setdefault(t, TypeState())
        if request.response_nonce:
            confirmed(t, state, request.response_nonce,
                       request.error_detail.message if request.HasField("error_detail") else None)
            if request.response_nonce != state.nonce:
                return []  # stale: answers a response that has since been replaced
            if request.HasField("error_detail"):
                stats.nacks[t] = stats.nacks.get(t, 0) + 1
                stats.last_nack = request.error_detail.message
                log.warning("%s NACKed %s version %s: %s", ".".join(watch.key), SHORT.get(t, t),
                            state.sent_version, request.error_detail.message)
                self.observer.changed(watch.key)
                if t == CLUSTER and not state.answered:
                    state.answered = True
                    # Envoy keeps its last clusters; the listeners held back for the refused set go now
                    return self._sotw_push(watch, states, stats)
                # keep the previous config; retry only when our content changes
                names = frozenset(request.resource_names) if t not in WILDCARD_TYPES else None
                if names == state.names:
                    return []
            else:
                names = frozenset(request.resource_names) if t not in WILDCARD_TYPES else None
                if state.ack_seen and t not in WILDCARD_TYPES:
                    # Envoy repeats an ACKed request when it re-subscribes (e.g. an updated cluster is
                    # warming and needs its endpoints again): it must get an answer, even if unchanged.
                    state.names = names
                    response = self._sotw_response(watch, t, state, stats, force=True)
                    return [response] if response else []
                state.ack_seen = True
                state.answered = True
                state.accepted = True
                state.acked_version = request.version_info
                stats.acks[t] = stats.acks.get(t, 0) + 1
                self.observer.changed(watch.key)
                if names == state.names:
                    # listeners in place: the clusters they stopped using can go now; clusters warm: the
                    # listeners held back for them can come
                    return self._sotw_push(watch, states, stats) if t in (LISTENER, ROUTE, CLUSTER) else []
        names = frozenset(request.resource_names) if t not in WILDCARD_TYPES else None
        state.names = names
        state.subscribed = True
        response = self._sotw_response(watch, t, state, stats, force=not request.response_nonce)
        return [response] if response else []

    def _sotw_push(self, watch: ProxyWatch, states: dict[str, TypeState],
                   stats: StreamStats) -> list[discovery_pb2.DiscoveryResponse]:
        out = []
        resources = self.cache.resources(watch)
        hold_clusters = not all(sotw_in_place(states.get(t), resources.get(t, {})) for t in USERS_OF_CLUSTERS)
        clusters = states.get(CLUSTER)
        for t in PUSH_ORDER:
            state = states.get(t)
            if t in (LISTENER, ROUTE) and clusters is not None and not clusters.answered:
                # Make-before-break, the other half: Envoy ACKs a cluster set only once its new clusters are
                # warm (have their endpoints, which in SotW it asks for only after it got the clusters).
                # Listeners and routes that use them wait for that ACK (which runs this push again), or a
                # request meets a cluster that is not there yet (503).
                break
            if state and state.subscribed:
                items = resources.get(t, {})
                if t == CLUSTER and hold_clusters and state.last_items is not None:
                    # Make-before-break: a cluster the new listeners or routes stop using (a route removed)
                    # goes only once Envoy has ACKed them (then this push runs again), or a request on its
                    # way would meet an unknown cluster (503).
                    items = {**{n: p for n, p in state.last_items.items() if n not in items}, **items}
                response = self._sotw_response(watch, t, state, stats, force=False, resources={t: items})
                if response:
                    out.append(response)
        return out

    def _sotw_response(self, watch: ProxyWatch, t: str, state: TypeState, stats: StreamStats, force: bool,
                       resources: dict[str, dict[str, Packed]] | None = None
                       ) -> discovery_pb2.DiscoveryResponse | None:
        items = (self.cache.resources(watch) if resources is None else resources).get(t, {})
        version = sotw_version(state, items)
        if not force and version == state.sent_version:
            return None
        chosen: list[Packed] = [p for n, p in sorted(items.items()) if state.names is None or n in state.names]
        if t == CLUSTER:
            state.last_items = {p.name: p for p in chosen}
        state.sent_version = version
        state.answered = False
        state.accepted = False
        state.nonce = nonce()
        state.ack_seen = False
        sent(t, state)
        stats.responses_sent[t] = stats.responses_sent.get(t, 0) + 1
        return discovery_pb2.DiscoveryResponse(version_info=version, resources=[p.any for p in chosen],
                                               type_url=t, nonce=state.nonce)

    # --- delta ---------------------------------------------------------------------------------
    async def DeltaAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
                                       context: grpc.aio.ServicerContext
                                       ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._stream(request_iterator, context, True, self._delta_request, self._delta_push):
            yield response

    def _delta_push(self, watch: ProxyWatch, states: dict[str, TypeState],
                    stats: StreamStats) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        out = []
        resources = self.cache.resources(watch)
        hold_clusters = not all(delta_in_place(states.get(t), resources.get(t, {})) for t in USERS_OF_CLUSTERS)
        for t in PUSH_ORDER:
            state = states.get(t)
            if state and state.subscribed:
                # Make-before-break: clusters are removed only once Envoy ACKed the listeners and routes
                # that stopped using them (then this push runs again).
                response = self._delta_response(watch, t, state, stats, states,
                                                keep_removed=t == CLUSTER and hold_clusters)
                if response:
                    out.append(response)
        return out

    def _delta_request(self, watch: ProxyWatch, states: dict[str, TypeState], stats: StreamStats,
                       request: discovery_pb2.DeltaDiscoveryRequest) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        t = request.type_url
        state = states.get(t)
        if state is None:
            state = states[t] = TypeState()
            # a reconnecting proxy tells us what it has: nothing unchanged is sent again
            state.sent = dict(request.initial_resource_versions)
            clusters = states.get(CLUSTER)
            if t == ENDPOINT and clusters is not None:
                # A reconnecting proxy's CDS request may be answered with changed clusters before its EDS
                # request comes; the versions that request reports are those of the old clusters'
                # assignments. The new clusters warm until their assignment arrives (initial_fetch_timeout,
                # 15 s), so those it got on this stream are sent again whatever version it reports.
                for name in clusters.sent_before_eds:
                    state.sent.pop(name, None)
                clusters.sent_before_eds.clear()
            if t in WILDCARD_TYPES and not request.resource_names_subscribe:
                state.names = None
            else:
                state.names = frozenset()
        if request.response_nonce:
            confirmed(t, state, request.response_nonce,
                       request.error_detail.message if request.HasField("error_detail") else None)
            if request.response_nonce != state.nonce:
                return []
            if request.HasField("error_detail"):
                stats.nacks[t] = stats.nacks.get(t, 0) + 1
                stats.last_nack = request.error_detail.message
                # the previous config stays; the next change of content is sent again
                log.warning("%s NACKed %s: %s", ".".join(watch.key), SHORT.get(t, t), request.error_detail.message)
            else:
                stats.acks[t] = stats.acks.get(t, 0) + 1
                state.accepted = True
                if t in USERS_OF_CLUSTERS:   # in place: the clusters they stopped using can go now
                    self.observer.changed(watch.key)
                    if not request.resource_names_subscribe and not request.resource_names_unsubscribe:
                        return self._delta_push(watch, states, stats)
            self.observer.changed(watch.key)
        subscribe = [n for n in request.resource_names_subscribe if n != "*"]
        for name in subscribe:
            # an explicit (re)subscription wants the resource now, e.g. for a warming cluster,
            # unless the proxy just told us (reconnecting) which version it already has
            if name not in request.initial_resource_versions:
                state.sent.pop(name, None)
        if "*" in request.resource_names_subscribe:
            state.names = None
        if subscribe and state.names is not None:
            state.names = state.names | frozenset(subscribe)
        if request.resource_names_unsubscribe and state.names is not None:
            gone = frozenset(request.resource_names_unsubscribe)
            state.names = state.names - gone
            for name in gone:
                state.sent.pop(name, None)
        state.subscribed = True
        if request.response_nonce and not subscribe and not request.resource_names_unsubscribe:
            return []  # a plain ACK/NACK
        # a fresh subscription gets an answer even when empty; a resumed one only what it lacks
        response = self._delta_response(watch, t, state, stats, states,
                                        force=not request.response_nonce and not state.sent)
        out = [response] if response else []
        endpoints = states.get(ENDPOINT)
        if t == CLUSTER and endpoints is not None and endpoints.subscribed:
            # the load assignments of the clusters just sent (see _delta_response), right behind them
            response = self._delta_response(watch, ENDPOINT, endpoints, stats, states)
            if response:
                out.append(response)
        return out

    def _delta_response(self, watch: ProxyWatch, t: str, state: TypeState, stats: StreamStats,
                        states: dict[str, TypeState], force: bool = False, keep_removed: bool = False
                        ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        items = self.cache.resources(watch).get(t, {})
        wanted = {n: p for n, p in items.items() if state.names is None or n in state.names}
        changed = [p for n, p in sorted(wanted.items()) if state.sent.get(n) != p.version]
        removed = [] if keep_removed else sorted(n for n in state.sent if n not in wanted)
        if not changed and not removed and not force:
            return None
        endpoints = states.get(ENDPOINT)
        if t == CLUSTER and endpoints is not None:
            # Envoy replaces an updated cluster with a new one that warms until its ClusterLoadAssignment
            # arrives, and in delta it does not subscribe again to a name it already has: unless we send
            # the (unchanged) assignment again, the cluster waits out initial_fetch_timeout (15 s), and
            # the proxy's next CDS and LDS changes with it. (An EDS cluster's assignment has its name.)
            for p in changed:
                endpoints.sent.pop(p.name, None)
        elif t == CLUSTER:
            state.sent_before_eds.update(p.name for p in changed)
            state.sent_before_eds.difference_update(removed)
        for p in changed:
            state.sent[p.name] = p.version
        for n in removed:
            del state.sent[n]
        state.nonce = nonce()
        state.accepted = False
        sent(t, state)
        stats.responses_sent[t] = stats.responses_sent.get(t, 0) + 1
        return discovery_pb2.DeltaDiscoveryResponse(
            type_url=t, nonce=state.nonce, removed_resources=removed,
            resources=[discovery_pb2.Resource(name=p.name, version=p.version, resource=p.any) for p in changed])


_END = object()
_CHANGED = object()


async def _pump(requests: AsyncIterator, queue: asyncio.Queue) -> None:
    try:
        async for request in requests:
            await queue.put(request)
    except (asyncio.CancelledError, grpc.aio.AioRpcError):
        pass
    finally:
        await queue.put(_END)
