"""A proxy registered by kuma-dp that moves from one instance to another keeps its Dataplane.

Two DP servers (instances A and B) on one real SQLite store, each with its real TLS front and
ADS server on 127.0.0.1; the proxy is a gRPC client that sends what Envoy sends, including the
node metadata kuma-dp's bootstrap puts there (`dataplane.resource`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from appliance.ca.server_cert import ensure_server_cert
from appliance.core.manager import ResourceManager
from appliance.runtime import dp_lifecycle
from appliance.runtime.dataplanes import DataplaneServer
from appliance.store.sqlite import SQLiteStore
from appliance.xds.generate import generate_sidecar
from tests.ads_proxy import Proxy
from tests.support import eventually, free_port


@pytest.fixture
def instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    # above the insights' flush interval, so the other instance's subscription is stored by then
    monkeypatch.setattr(dp_lifecycle, "DEREGISTER_AFTER", 1.0)
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    cert = ensure_server_cert(tmp_path / "dp-server", ["localhost"], ["127.0.0.1"])
    servers = [DataplaneServer(manager, cert, "127.0.0.1", free_port(), f"cp-{k}", generate_sidecar,
                               auth_enabled=False) for k in "ab"]
    for server in servers:
        server.start()
    try:
        yield store, cert.ca_pem, *servers
    finally:
        for server in servers:
            server.stop()
        store.close()


def _pending(server: DataplaneServer) -> bool:
    return bool(server.call(lambda: dict(server.registrar.pending_removal)))


def _latest(store: SQLiteStore) -> dict:
    subs = store.get("DataplaneInsight", "default", "web-1").content["subscriptions"]
    return max(subs, key=lambda s: s["connectTime"])


def test_a_proxy_that_moved_is_not_deregistered_by_the_instance_it_left(instances) -> None:
    store, ca_pem, a, b = instances
    on_a = Proxy(a.port, ca_pem)       # registers web-1 from its metadata: A owns it
    eventually(lambda: store.get("Dataplane", "default", "web-1") is not None)
    on_a.close()
    eventually(lambda: _pending(a))   # A waits before removing it ...
    on_b = Proxy(b.port, ca_pem)       # ... and the proxy reconnects to B meanwhile
    try:
        eventually(lambda: not _pending(a))
        assert store.get("Dataplane", "default", "web-1") is not None
        eventually(lambda: _latest(store)["controlPlaneInstanceId"] == "cp-b")
        assert not _latest(store).get("disconnectTime")
    finally:
        on_b.close()
    # B owns the registration now: when the proxy leaves B for good, B removes it
    eventually(lambda: store.get("Dataplane", "default", "web-1") is None)


def test_a_proxy_whose_dataplane_was_removed_is_registered_again_by_its_new_instance(instances) -> None:
    store, ca_pem, a, b = instances
    assert store.get("Dataplane", "default", "web-1") is None   # e.g. removed by the instance it left
    on_b = Proxy(b.port, ca_pem)
    try:
        dataplane = store.get("Dataplane", "default", "web-1")
        assert dataplane is not None and dataplane.content["networking"]["inbound"][0]["port"] == 8080
    finally:
        on_b.close()
