"""The Envoy admin CA as the store holds it (GlobalSecret `envoy-admin-ca`, created by the leader on start)."""
from __future__ import annotations

import logging

from appliance.ca.envoy_admin import SECRET_NAME, EnvoyAdminCa, from_secret_data
from appliance.store import Store

log = logging.getLogger("appliance.xds")


def load_admin_ca(store: Store) -> EnvoyAdminCa | None:
    """The CA, or None while it does not exist yet or cannot be read (then no proxy admin is reachable)."""
    secret = store.get("GlobalSecret", "", SECRET_NAME)
    if secret is None:
        return None
    try:
        return from_secret_data(str(secret.content.get("data") or ""))
    except ValueError as e:
        log.error("GlobalSecret %s is not usable, proxies' admin APIs stay unreachable: %s", SECRET_NAME, e)
        return None
