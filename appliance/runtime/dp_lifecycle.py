"""kuma-dp registered dataplanes across their streams: registered again when a stream brings one that is
gone, deregistered some seconds after the last stream closed unless it is connected elsewhere."""
from __future__ import annotations

import asyncio
import logging

from appliance.api.errors import KumaError
from appliance.core.manager import ResourceManager
from appliance.insights.dataplane import InsightRecorder, open_subscriptions
from appliance.runtime import dp_definition
from appliance.runtime.dp_registration import Registrar
from appliance.store import NotFound
from appliance.xds.cache import XdsCache

log = logging.getLogger("appliance.dataplanes")
# Kuma removes a dataplane that kuma-dp registered some seconds after its stream closes.
DEREGISTER_AFTER = 5.0


# kuma-dp registers its dataplane at bootstrap, through one instance; its ADS stream may later
# reach another (several instances behind one address, or after an instance died). The node
# metadata carries the definition, so the instance holding the stream owns the registration.
# A proxy may have several streams: a restarted kuma-dp's new Envoy connects while the old one
# still drains, or someone connects with the proxy's token. The Dataplane goes only when the
# last of them is gone.
class DataplaneLifecycle:
    """The insights' connect/disconnect hooks, run on the xDS loop."""

    def __init__(self, manager: ResourceManager, registrar: Registrar, instance_id: str,
                 loop: asyncio.AbstractEventLoop, insights: InsightRecorder, cache: XdsCache) -> None:
        self.manager = manager
        self.store = manager.store
        self.registrar = registrar
        self.instance_id = instance_id
        self.loop = loop
        self.insights = insights
        self.cache = cache

    def on_connect(self, key: tuple[str, str], node: object) -> None:
        raw = dp_definition.node_definition(node)
        if not raw:
            return
        self.registrar.cancel_removal(key)
        self.registrar.registered.add(key)
        if self.store.get("Dataplane" if key[0] else "ZoneEgress", *key) is not None:
            return
        try:   # removed meanwhile (by the instance the proxy left): register it again
            self.registrar.register(key[0], key[1], {"dataplaneResource": raw}, authenticated=True)
            log.info("%s %s registered again from its proxy's metadata", "dataplane" if key[0] else "zone egress",
                     ".".join(key).lstrip("."))
        except KumaError as e:
            log.warning("could not register %s from its proxy's metadata: %s", ".".join(key).lstrip("."), e)

    def on_disconnect(self, key: tuple[str, str]) -> None:
        still_open = self.insights.open_streams(key)
        if still_open:
            log.info("a stream of %s closed; %d still open, it stays registered", ".".join(key).lstrip("."),
                     still_open)
            return
        if key in self.registrar.registered:
            self.registrar.pending_removal[key] = self.loop.call_later(DEREGISTER_AFTER, self._deregister, key)
        self.cache.identities.forget(*key)

    def _deregister(self, key: tuple[str, str]) -> None:
        self.registrar.pending_removal.pop(key, None)
        if self.insights.is_online(key):
            return
        self.registrar.registered.discard(key)
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
