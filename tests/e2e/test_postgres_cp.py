"""`kuma-cp run` on PostgreSQL as an operator sees it: `migrate up` then `run`; `/ready` follows the database;
kill -9 mid-write loses nothing."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, CpProcess, PostgresServer, cp_command

pytestmark = pytest.mark.slow


def _ready(cp: CpProcess) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{cp.diag_port}/ready", timeout=2).status_code
    except requests.RequestException:
        return 0


def _wait_for(cp: CpProcess, status: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _ready(cp) != status:
        assert time.monotonic() < deadline, f"/ready did not answer {status} within {timeout}s: {cp.read_log()}"
        time.sleep(0.1)


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


def _dp(i: int) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": f"dp-{i}",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 10000 + i, "tags": {"kuma.io/service": f"s{i}"}}]}}


def test_kill_9_mid_write_stream_loses_nothing_and_leaves_no_lock(postgres_server: PostgresServer,
                                                                   tmp_path: Path) -> None:
    """A control plane killed inside write transactions: every acknowledged write is there, and the
    writers' lock it may have held is released (the next instance writes at once)."""
    db = postgres_server.migrated_database()
    env = postgres_server.env(db)
    (tmp_path / "a").mkdir()
    cp = CpProcess(tmp_path / "a", env).start()
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(start: int) -> None:
        http = requests.Session()
        for i in range(start, 1000, 4):
            if stop.is_set():
                return
            try:
                r = http.put(f"{cp.url}/meshes/default/dataplanes/dp-{i}", json=_dp(i), timeout=5)
            except requests.RequestException:
                return  # the process is gone: this write was never acknowledged
            if r.status_code == 201:
                with lock:
                    acknowledged.append(i)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 200:
        time.sleep(0.01)
    cp.kill()
    stop.set()
    for t in threads:
        t.join()
    assert 200 <= len(acknowledged) < 1000, "the kill must land mid-stream"

    (tmp_path / "b").mkdir()
    cp = CpProcess(tmp_path / "b", env).start()
    try:
        names = {item["name"] for item in
                 requests.get(f"{cp.url}/meshes/default/dataplanes?size=1000").json()["items"]}
        assert [i for i in acknowledged if f"dp-{i}" not in names] == []
        assert requests.put(f"{cp.url}/meshes/default/dataplanes/dp-after", json=dict(_dp(5000), name="dp-after"),
                            timeout=10).status_code == 201
    finally:
        assert cp.stop() == 0
