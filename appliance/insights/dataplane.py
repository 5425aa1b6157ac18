"""DataplaneInsight: who is connected, since when, to which CP instance, and how their xDS went.

Stream events arrive on the event loop; the insight rows are written in batches (one transaction
per flush) so that many proxies never contend with user writes. What a user waits for (a proxy
online or offline, a new certificate) is written within FLUSH_INTERVAL; counters (responses sent,
ACKed, NACKed) only every `xdsServer.dataplaneStatusFlushInterval`, as Kuma, so a change pushed
to thousands of proxies does not rewrite thousands of rows at once.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
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
    written: Resource | None = None   # the insight as last written (its version), to update it without a read


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


class InsightRecorder(StreamObserver):
    def __init__(self, store: Store, instance_id: str, loop: asyncio.AbstractEventLoop,
                 status_flush_interval: float = STATUS_FLUSH_INTERVAL) -> None:
        self.store = store
        self.instance_id = instance_id
        self.loop = loop
        self.status_flush_interval = status_flush_interval
        self._live: dict[tuple[str, str], _Live] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self.on_disconnect: list = []

    def connected(self, key: tuple[str, str], node: object, delta: bool, stats: StreamStats) -> None:
        sub = {"id": str(uuid.uuid4()), "controlPlaneInstanceId": self.instance_id, "connectTime": _now(),
               "status": {}, "version": _node_versions(node), "generation": 0}
        self._live[key] = _Live(sub, stats)
        self._mark(key)

    def disconnected(self, key: tuple[str, str]) -> None:
        live = self._live.get(key)
        if live is not None:
            live.subscription["disconnectTime"] = _now()
            live.closed = True
            self._mark(key)
        for callback in self.on_disconnect:
            callback(key)

    def changed(self, key: tuple[str, str]) -> None:
        self._mark(key, soon=False)

    def certificate(self, key: tuple[str, str], expires: float, issued: float) -> None:
        live = self._live.get(key)
        if live is not None and live.identity_expiry != expires:
            live.identity_expiry, live.identity_issued = expires, issued
            live.regenerations += 1
            self._mark(key)

    def is_online(self, key: tuple[str, str]) -> bool:
        live = self._live.get(key)
        return live is not None and not live.closed

    def _mark(self, key: tuple[str, str], soon: bool = True) -> None:
        self._dirty.add(key)
        at = self.loop.time() + (FLUSH_INTERVAL if soon else self.status_flush_interval)
        if self._flush is not None and self._flush.when() > at:
            self._flush.cancel()
            self._flush = None
        if self._flush is None:
            self._flush = self.loop.call_at(at, self.flush)

    def flush(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        ops = []
        for key in dirty:
            live = self._live.get(key)
            if live is None:
                continue
            sub = live.subscription
            sub["status"] = {"lastUpdateTime": _now(), "total": _counts(live.stats, None),
                             **{SHORT[t].lower(): _counts(live.stats, t) for t in SHORT}}
            sub["generation"] = int(sub.get("generation", 0)) + 1
            # mesh "" is a zone egress (global): its insight is a ZoneEgressInsight
            insight_type = "DataplaneInsight" if key[0] else "ZoneEgressInsight"
            current = live.written or self.store.get(insight_type, *key)
            content = current.content if current else {"subscriptions": []}
            subs = [s for s in content.get("subscriptions", []) if s.get("id") != sub["id"]]
            subs.append(dict(sub))
            content = {**content, "subscriptions": subs[-MAX_SUBSCRIPTIONS:]}
            if live.identity_expiry:
                content["mTLS"] = {
                    "certificateExpirationTime": _time(live.identity_expiry),
                    "lastCertificateRegeneration": _time(live.identity_issued or 0.0),
                    "certificateRegenerations": live.regenerations}
            res = Resource(insight_type, key[0], key[1], content, {"kuma.io/mesh": key[0]} if key[0] else {})
            ops.append(WriteOp("update" if current else "create", res, current.version if current else None))
            live.written = res   # the store stamps its new version on it
            if live.closed:
                del self._live[key]
        if ops:
            try:
                self.store.write(ops)
            except Exception:
                # a conflicting write (another instance) or a deleted mesh: retry those next time
                log.debug("insight batch failed; writing one by one", exc_info=True)
                for op in ops:
                    try:
                        self.store.write([op])
                    except Exception:
                        self._forget_written(op.resource)

    def _forget_written(self, res: Resource) -> None:
        live = self._live.get((res.mesh, res.name))
        if live is not None and live.written is res:
            live.written = None   # read it again next time
