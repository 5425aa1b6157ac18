"""Per-proxy workload certificates from the mesh's builtin CA, issued once and renewed before expiry."""
from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass

from appliance.ca import builtin
from appliance.ca.builtin import ca_secret_names
from appliance.store import Store
from appliance.xds.model import Identity, MeshSnapshot, Proxy

WORKLOAD_VALIDITY = 24 * 3600.0
log = logging.getLogger("appliance.xds")


@dataclass(frozen=True)
class _Issued:
    ca_fingerprint: bytes
    services: tuple[str, ...]
    identity: Identity
    issued_at: float


class IdentityProvider:
    def __init__(self, store: Store, validity: float = WORKLOAD_VALIDITY) -> None:
        self.store = store
        self.validity = validity
        self._issued: dict[tuple[str, str], _Issued] = {}
        # one issuance per proxy at a time: two racing callers must not hand out two certificates
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def current(self, snapshot: MeshSnapshot, proxy: Proxy) -> Identity | None:
        """The issued certificate if it still fits this proxy and is not due for renewal."""
        if snapshot.mtls is None:
            return None
        cached = self._issued.get((proxy.mesh, proxy.name))
        if (cached and cached.ca_fingerprint == snapshot.mtls.ca_cert_pem and cached.services == proxy.services
                and not builtin.needs_renewal(cached.identity.expires, cached.issued_at, time.time())):
            return cached.identity
        return None

    def get(self, snapshot: MeshSnapshot, proxy: Proxy) -> Identity | None:
        """The proxy's certificate, issuing one (about a millisecond: the CA's signature) when needed. Thread-safe."""
        if snapshot.mtls is None:
            return None
        key = (proxy.mesh, proxy.name)
        found = self.current(snapshot, proxy)
        if found is not None:
            return found
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            return self._issue(snapshot, proxy, key)

    def _issue(self, snapshot: MeshSnapshot, proxy: Proxy, key: tuple[str, str]) -> Identity | None:
        assert snapshot.mtls is not None
        found = self.current(snapshot, proxy)
        if found is not None:
            return found
        now = time.time()
        previous = self._issued.get(key)
        log.debug("issuing a certificate for %s.%s (%s)", proxy.mesh, proxy.name,
                 "first" if previous is None else
                 "CA changed" if previous.ca_fingerprint != snapshot.mtls.ca_cert_pem else
                 "services changed" if previous.services != proxy.services else "renewal")
        cert_name, key_name = ca_secret_names(proxy.mesh, snapshot.mtls.backend)
        ca_key = self.store.get("Secret", proxy.mesh, key_name)
        if ca_key is None:
            return None
        tags: dict[str, set[str]] = {}
        for inbound in proxy.inbounds:
            for k, v in inbound.tags.items():
                tags.setdefault(k, set()).add(v)
        cert, pkey, not_after = builtin.issue_workload_cert(
            snapshot.mtls.ca_cert_pem, base64.b64decode(ca_key.content["data"]), proxy.mesh,
            list(proxy.services), {k: sorted(v) for k, v in tags.items()}, self.validity, now)
        identity = Identity(cert, pkey, not_after)
        self._issued[key] = _Issued(snapshot.mtls.ca_cert_pem, proxy.services, identity, now)
        return identity

    def renew_at(self, mesh: str, name: str) -> float | None:
        """When the current certificate of this proxy should be replaced (epoch seconds)."""
        cached = self._issued.get((mesh, name))
        if cached is None:
            return None
        lifetime = cached.identity.expires - cached.issued_at
        return cached.issued_at + lifetime * 0.8

    def forget(self, mesh: str, name: str) -> None:
        self._issued.pop((mesh, name), None)
        with self._locks_guard:
            self._locks.pop((mesh, name), None)
