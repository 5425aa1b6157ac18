"""`kuma-cp run` on PostgreSQL as an operator sees it: `migrate up` then `run`; `/ready` follows the database."""
from __future__ import annotations

import subprocess
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
        finally:
            postgres_server.start()
        _wait_for(cp, 200)
        assert requests.put(cp.url + "/meshes/after", json={"type": "Mesh", "name": "after"}).status_code == 201
        names = {m["name"] for m in requests.get(cp.url + "/meshes").json()["items"]}
        assert {"default", "before", "after"} <= names
    finally:
        assert cp.stop() == 0
    assert "Traceback" not in cp.read_log()
