"""The `kuma:envoy:admin` listener added to a proxy's resources, signed by the Envoy admin CA."""
from __future__ import annotations

import time

from appliance.ca.envoy_admin import EnvoyAdminCa, issue_server_cert
from appliance.store import Store
from appliance.xds.admin_tls import load_admin_ca
from appliance.xds.generate.admin import admin_resources, needs_listener
from appliance.xds.resources import Resources
from appliance.xds.watch import ProxyWatch

ADMIN_CA_RETRY = 5.0  # a missing or unusable Envoy admin CA is looked for again after this long


class AdminListener:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._ca: EnvoyAdminCa | None = None
        self._retry = 0.0

    def forget(self) -> None:
        """Drop the CA read so far and the retry wait: the next `loaded` asks the store again. The snapshot
        keeper calls this after every successful rebuild."""
        self._ca = None
        self._retry = 0.0

    def loaded(self) -> bool:
        """Whether the Envoy admin CA is at hand (read once: as in Kuma, a new one needs a restart). While it
        is missing (the leader creates it) or unusable, the store is asked again at most every few seconds."""
        if self._ca is None and time.monotonic() >= self._retry:
            self._ca = load_admin_ca(self.store)
            self._retry = time.monotonic() + ADMIN_CA_RETRY
        return self._ca is not None

    def add(self, watch: ProxyWatch, address: str, resources: Resources) -> Resources:
        """`resources` plus the proxy's `kuma:envoy:admin` listener, when it announced its admin API and
        the Envoy admin CA exists (without it, no listener: nobody reaches the admin API)."""
        admin, ca = watch.node.admin, self._ca
        if admin is None or ca is None or not needs_listener(address, admin):
            return resources
        if watch.admin_cert is None or watch.admin_cert[0] != address:
            watch.admin_cert = (address, *issue_server_cert(ca, address))
        added = admin_resources(address, admin, watch.admin_cert[1], watch.admin_cert[2], ca.cert_pem)
        return {t: {**items, **added.get(t, {})} for t, items in resources.items()}
