"""Per-proxy workload certificates from the mesh's CA (builtin or provided), issued once and renewed before expiry.

With a directory (kuma-cp's `<workDir>/identities`), issued certificates are also kept on disk, so
that a restarted control plane hands reconnecting proxies their still-valid certificates instead of
signing thousands of new ones at once. A file is used only while it fits: same CA, same services,
not yet due for renewal.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from appliance import telemetry
from appliance.ca import builtin
from appliance.store import Store
from appliance.model.proxy import Identity, MeshSnapshot, Proxy

WORKLOAD_VALIDITY = 24 * 3600.0
log = logging.getLogger("appliance.xds")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class _Issued:
    ca_fingerprint: bytes
    services: tuple[str, ...]
    identity: Identity
    issued_at: float


class IdentityProvider:
    def __init__(self, store: Store, validity: float = WORKLOAD_VALIDITY, directory: Path | None = None) -> None:
        self.store = store
        self.validity = validity
        self.directory = directory
        self._made: set[Path] = set()
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
        kept = self._load(key, snapshot.mtls.ca_cert_pem, proxy.services, now)
        if kept is not None:
            self._issued[key] = kept
            return kept.identity
        ca_key_pem = snapshot.mtls.ca_key_pem   # checked against the certificate when the snapshot was built
        tags: dict[str, set[str]] = {}
        for tag_set in proxy.tag_sets:
            for k, v in tag_set.items():
                tags.setdefault(k, set()).add(v)
        started = time.perf_counter()
        try:
            cert, pkey, not_after = builtin.issue_workload_cert(
                snapshot.mtls.ca_cert_pem, ca_key_pem, proxy.mesh,
                list(proxy.services), {k: sorted(v) for k, v in tags.items()},
                snapshot.mtls.workload_validity_s or self.validity, now)
        except Exception:
            telemetry.CERT_GENERATION_FAILURE.inc(proxy.mesh)
            raise
        telemetry.CA_GET_CERT.observe((time.perf_counter() - started) * 1000, snapshot.mtls.backend)
        telemetry.CERT_GENERATION.inc(proxy.mesh)
        identity = Identity(cert, pkey, not_after)
        self._issued[key] = _Issued(snapshot.mtls.ca_cert_pem, proxy.services, identity, now)
        self._keep(key, self._issued[key])
        return identity

    def _path(self, key: tuple[str, str]) -> Path | None:
        if self.directory is None or not all(_SAFE_NAME.match(part) for part in key):
            return None
        return self.directory / key[0] / f"{key[1]}.json"

    def _keep(self, key: tuple[str, str], issued: _Issued) -> None:
        path = self._path(key)
        if path is None:
            return
        body = orjson.dumps({"ca": hashlib.sha256(issued.ca_fingerprint).hexdigest(), "services": issued.services,
                             "issuedAt": issued.issued_at, "expires": issued.identity.expires,
                             "cert": issued.identity.cert_pem.decode(), "key": issued.identity.key_pem.decode()})
        # a cache: no fsync (a crash loses nothing that cannot be issued again); atomic by rename, private
        # from the first byte; the per-proxy lock of `get` keeps two writers of one file apart
        tmp = path.with_suffix(".tmp")
        try:
            if path.parent not in self._made:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._made.add(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:   # only a restart gets slower
            log.warning("could not keep the certificate of %s.%s in %s: %s", *key, path.parent, e)

    def _load(self, key: tuple[str, str], ca_cert_pem: bytes, services: tuple[str, ...],
              now: float) -> _Issued | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            kept = orjson.loads(path.read_bytes())
            issued = _Issued(ca_cert_pem, tuple(kept["services"]),
                             Identity(kept["cert"].encode(), kept["key"].encode(), float(kept["expires"])),
                             float(kept["issuedAt"]))
            fits = (kept["ca"] == hashlib.sha256(ca_cert_pem).hexdigest() and issued.services == services
                    and not builtin.needs_renewal(issued.identity.expires, issued.issued_at, now))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            fits = False   # unreadable: replaced by the next issuance
        return issued if fits else None

    def certificate_times(self, mesh: str, name: str) -> tuple[float, float] | None:
        """(expires, issued at) of the proxy's current certificate, epoch seconds; None before the first."""
        cached = self._issued.get((mesh, name))
        return (cached.identity.expires, cached.issued_at) if cached is not None else None

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
