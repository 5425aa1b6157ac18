"""A change that arrives while the store cannot be read (PostgreSQL down) is not lost for the proxies.

A real SQLite store that answers "unavailable" while told to (the store's outage is the one thing
stood in); the cache, its change intake and its event loop are real.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.store import StoreUnavailable
from appliance.store.sqlite import SQLiteStore
from appliance.xds import meshes
from appliance.xds.cache import XdsCache


class FlakyStore(SQLiteStore):
    down = False

    def revision(self) -> int:
        if self.down:
            raise StoreUnavailable("cannot reach PostgreSQL (test)")
        return super().revision()


def test_a_rebuild_during_an_outage_is_retried_until_the_store_answers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(meshes, "RETRY_AFTER", 0.05)
    store = FlakyStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    manager.create(Resource("Dataplane", "default", "web-1", {"networking": {"address": "127.0.0.1", "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": "web"}}]}}))

    async def scenario() -> None:
        cache = XdsCache(store, lambda *args: {}, asyncio.get_running_loop())
        watch = cache.watch("default", "web-1")
        woken = asyncio.Event()
        watch.changed.callback = woken.set
        before = cache.snapshot("default").revision
        store.down = True
        manager.create(Resource("Dataplane", "default", "web-2", {"networking": {"address": "127.0.0.2", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "web"}}]}}))
        await asyncio.sleep(0.2)            # rebuilds fail meanwhile
        assert not watch.changed.pending
        store.down = False                  # the database is back: the change gets through
        await asyncio.wait_for(woken.wait(), timeout=5)
        assert cache.snapshot("default").revision > before
        assert len(cache.snapshot("default").endpoints["web"]) == 2
        cache.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
