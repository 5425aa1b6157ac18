"""Every store driver (SQLite, memory, a real PostgreSQL): versions, compare-and-swap, the change log,
paging, migrations. PostgreSQL-only behaviour (migrate, LISTEN/NOTIFY, outages) is in test_postgres_store.py."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.core.events import ChangeHub
from appliance.core.resources.model import Resource
from appliance.store import AlreadyExists, Conflict, ListQuery, NotFound, WriteOp
from appliance.store.memory import MemoryStore
from appliance.store.migrations import SCHEMA_VERSION
from appliance.store.sqlite import SQLiteStore
from appliance.store.base import StoreError


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request, tmp_path: Path):
    if request.param == "postgres":
        s = request.getfixturevalue("postgres_server").store()
    else:
        s = SQLiteStore(tmp_path / "kuma.db", ChangeHub()) if request.param == "sqlite" else MemoryStore(ChangeHub())
    yield s
    s.close()


def _dp(name: str, mesh: str = "default", **labels: str) -> Resource:
    return Resource("Dataplane", mesh, name, {"networking": {"address": "10.0.0.1"}}, dict(labels))


def test_versions_and_times(store) -> None:
    res = store.create(_dp("a"))
    assert res.version == 1 and res.creation_time == res.modification_time
    got = store.get("Dataplane", "default", "a")
    got.content["networking"]["address"] = "10.0.0.2"
    store.update(got)
    again = store.get("Dataplane", "default", "a")
    assert again.version == 2 and again.content["networking"]["address"] == "10.0.0.2"
    assert again.creation_time == res.creation_time and again.modification_time >= res.modification_time


def test_compare_and_swap(store) -> None:
    store.create(_dp("a"))
    first, second = store.get("Dataplane", "default", "a"), store.get("Dataplane", "default", "a")
    store.update(first)
    with pytest.raises(Conflict):
        store.update(second)
    with pytest.raises(Conflict):
        store.delete("Dataplane", "default", "a", expected_version=1)
    with pytest.raises(AlreadyExists):
        store.create(_dp("a"))
    with pytest.raises(NotFound):
        store.update(_dp("missing"), expected_version=1)


def test_change_log_is_monotonic_and_published_after_commit(store) -> None:
    seen = []
    store.hub.subscribe(seen.extend)
    store.create(_dp("a"))
    store.write([WriteOp("create", _dp("b")), WriteOp("create", _dp("c"))])
    store.delete("Dataplane", "default", "a")
    revisions = [c.revision for c in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    assert [(c.op, c.name) for c in seen] == [("create", "a"), ("create", "b"), ("create", "c"), ("delete", "a")]
    assert store.revision() == revisions[-1]
    assert [c.name for c in store.changes_since(revisions[1])] == ["c", "a"]


def test_batch_is_atomic(store) -> None:
    store.create(_dp("a"))
    with pytest.raises(AlreadyExists):
        store.write([WriteOp("create", _dp("b")), WriteOp("create", _dp("a"))])
    assert store.get("Dataplane", "default", "b") is None
    assert store.revision() == 1


def test_list_paging_and_filters(store) -> None:
    for i in range(25):
        store.create(_dp(f"dp-{i:02d}", mesh="m1" if i % 2 else "m2", team="a" if i < 10 else "b"))
    page = store.list(ListQuery(type="Dataplane", size=10, offset=0))
    assert page.total == 25 and len(page.items) == 10 and page.next_offset == 10
    assert [r.name for r in page.items][:3] == ["dp-00", "dp-01", "dp-02"]
    last = store.list(ListQuery(type="Dataplane", size=10, offset=20))
    assert len(last.items) == 5 and last.next_offset is None
    assert store.list(ListQuery(type="Dataplane", mesh="m1")).total == 12
    assert store.list(ListQuery(type="Dataplane", labels={"team": "a"})).total == 10
    assert store.list(ListQuery(type="Dataplane", name_contains="-1")).total == 10
    odd = store.list(ListQuery(type="Dataplane", predicate=lambda r: int(r.name[-2:]) % 5 == 0, size=2))
    assert odd.total == 5 and [r.name for r in odd.items] == ["dp-00", "dp-05"] and odd.next_offset == 2


def test_concurrent_compare_and_swap_loses_nothing(store) -> None:
    store.create(Resource("Mesh", "", "counter", {"n": 0}))
    wins = [0] * 8
    conflicts = [0] * 8

    def worker(i: int) -> None:
        while wins[i] < 25:
            current = store.get("Mesh", "", "counter")
            current.content["n"] += 1
            try:
                store.update(current)
                wins[i] += 1
            except Conflict:
                conflicts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get("Mesh", "", "counter")
    assert final.content["n"] == sum(wins) == 200
    assert final.version == 201


def test_sqlite_schema_is_versioned_and_migrates_forward(tmp_path: Path) -> None:
    path = tmp_path / "kuma.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this kuma-cp understands"):
        SQLiteStore(path)


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "kuma.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        SQLiteStore(path)
