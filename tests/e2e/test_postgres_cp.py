"""`kuma-cp run` on PostgreSQL as an operator sees it: `migrate up` then `run`; `/ready` follows the database;
kill -9 mid-write loses nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from tests.support import (ROOT, CpProcess, PostgresServer, cp_command, eventually, kill_mid_write_stream,
                           numbered_dataplane)

pytestmark = pytest.mark.slow


def _ready(cp: CpProcess) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{cp.diag_port}/ready", timeout=2).status_code
    except requests.RequestException:
        return 0


def _wait_for(cp: CpProcess, status: int, timeout: float = 20) -> None:
    eventually(lambda: _ready(cp) == status, lambda: f"/ready answering {status}: {cp.read_log()}", timeout=timeout)


def test_ready_follows_the_database_without_a_restart(postgres_server: PostgresServer, tmp_path: Path) -> None:
    db = postgres_server.database()
    env = {**postgres_server.env(db), "KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL": "200ms",
           "KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL": "1s"}
    migrate = subprocess.run(cp_command("migrate", "up"), env={**CpProcess(tmp_path, env).env}, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0 and "schema migrated from version 0" in migrate.stdout, migrate.stderr
    cp = CpProcess(tmp_path, env).start()
    try:
        assert requests.put(cp.url + "/meshes/before", json={"type": "Mesh", "name": "before"}).status_code == 201
        postgres_server.stop()
        try:
            _wait_for(cp, 503)
            assert requests.get(f"http://127.0.0.1:{cp.diag_port}/healthy").status_code == 200
            # the API says the database is unavailable, in Kuma's error body, and writes nothing
            during = requests.put(cp.url + "/meshes/during", json={"type": "Mesh", "name": "during"}, timeout=30)
            assert during.status_code == 503, during.text
            assert during.json()["title"] == "Service Unavailable" and "PostgreSQL" in during.json()["detail"]
        finally:
            postgres_server.start()
        _wait_for(cp, 200)
        assert requests.put(cp.url + "/meshes/after", json={"type": "Mesh", "name": "after"}).status_code == 201
        names = {m["name"] for m in requests.get(cp.url + "/meshes").json()["items"]}
        assert {"default", "before", "after"} <= names and "during" not in names
    finally:
        assert cp.stop() == 0
    assert "Traceback" not in cp.read_log()


def test_kill_9_mid_write_stream_loses_nothing_and_leaves_no_lock(postgres_server: PostgresServer,
                                                                   tmp_path: Path) -> None:
    """A control plane killed inside write transactions: every acknowledged write is there, and the
    writers' lock it may have held is released (the next instance writes at once)."""
    db = postgres_server.migrated_database()
    env = postgres_server.env(db)
    (tmp_path / "a").mkdir()
    cp = CpProcess(tmp_path / "a", env).start()
    acknowledged = kill_mid_write_stream(cp, 200)

    (tmp_path / "b").mkdir()
    cp = CpProcess(tmp_path / "b", env).start()
    try:
        names = {item["name"] for item in
                 requests.get(f"{cp.url}/meshes/default/dataplanes?size=1000").json()["items"]}
        assert [i for i in acknowledged if f"dp-{i}" not in names] == []
        after = dict(numbered_dataplane(5000), name="dp-after")
        assert requests.put(f"{cp.url}/meshes/default/dataplanes/dp-after", json=after, timeout=10).status_code == 201
    finally:
        assert cp.stop() == 0
