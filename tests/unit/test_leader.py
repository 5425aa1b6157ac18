"""Leader election on a real PostgreSQL (pgserver), and the leader's jobs on a real SQLite store.

The election's thread is not started: each test drives the elector's attempts itself, so nothing
here depends on timing.
"""
from __future__ import annotations

import time
from pathlib import Path
import psycopg
import pytest

from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.runtime.leader import AlwaysLeader, PostgresLeaderElector, is_live
from appliance.runtime.leader_jobs import LeaderJobs
from appliance.store.sqlite import SQLiteStore
from tests.support import PostgresServer



@pytest.fixture(scope="module")
def pg_uri(postgres_server: PostgresServer) -> str:
    s = postgres_server
    return f"postgresql://{s.USER}:{s.PASSWORD}@{s.host}:{s.port}/{s.database()}"


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []


def _elector(uri: str, instance_id: str, rec: Recorder) -> PostgresLeaderElector:
    elector = PostgresLeaderElector(
        lambda name: psycopg.connect(uri, autocommit=True, application_name=name), instance_id)
    elector.on_elected(lambda: rec.events.append(f"{instance_id} elected"))
    elector.on_lost(lambda: rec.events.append(f"{instance_id} lost"))
    return elector


def _terminate(uri: str, instance_id: str) -> None:
    """What PostgreSQL does to the session of an instance that was killed or cut off."""
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      ("kuma-cp-elector:" + instance_id,))


def test_one_leader_and_the_other_takes_over_when_its_session_ends(pg_uri: str) -> None:
    rec = Recorder()
    a, b = _elector(pg_uri, "cp-a", rec), _elector(pg_uri, "cp-b", rec)
    try:
        a._attempt()
        b._attempt()
        a._attempt()   # the leader keeps its lock
        assert (a.is_leader, b.is_leader) == (True, False)
        assert rec.events == ["cp-a elected"]
        assert a.live_instances() == b.live_instances() == {"cp-a", "cp-b"}

        _terminate(pg_uri, "cp-a")
        a._attempt()   # its check fails: it gives leadership up at once
        assert not a.is_leader
        b._attempt()
        assert b.is_leader
        a._attempt()   # reconnected, but the lock is b's
        assert not a.is_leader
        assert rec.events == ["cp-a elected", "cp-a lost", "cp-b elected"]
    finally:
        a.stop()
        b.stop()
    assert rec.events[-1] == "cp-b lost"


def test_an_unreachable_database_is_no_leadership_and_no_error(tmp_path: Path) -> None:
    rec = Recorder()
    uri = f"postgresql://kuma@/kuma?host={tmp_path}&connect_timeout=1"   # no server listens there
    elector = _elector(uri, "cp-a", rec)
    elector._attempt()
    assert not elector.is_leader and elector.live_instances() is None and rec.events == []


def test_instance_ids_are_compared_as_postgres_keeps_them() -> None:
    long_id = "a-very-long-host-name-of-a-virtual-machine.example.internal-1f2e"
    kept = ("kuma-cp-elector:" + long_id)[:63][len("kuma-cp-elector:"):]
    assert is_live(long_id, {kept}) and not is_live("other", {kept})


# --- the leader's jobs -------------------------------------------------------------------------

class Live(AlwaysLeader):
    def __init__(self, live: set[str]) -> None:
        super().__init__("cp-b")
        self.live = live

    def live_instances(self) -> set[str] | None:
        return self.live


def _insight(mesh: str, name: str, *subs: dict) -> Resource:
    return Resource("DataplaneInsight", mesh, name, {"subscriptions": list(subs)}, {"kuma.io/mesh": mesh})


def _dataplane(name: str) -> Resource:
    return Resource("Dataplane", "default", name, {"networking": {"address": "10.0.0.1", "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": "web"}}]}})


def test_jobs_close_subscriptions_of_dead_instances_and_remove_long_offline_dataplanes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    for name in ("on-dead", "on-live", "gone-long", "gone-recently"):
        manager.create(_dataplane(name))
    store.create(_insight("default", "on-dead", {"id": "1", "controlPlaneInstanceId": "cp-a",
                                                 "connectTime": "2026-01-01T00:00:00.000000Z"}))
    store.create(_insight("default", "on-live", {"id": "2", "controlPlaneInstanceId": "cp-a",
                                                 "connectTime": "2026-01-01T00:00:00.000000Z",
                                                 "disconnectTime": "2026-01-01T00:01:00.000000Z"},
                          {"id": "3", "controlPlaneInstanceId": "cp-b",
                           "connectTime": "2026-01-01T00:00:59.000000Z"}))
    store.create(_insight("default", "gone-long", {"id": "4", "controlPlaneInstanceId": "cp-b",
                                                   "connectTime": "2020-01-01T00:00:00.000000Z",
                                                   "disconnectTime": "2020-01-01T00:00:01.000000Z"}))
    store.create(_insight("default", "gone-recently", {"id": "5", "controlPlaneInstanceId": "cp-a",
                                                       "connectTime": "2099-01-01T00:00:00.000000Z",
                                                       "disconnectTime": "2099-01-01T00:00:01.000000Z"}))
    jobs = LeaderJobs(manager, Live({"cp-b"}), lambda: None, {"Dataplane": 72 * 3600.0})
    try:
        jobs.run_once(None)   # who is alive is not known (database trouble): nothing is closed
        assert "disconnectTime" not in store.get("DataplaneInsight", "default", "on-dead").content["subscriptions"][0]
        jobs.run_once({"cp-b"})
        closed = store.get("DataplaneInsight", "default", "on-dead").content["subscriptions"][0]
        assert closed["disconnectTime"]
        untouched = store.get("DataplaneInsight", "default", "on-live").content["subscriptions"]
        assert "disconnectTime" not in untouched[1]
        assert store.get("Dataplane", "default", "gone-long") is None
        assert store.get("DataplaneInsight", "default", "gone-long") is None
        assert store.get("Dataplane", "default", "gone-recently") is not None
        assert store.get("Dataplane", "default", "on-dead") is not None   # offline now, removed only when old
    finally:
        store.close()


def test_jobs_run_on_election_and_stop_with_leadership(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    runs: list[str] = []
    leadership = Live({"cp-b"})
    LeaderJobs(ResourceManager(store), leadership, lambda: runs.append("defaults"), {})
    try:
        leadership.start()
        assert runs == ["defaults"] and leadership.is_leader
        leadership.stop()   # returns once the jobs' thread is done
        assert not leadership.is_leader
    finally:
        store.close()


def test_defaults_are_retried_until_they_can_be_created(tmp_path: Path) -> None:
    from appliance.store import StoreError
    store = SQLiteStore(tmp_path / "kuma.db")
    attempts: list[int] = []

    def create_defaults() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise StoreError("database unreachable")

    leadership = Live({"cp-b"})
    LeaderJobs(ResourceManager(store), leadership, create_defaults, {}, interval=0.01)
    try:
        leadership.start()   # the first attempt fails; the jobs' loop retries it
        for _ in range(1000):
            if len(attempts) >= 2:
                break
            time.sleep(0.01)
        time.sleep(0.05)     # a few more rounds of the loop: it must not create them again
        assert len(attempts) == 2
    finally:
        leadership.stop()
        store.close()
