"""DataplaneInsight: who is connected, since when, to which CP instance, and how their xDS went.

Stream events arrive on the event loop; the insight rows are written in batches (one transaction
per flush, in a thread of its own, one flush at a time, at most BATCH rows per transaction) so that
many proxies never contend with user writes and the xDS loop never waits for the database (on
PostgreSQL every read and write is a round trip). What a user waits for (a proxy
online or offline, a new certificate) is written within FLUSH_INTERVAL; counters (responses sent,
ACKed, NACKed) only every `xdsServer.dataplaneStatusFlushInterval`, as Kuma, so a change pushed
to thousands of proxies does not rewrite thousands of rows at once.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.core.resources.model import Resource
from appliance.store import Store, WriteOp
from appliance.xds.resources import SHORT
from appliance.xds.server import StreamObserver, StreamStats

log = logging.getLogger("appliance.insights")
FLUSH_INTERVAL = 0.5
STATUS_FLUSH_INTERVAL = 10.0   # Kuma's xdsServer.dataplaneStatusFlushInterval
MAX_SUBSCRIPTIONS = 5
BATCH = 100


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Stream:
    subscription: dict[str, Any]
    stats: StreamStats
    closed: bool = False


@dataclass
class _Proxy:
    """One proxy's streams on this instance: usually one; two while a restarted kuma-dp's new Envoy is
    connected and the old one still drains; more when someone else connects with its token."""
    streams: dict[int, _Stream] = field(default_factory=dict)   # by id() of the stream's stats
    identity_expiry: float | None = None
    identity_issued: float | None = None
    regenerations: int = 0
    written: Resource | None = None   # the insight as last written (its version), to update it without a read

    def online(self) -> int:
        return sum(1 for s in self.streams.values() if not s.closed)


def _counts(stats: StreamStats, type_url: str | None) -> dict[str, str]:
    def pick(d: dict[str, int]) -> int:
        return sum(d.values()) if type_url is None else d.get(type_url, 0)
    # protojson writes uint64 as strings
    return {"responsesSent": str(pick(stats.responses_sent)),
            "responsesAcknowledged": str(pick(stats.acks)),
            "responsesRejected": str(pick(stats.nacks))}


def _node_versions(node: Any) -> dict[str, Any]:
    try:
        meta = node.metadata.fields.get("version")
        if meta is None:
            return {}
        from google.protobuf.json_format import MessageToDict
        return MessageToDict(meta.struct_value)
    except Exception:  # a proxy that sends odd metadata still gets an insight
        return {}


def latest_subscription(insight: Resource | None) -> dict[str, Any] | None:
    """The subscription with the newest connectTime: the proxy's current (or last) stream."""
    subs = (insight.content.get("subscriptions") if insight else None) or []
    return max(subs, key=lambda s: s.get("connectTime") or "", default=None)


def open_subscriptions(insight: Resource | None) -> list[dict[str, Any]]:
    """The subscriptions without a disconnectTime: the proxy is online while there is one (as Kuma's
    IsOnline), whichever is the newest."""
    subs = (insight.content.get("subscriptions") if insight else None) or []
    return [s for s in subs if s.get("connectTime") and not s.get("disconnectTime")]


