"""A proxy registered from kuma-dp's definition (its bootstrap request or its Envoy's node metadata): a
Dataplane, or (mesh "") a ZoneEgress, written through core with the REST API's rules."""
from __future__ import annotations

import asyncio
from typing import Any

from appliance.api.errors import from_exception
from appliance.core.manager import ResourceManager
from appliance.core.resources import dataplane as dataplane_resource
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.runtime import dp_definition
from appliance.runtime.dp_auth import DataplaneAuth
from appliance.store import AlreadyExists, Conflict


class Registrar:
    """Registers kuma-dp's proxies and remembers which this instance registered: `registered`, with
    the removal scheduled for each whose last stream closed (`pending_removal`, see dp_lifecycle)."""

    def __init__(self, manager: ResourceManager, auth: DataplaneAuth) -> None:
        self.manager = manager
        self.store = manager.store
        self.auth = auth
        self.registered: set[tuple[str, str]] = set()
        self.pending_removal: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def cancel_removal(self, key: tuple[str, str]) -> None:
        """The proxy is back (or registered again): its scheduled removal, if any, is called off."""
        pending = self.pending_removal.pop(key, None)
        if pending:
            pending.cancel()

    def register(self, mesh: str, name: str, request: dict[str, Any],
                 authenticated: bool = False) -> Resource | None:
        """Create or update the proxy's resource from kuma-dp's definition: a Dataplane, or (mesh "") a ZoneEgress.

        `authenticated`: the caller checked the proxy's token already (its ADS stream), whose node id
        is `mesh`.`name`."""
        type_name = "Dataplane" if mesh else "ZoneEgress"
        raw = request.get("dataplaneResource")
        token = request.get("dataplaneToken") or ""
        if not raw:
            current = self.store.get(type_name, mesh, name)
            if current is not None and self.auth.enabled and token and not authenticated:
                self.auth.authorize_bootstrap(token, mesh, name, None, current)
            return current
        res = dp_definition.decode(raw, type_name, mesh, name, exact=authenticated)
        dp_definition.check_transparent_outbounds(res, request)
        key = (res.mesh, res.name)
        current = self.store.get(type_name, *key)
        if self.auth.enabled and not authenticated:
            self.auth.authorize_bootstrap(token, res.mesh, res.name, res, current)
        dp_definition.check_rules(self.manager, res, current)
        if current is not None and type_name == "Dataplane":
            res.content = dataplane_resource.keep_probed_health(res.content, current.content)
        self.cancel_removal(key)
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
        self.registered.add(key)
        return self.store.get(type_name, *key)

