"""DataplaneInsight: who is connected, since when, to which CP instance, and how their xDS went.

Stream events arrive on the event loop; the insight rows are written in batches (one transaction
per flush, at most once per FLUSH_INTERVAL) so that many proxies never contend with user writes.
The writes run in a thread of their own, in order: on PostgreSQL every read and write is a round
trip, which must not hold up the event loop that pushes config.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from appliance.core.resources.model import Resource
from appliance.store import Store, WriteOp
from appliance.xds.resources import SHORT
from appliance.xds.server import StreamObserver, StreamStats

log = logging.getLogger("appliance.insights")
FLUSH_INTERVAL = 0.5
MAX_SUBSCRIPTIONS = 5
BATCH = 100


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Live:
    subscription: dict[str, Any]
    stats: StreamStats
    identity_expiry: float | None = None
    identity_issued: float | None = None
    regenerations: int = 0
    closed: bool = False


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


class InsightRecorder(StreamObserver):
    def __init__(self, store: Store, instance_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.instance_id = instance_id
        self.loop = loop
        self._live: dict[tuple[str, str], _Live] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self.streams = 0                 # open now; read from any thread (/metrics)
        self.on_connect: list = []       # callback(key, node) when a stream opens
        self.on_disconnect: list = []    # callback(key) when it closes
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insights")
        self._closed = False

    def connected(self, key: tuple[str, str], node: object, delta: bool, stats: StreamStats) -> None:
        sub = {"id": str(uuid.uuid4()), "controlPlaneInstanceId": self.instance_id, "connectTime": _now(),
               "status": {}, "version": _node_versions(node), "generation": 0}
        self._live[key] = _Live(sub, stats)
        self.streams += 1
        self._mark(key)
        for callback in self.on_connect:
            try:
                callback(key, node)
            except Exception:   # e.g. the database is down: the stream goes on, the next connect retries
                log.warning("on connect of %s", ".".join(key).lstrip("."), exc_info=True)

    def disconnected(self, key: tuple[str, str]) -> None:
        self.streams -= 1
        live = self._live.get(key)
        if live is not None:
            live.subscription["disconnectTime"] = _now()
            live.closed = True
            self._mark(key)
        for callback in self.on_disconnect:
            callback(key)

    def changed(self, key: tuple[str, str]) -> None:
        self._mark(key)

    def certificate(self, key: tuple[str, str], expires: float, issued: float) -> None:
        live = self._live.get(key)
        if live is not None and live.identity_expiry != expires:
            live.identity_expiry, live.identity_issued = expires, issued
            live.regenerations += 1
            self._mark(key)

    def is_online(self, key: tuple[str, str]) -> bool:
        """Connected to this instance."""
        live = self._live.get(key)
        return live is not None and not live.closed

    def _mark(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if self._flush is None:
            self._flush = self.loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        items = []
        for key in dirty:
            live = self._live.get(key)
            if live is None:
                continue
            sub = live.subscription
            sub["status"] = {"lastUpdateTime": _now(), "total": _counts(live.stats, None),
                             **{SHORT[t].lower(): _counts(live.stats, t) for t in SHORT}}
            sub["generation"] = int(sub.get("generation", 0)) + 1
            # what this flush writes, frozen: the loop goes on changing `live` meanwhile
            items.append((key, replace(live, subscription=dict(sub))))
            if live.closed:
                del self._live[key]
        if items and not self._closed:
            self._writer.submit(self._write, items)

    def close(self) -> None:
        """Write what is pending and wait for it (on the event loop, at shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
        self.flush()
        self._closed = True
        self._writer.shutdown(wait=True)

    def _write(self, items: list[tuple[tuple[str, str], _Live]]) -> None:
        # transactions of at most BATCH rows: a user's write waits for one of them at most, not for
        # the insights of every proxy a change was pushed to (on PostgreSQL writers take turns)
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            try:
                self.store.write([self._op(key, live) for key, live in batch])
            except Exception:
                # another instance wrote one of these insights meanwhile (the proxy moved), or a mesh
                # is gone: write them one by one over what is stored now
                log.debug("insight batch failed; writing one by one", exc_info=True)
                for key, live in batch:
                    try:
                        self.store.write([self._op(key, live)])
                    except Exception:
                        log.debug("insight of %s not written", key, exc_info=True)

    def _op(self, key: tuple[str, str], live: _Live) -> WriteOp:
        """Our subscription written over the stored insight, keeping other instances' subscriptions.

        Subscriptions stay ordered by connectTime, so the last one is the proxy's current stream even
        when an instance it left records the disconnect after the instance it moved to."""
        sub = live.subscription
        # mesh "" is a zone egress (global): its insight is a ZoneEgressInsight
        insight_type = "DataplaneInsight" if key[0] else "ZoneEgressInsight"
        current = self.store.get(insight_type, *key)
        content = current.content if current else {"subscriptions": []}
        subs = [s for s in content.get("subscriptions", []) if s.get("id") != sub["id"]] + [dict(sub)]
        subs.sort(key=lambda s: s.get("connectTime") or "")
        content = {**content, "subscriptions": subs[-MAX_SUBSCRIPTIONS:]}
        if live.identity_expiry:
            content["mTLS"] = {
                "certificateExpirationTime": _time(live.identity_expiry),
                "lastCertificateRegeneration": _time(live.identity_issued or 0.0),
                "certificateRegenerations": live.regenerations}
        res = Resource(insight_type, key[0], key[1], content, {"kuma.io/mesh": key[0]} if key[0] else {})
        return WriteOp("update" if current else "create", res, current.version if current else None)
