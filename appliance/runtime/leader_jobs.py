"""The jobs only the leader runs, so that several instances never run them twice at once.

- on election: what a fresh control plane creates once (default Mesh, signing key, admin token);
- while leader, a pass over the proxies' insights whenever the set of live instances changed
  (checked every JOB_INTERVAL, cheaply) and at least every CLEANUP_INTERVAL:
  - the subscription finalizer: a proxy's latest subscription held by an instance that is no longer
    alive (killed, crashed, cut from the database) is closed (`disconnectTime`), so the proxy shows
    offline until it reconnects to a live instance (Kuma closes them after `metrics.dataplane.idleTimeout`);
  - the offline-proxy cleanup: Dataplanes offline for `runtime.universal.dataplaneCleanupAge` and
    ZoneEgresses offline for `runtime.universal.zoneResourceCleanupAge` are deleted (Kuma's GC);
- every JOB_INTERVAL when the store changed: the meshes' virtual IPs (runtime/vips_sync.py);
- every JOB_INTERVAL: generated MeshServices, their status and VIPs (runtime/meshservice_sync.py).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.core.resources import registry
from appliance.insights.dataplane import latest_subscription, open_subscriptions
from appliance.runtime.leader import Leadership, is_live
from appliance.runtime.meshservice_sync import MeshServiceSync
from appliance.runtime.vips_sync import VipSync
from appliance.store import Conflict, ListQuery, NotFound, StoreError
from appliance.store.base import now_rfc3339

log = logging.getLogger("appliance.leader")
JOB_INTERVAL = 2.0
CLEANUP_INTERVAL = 60.0
JOIN_TIMEOUT = 10.0


_NEVER = "9999-12-31T23:59:59Z"   # a subscription that has no disconnectTime is never old enough to remove


def _parse(time: str) -> float:
    return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()


class LeaderJobs:
    def __init__(self, manager: ResourceManager, leadership: Leadership, create_defaults: Callable[[], None],
                 cleanup_age: dict[str, float], interval: float = JOB_INTERVAL,
                 vips: VipSync | None = None, mesh_services: MeshServiceSync | None = None) -> None:
        """`cleanup_age`: proxy type (Dataplane, ZoneEgress) -> seconds offline before it is deleted."""
        self.vips = vips
        self.mesh_services = mesh_services
        self.manager = manager
        self.store = manager.store
        self.leadership = leadership
        self.create_defaults = create_defaults
        self.cleanup_age = cleanup_age
        self.interval = interval
        self._term: threading.Event | None = None    # set when this leadership term ends
        self._thread: threading.Thread | None = None
        leadership.on_elected(self._elected)
        leadership.on_lost(self._lost)

    def _elected(self) -> None:
        term = self._term = threading.Event()
        # here, in the electing thread: an instance that leads from its start has its defaults before it serves
        created = self._create_defaults()
        self._thread = threading.Thread(target=self._loop, args=(term, created), name="leader-jobs", daemon=True)
        self._thread.start()

    def _create_defaults(self) -> bool:
        """Once per leadership term, until it succeeds (the database may be briefly unreachable)."""
        try:
            self.create_defaults()
            return True
        except StoreError as e:
            log.warning("leader: cannot create the defaults yet (%s); retrying", e)
        except Exception:
            log.exception("leader: creating the defaults failed; retrying")
        return False

    def _lost(self) -> None:
        if self._term is not None:
            self._term.set()   # the loop stops before its next step
            self._term = None
        if self._thread is not None:
            # a step under way ends first: no new leader's jobs beside it, no store closed under it
            self._thread.join(timeout=JOIN_TIMEOUT)
            self._thread = None

    def _loop(self, ended: threading.Event, defaults_created: bool) -> None:
        passed_with: set[str] | None = None          # the live instances at the last pass
        passed_at = float("-inf")
        while not ended.is_set():
            if not defaults_created:
                defaults_created = self._create_defaults()
            try:
                if self.vips is not None and defaults_created:
                    self.vips.sync_if_changed()
                if self.mesh_services is not None and defaults_created:
                    self.mesh_services.sync()
                live = self.leadership.live_instances()
                if live != passed_with or time.monotonic() - passed_at >= CLEANUP_INTERVAL:
                    self.run_once(live, ended)
                    passed_with, passed_at = live, time.monotonic()
            except StoreError as e:
                log.warning("leader jobs: %s", e)
            except Exception:   # never let one bad round end the jobs of this leader
                log.exception("leader jobs failed")
            ended.wait(self.interval)

    def run_once(self, live: set[str] | None, ended: threading.Event | None = None) -> None:
        """One pass over the insights; `live`: the instances alive now (None: unknown, nothing is closed)."""
        now = datetime.now(timezone.utc).timestamp()
        for proxy_type, insight_type in registry.INSIGHTS.items():
            for insight in self.store.list(ListQuery(type=insight_type)).items:
                if ended is not None and ended.is_set():
                    return
                open_subs = open_subscriptions(insight)
                if open_subs:
                    # a proxy may have streams on several instances (a restarted kuma-dp's new Envoy
                    # while the old one drains): close those of the instances that are gone
                    gone = [s for s in open_subs if live is not None
                            and not is_live(s.get("controlPlaneInstanceId") or "", live)]
                    if gone:
                        self._finalize(insight, gone)
                    continue
                sub = latest_subscription(insight)
                age = self.cleanup_age.get(proxy_type)
                if sub is not None and age and now - _parse(sub.get("disconnectTime") or _NEVER) >= age:
                    self._remove(proxy_type, insight)

    def _finalize(self, insight: Resource, gone: list[dict[str, Any]]) -> None:
        ids = {s.get("id") for s in gone}
        subs = [dict(s, disconnectTime=now_rfc3339()) if s.get("id") in ids else s
                for s in insight.content.get("subscriptions", [])]
        updated = Resource(insight.type, insight.mesh, insight.name, {**insight.content, "subscriptions": subs},
                           insight.labels)
        try:
            self.store.update(updated, insight.version)
        except (Conflict, NotFound):
            return   # the proxy reconnected meanwhile (or is gone): nothing to close
        log.info("%s %s: closed the subscriptions of instances %s, which are gone", insight.type,
                 f"{insight.mesh}/{insight.name}" if insight.mesh else insight.name,
                 ", ".join(sorted({str(s.get("controlPlaneInstanceId")) for s in gone})))

    def _remove(self, proxy_type: str, insight: Resource) -> None:
        try:
            self.manager.delete(proxy_type, insight.mesh, insight.name)
        except (NotFound, Conflict):
            return
        log.info("%s %s removed: offline longer than the cleanup age", proxy_type,
                 f"{insight.mesh}/{insight.name}" if insight.mesh else insight.name)
