"""Workload certificates: issued once per proxy, reused while they fit, kept on disk for the next start."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.events import ChangeHub
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.store.sqlite import SQLiteStore
from appliance.xds.identity import IdentityProvider
from appliance.xds.snapshot import build_snapshot, proxy_from_dataplane

MTLS = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}


@pytest.fixture
def store(tmp_path: Path):
    store = SQLiteStore(tmp_path / "kuma.db", ChangeHub())
    manager = ResourceManager(store)
    manager.create(Resource("Mesh", "", "default", {"mtls": MTLS}))
    yield store
    store.close()


def _proxy(service: str = "web"):
    return proxy_from_dataplane(Resource("Dataplane", "default", "web-1", {"networking": {
        "address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": service}}]}}))


def test_a_restarted_provider_reuses_the_kept_certificate(store, tmp_path: Path) -> None:
    snapshot = build_snapshot(store, "default", store.revision())
    first = IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy())
    assert first is not None
    assert oct((tmp_path / "identities" / "default" / "web-1.json").stat().st_mode & 0o777) == "0o600"
    again = IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy())
    assert again == first
    # other services: a new certificate, which replaces the kept one
    other = IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy("api"))
    assert other is not None and other.cert_pem != first.cert_pem
    assert IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy("api")) == other
    # without a directory nothing is kept
    assert IdentityProvider(store).get(snapshot, _proxy("api")) != other


def test_a_kept_certificate_due_for_renewal_or_unreadable_is_not_used(store, tmp_path: Path) -> None:
    snapshot = build_snapshot(store, "default", store.revision())
    due = IdentityProvider(store, validity=0.0, directory=tmp_path / "identities").get(snapshot, _proxy())
    fresh = IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy())
    assert fresh is not None and fresh != due and fresh.expires > due.expires + 3600
    (tmp_path / "identities" / "default" / "web-1.json").write_bytes(b"not json")
    assert IdentityProvider(store, directory=tmp_path / "identities").get(snapshot, _proxy()) not in (None, fresh)


def test_a_kept_certificate_of_another_ca_is_not_used(tmp_path: Path) -> None:
    kept = tmp_path / "identities"
    certificates = []
    for run in ("a", "b"):   # two stores: two CAs for the same mesh name
        store = SQLiteStore(tmp_path / f"{run}.db", ChangeHub())
        ResourceManager(store).create(Resource("Mesh", "", "default", {"mtls": MTLS}))
        certificates.append(IdentityProvider(store, directory=kept).get(
            build_snapshot(store, "default", store.revision()), _proxy()))
        store.close()
    assert certificates[0] != certificates[1]