class InsightRecorder(StreamObserver):
    def __init__(self, store: Store, instance_id: str, loop: asyncio.AbstractEventLoop,
                 status_flush_interval: float = STATUS_FLUSH_INTERVAL) -> None:
        self.store = store
        self.instance_id = instance_id
        self.loop = loop
        self.status_flush_interval = status_flush_interval
        self._proxies: dict[tuple[str, str], _Proxy] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insights")
        self._writing: asyncio.Future | None = None
        self._closed = False
        self.streams = 0                 # open now; read from any thread (/metrics)
        self.on_connect: list = []       # callback(key, node) when a stream opens
        self.on_disconnect: list = []    # callback(key) when one of its streams closes

    def connected(self, key: tuple[str, str], node: object, delta: bool, stats: StreamStats) -> None:
        sub = {"id": str(uuid.uuid4()), "controlPlaneInstanceId": self.instance_id, "connectTime": _now(),
               "status": {}, "version": _node_versions(node), "generation": 0}
        self._proxies.setdefault(key, _Proxy()).streams[id(stats)] = _Stream(sub, stats)
        self.streams += 1
        self._mark(key)
        for callback in self.on_connect:
            try:
                callback(key, node)
            except Exception:   # e.g. the database is down: the stream goes on, the next connect retries
                log.warning("on connect of %s", ".".join(key).lstrip("."), exc_info=True)

    def disconnected(self, key: tuple[str, str], stats: StreamStats) -> None:
        self.streams -= 1
        proxy = self._proxies.get(key)
        stream = proxy.streams.get(id(stats)) if proxy else None
        if stream is not None:
            stream.subscription["disconnectTime"] = _now()
            stream.closed = True
            self._mark(key)
        for callback in self.on_disconnect:
            callback(key)

    def changed(self, key: tuple[str, str]) -> None:
        self._mark(key, soon=False)

    def certificate(self, key: tuple[str, str], expires: float, issued: float) -> None:
        proxy = self._proxies.get(key)
        if proxy is not None and proxy.identity_expiry != expires:
            proxy.identity_expiry, proxy.identity_issued = expires, issued
            proxy.regenerations += 1
            self._mark(key)

    def open_streams(self, key: tuple[str, str]) -> int:
        """How many streams of this proxy are open on this instance now."""
        proxy = self._proxies.get(key)
        return proxy.online() if proxy else 0

    def is_online(self, key: tuple[str, str]) -> bool:
        return self.open_streams(key) > 0

    def _mark(self, key: tuple[str, str], soon: bool = True) -> None:
        self._dirty.add(key)
        at = self.loop.time() + (FLUSH_INTERVAL if soon else self.status_flush_interval)
        if self._flush is not None and self._flush.when() > at:
            self._flush.cancel()
            self._flush = None
        if self._flush is None:
            self._flush = self.loop.call_at(at, self.flush)

    def flush(self) -> None:
        """Write the changed insights (in the writer thread); while a batch is being written, try again soon."""
        self._flush = None
        if self._closed:
            return
        if self._writing is not None and not self._writing.done():
            self._flush = self.loop.call_later(FLUSH_INTERVAL, self.flush)
            return
        rows = self._rows()
        if rows:
            self._writing = self.loop.run_in_executor(self._writer, self._write, rows)
            self._writing.add_done_callback(self._written)

    async def close(self) -> None:
        """Write what is pending (e.g. on shutdown) and stop the writer thread."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._writing is not None:
            await asyncio.wait([self._writing])
        self._closed = True
        rows = self._rows()
        if rows:
            self._apply(await self.loop.run_in_executor(self._writer, self._write, rows))
        self._writer.shutdown(wait=False)

    def _rows(self) -> list[tuple[tuple[str, str], list[dict[str, Any]], dict[str, Any] | None, Resource | None]]:
        """What to write, taken on the loop: (key, its subscriptions here, mTLS, the insight as last written)."""
        dirty, self._dirty = self._dirty, set()
        rows = []
        for key in dirty:
            proxy = self._proxies.get(key)
            if proxy is None:
                continue
            subs = []
            for stream_id, stream in list(proxy.streams.items()):
                sub = stream.subscription
                sub["status"] = {"lastUpdateTime": _now(), "total": _counts(stream.stats, None),
                                 **{SHORT[t].lower(): _counts(stream.stats, t) for t in SHORT}}
                sub["generation"] = int(sub.get("generation", 0)) + 1
                subs.append(dict(sub))
                if stream.closed:
                    del proxy.streams[stream_id]
            mtls = None
            if proxy.identity_expiry:
                mtls = {"certificateExpirationTime": _time(proxy.identity_expiry),
                        "lastCertificateRegeneration": _time(proxy.identity_issued or 0.0),
                        "certificateRegenerations": proxy.regenerations}
            rows.append((key, subs, mtls, proxy.written))
            if not proxy.streams:
                del self._proxies[key]
        return rows

    def _write(self, rows: list) -> list[tuple[tuple[str, str], Resource | None]]:
        """In the writer thread: transactions of at most BATCH rows, so a user's write waits for one of
        them at most (on PostgreSQL writers take turns). Returns each row's insight as written (its new
        version), None where the write failed."""
        done: list[tuple[tuple[str, str], Resource | None]] = []
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            ops = [self._op(key, subs, mtls, written) for key, subs, mtls, written in batch]
            try:
                self.store.write(ops)
                done += [(row[0], op.resource) for row, op in zip(batch, ops)]
                continue
            except Exception:
                # another instance wrote one of these insights meanwhile (the proxy moved), or a mesh
                # is gone: write them one by one over what is stored now
                log.debug("insight batch failed; writing one by one", exc_info=True)
            for key, subs, mtls, _ in batch:
                try:
                    op = self._op(key, subs, mtls, None)
                    self.store.write([op])
                    done.append((key, op.resource))
                except Exception:
                    log.debug("insight of %s not written", key, exc_info=True)
                    done.append((key, None))   # read it again next time
        return done

    def _op(self, key: tuple[str, str], ours: list[dict[str, Any]], mtls: dict[str, Any] | None,
            written: Resource | None) -> WriteOp:
        """Our subscriptions written over the stored insight (`written`: as this instance last wrote it,
        saving a read), keeping other instances' subscriptions. Subscriptions stay ordered by
        connectTime, so the last one is the proxy's newest stream even when an instance it left
        records the disconnect after the instance it moved to. Open ones are never trimmed: the
        proxy is online while any of its streams is."""
        # mesh "" is a zone egress (global): its insight is a ZoneEgressInsight
        insight_type = "DataplaneInsight" if key[0] else "ZoneEgressInsight"
        current = written or self.store.get(insight_type, *key)
        content = current.content if current else {"subscriptions": []}
        ids = {s["id"] for s in ours}
        subs = [s for s in content.get("subscriptions", []) if s.get("id") not in ids] + ours
        live = [s for s in subs if not s.get("disconnectTime")]
        ended = sorted((s for s in subs if s.get("disconnectTime")), key=lambda s: s.get("connectTime") or "")
        room = MAX_SUBSCRIPTIONS - len(live)
        subs = sorted(live + (ended[len(ended) - room:] if room > 0 else []), key=lambda s: s.get("connectTime") or "")
        content = {**content, "subscriptions": subs}
        if mtls:
            content["mTLS"] = mtls
        res = Resource(insight_type, key[0], key[1], content, {"kuma.io/mesh": key[0]} if key[0] else {})
        return WriteOp("update" if current else "create", res, current.version if current else None)

    def _written(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            if future.exception() is not None:
                log.warning("writing dataplane insights failed: %s", future.exception())
            return
        self._apply(future.result())

    def _apply(self, results: list[tuple[tuple[str, str], Resource | None]]) -> None:
        for key, res in results:
            proxy = self._proxies.get(key)
            if proxy is not None:
                proxy.written = res
