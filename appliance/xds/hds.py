"""HDS over gRPC (envoy.service.health.v3.HealthDiscoveryService), on the ADS server's port.

Each proxy's Envoy opens one stream: its first message names the proxy (authenticated as its ADS stream is),
we answer with the health checks it should run (xds/health.py), and Envoy reports the results every
`dpServer.hds.interval`. A report that changes an inbound's readiness is written into the Dataplane, which
takes the inbound out of (or back into) its callers' endpoints.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

import grpc
from envoy.service.health.v3 import hds_pb2, hds_pb2_grpc
from envoy.service.health.v3.hds_pb2 import HealthCheckRequestOrEndpointHealthResponse as HdsRequest

from appliance.core.events import Change
from appliance.core.manager import ResourceManager
from appliance.store import Conflict, NotFound
from appliance.xds.health import EnvoyAdmin, HdsSettings, Report, apply_report, read_report, specifier
from appliance.xds.server import _END, Recheck, _pump   # the ADS streams' request reader and token recheck

log = logging.getLogger("appliance.hds")

# (the Envoy Node of the stream's first request, gRPC metadata) -> the proxy key (mesh, name),
# or raise PermissionError with the reason
Authenticate = Callable[[object, dict[str, str]], tuple[str, str]]
# (the proxy's Dataplane content, its Envoy Node) -> where that Envoy's admin listens
AdminOf = Callable[[dict[str, Any], object], EnvoyAdmin]

_CHANGED = object()
_WRITE_ATTEMPTS = 5


class _Stream:
    __slots__ = ("key", "queue", "metadata")

    def __init__(self, key: tuple[str, str], queue: asyncio.Queue, metadata: dict[str, str]) -> None:
        self.key = key
        self.queue = queue
        self.metadata = metadata   # its gRPC metadata (the token), checked again when tokens change


class _Close:
    """Put on a stream's queue: end it with PERMISSION_DENIED and this reason."""
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class HdsServer(hds_pb2_grpc.HealthDiscoveryServiceServicer):
    def __init__(self, manager: ResourceManager, settings: HdsSettings, authenticate: Authenticate,
                 admin_of: AdminOf, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = manager
        self.settings = settings
        self.authenticate = authenticate
        self.admin_of = admin_of
        self.loop = loop
        # per proxy, its open streams, oldest first: only the newest one's reports count (a restarted kuma-dp's
        # old Envoy, draining, reports itself not ready while the new one serves)
        self._streams: dict[tuple[str, str], list[_Stream]] = {}
        # Store reads and writes off the xDS loop: a database that does not answer must not stall ADS
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hds")
        self._unsubscribe = manager.store.hub.subscribe(self._from_writer_thread)

    def close(self) -> None:
        self._unsubscribe()
        self._io.shutdown(wait=False, cancel_futures=True)

    def _from_writer_thread(self, changes: list[Change]) -> None:
        keys = {(c.mesh, c.name) for c in changes if c.type == "Dataplane"}
        if keys:
            self.loop.call_soon_threadsafe(self._changed, keys)

    def recheck(self, check: Recheck, meshes: set[str]) -> int:
        """Close every open stream of a proxy in `meshes` whose token `check` no longer lets in, as the ADS
        streams are closed: a revoked proxy must not go on reporting its inbounds' health. On the loop."""
        closed = 0
        for streams in list(self._streams.values()):
            for stream in list(streams):
                if stream.key[0] not in meshes:
                    continue
                try:
                    check(stream.key, stream.metadata)
                except PermissionError as e:
                    streams.remove(stream)
                    stream.queue.put_nowait(_Close(str(e)))
                    closed += 1
        for key in [k for k, streams in self._streams.items() if not streams]:
            del self._streams[key]
        return closed

    def _changed(self, keys: set[tuple[str, str]]) -> None:
        for key in keys:
            for stream in self._streams.get(key, ()):
                stream.queue.put_nowait(_CHANGED)

    async def StreamHealthCheck(self, request_iterator: AsyncIterator[HdsRequest],
                                context: grpc.aio.ServicerContext) -> AsyncIterator[hds_pb2.HealthCheckSpecifier]:
        queue: asyncio.Queue = asyncio.Queue()
        reader = asyncio.ensure_future(_pump(request_iterator, queue))
        stream: _Stream | None = None
        node: object = None
        sent = b""
        last: Report | None = None   # the last report, as written: an unchanged one is not checked again
        refresh_at = 0.0             # as Kuma, the checks are regenerated every refreshInterval (changes: at once)
        try:
            while True:
                try:
                    wait = None if stream is None else max(0.0, refresh_at - self.loop.time())
                    item = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    item = _CHANGED
                if item is _END:
                    return
                if isinstance(item, _Close):
                    log.info("closed the HDS stream of %s.%s: %s", *stream.key, item.reason)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, item.reason)
                if stream is None:
                    if item.WhichOneof("request_type") != "health_check_request":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a "
                                            "HealthCheckRequest naming the proxy")
                    node = item.health_check_request.node
                    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
                    try:
                        key = self.authenticate(node, metadata)
                    except PermissionError as e:
                        log.warning("refused HDS stream of %s: %s", getattr(node, "id", ""), e)
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
                    if not key[0]:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "HDS is for dataplanes")
                    stream = _Stream(key, queue, metadata)
                    self._streams.setdefault(key, []).append(stream)
                    item = _CHANGED
                if item is _CHANGED:
                    refresh_at = self.loop.time() + self.settings.refresh_interval / 1e9
                    last = None   # the Dataplane may have changed under the last report: compare again
                    out = await self.loop.run_in_executor(self._io, self._specifier, stream.key, node)
                    if out is not None and (data := out.SerializeToString(deterministic=True)) != sent:
                        sent = data
                        yield out
                    continue
                if item.WhichOneof("request_type") != "endpoint_health_response":
                    continue   # a repeated HealthCheckRequest: the checks it gets stay the same
                if self._streams[stream.key][-1] is not stream:
                    log.debug("HDS: a report of %s.%s from an older stream is ignored", *stream.key)
                    continue
                report = read_report(item.endpoint_health_response)
                if report != last and await self.loop.run_in_executor(self._io, self._write, stream.key, report):
                    last = report
        finally:
            reader.cancel()
            if stream is not None:
                streams = self._streams.get(stream.key, [])
                if stream in streams:
                    streams.remove(stream)
                if not streams:
                    self._streams.pop(stream.key, None)

    def _specifier(self, key: tuple[str, str], node: object) -> hds_pb2.HealthCheckSpecifier | None:
        if not self.manager.store.healthy():
            return None   # the checks Envoy has stay; the next refresh or change tries again
        try:
            dataplane = self.manager.get("Dataplane", *key)
        except Exception as e:   # the store is down: the checks Envoy has stay, tried again at the next refresh
            log.warning("HDS: could not read dataplane %s.%s: %s", *key, e)
            return None
        content = dataplane.content if dataplane is not None else {}
        return specifier(content, self.admin_of(content, node), self.settings)

    def _write(self, key: tuple[str, str], report: Report) -> bool:
        """Write the readiness `report` gives into the Dataplane; False when it could not be written (the next
        report tries again)."""
        if not self.manager.store.healthy():
            return False
        for _ in range(_WRITE_ATTEMPTS):
            try:
                dataplane = self.manager.get("Dataplane", *key)
                if dataplane is None:
                    return True   # removed: nothing to mark
                content = apply_report(dataplane.content, report)
                if content is None:
                    return True
                dataplane.content = content
                self.manager.update(dataplane, dataplane.version)
            except Conflict:
                continue   # written meanwhile (kuma-dp, the API): read it again
            except NotFound:
                return True
            except Exception as e:
                log.warning("HDS: could not write the health of dataplane %s.%s: %s", *key, e)
                return False
            ready = {ib.get("port"): ib.get("state") != "NotReady"
                     for ib in (content.get("networking") or {}).get("inbound") or []}
            log.info("dataplane %s.%s: inbounds ready by health check: %s", *key, ready)
            return True
        return False

