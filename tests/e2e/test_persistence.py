"""kill -9 in the middle of a write stream loses no acknowledged write; the change log goes on."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from appliance.store.sqlite import SQLiteStore
from tests.support import CpProcess

pytestmark = pytest.mark.slow


def _dp(i: int) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": f"dp-{i}",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 10000 + i, "tags": {"kuma.io/service": f"s{i}"}}]}}


def test_kill_9_mid_write_stream_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path).start()
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
    while len(acknowledged) < 300:
        time.sleep(0.01)
    cp.kill()  # SIGKILL while the writers are still going
    stop.set()
    for t in threads:
        t.join()
    assert 300 <= len(acknowledged) < 1000, "the kill must land mid-stream"

    conn = sqlite3.connect(tmp_path / "kuma.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store = SQLiteStore(tmp_path / "kuma.db")
    revision_before = store.revision()
    store.close()

    cp = CpProcess(tmp_path).start()
    try:
        names = set()
        offset = 0
        while True:
            page = requests.get(f"{cp.url}/meshes/default/dataplanes?size=1000&offset={offset}").json()
            names.update(item["name"] for item in page["items"])
            if not page["next"]:
                break
            offset += 1000
        missing = [i for i in acknowledged if f"dp-{i}" not in names]
        assert missing == []
        assert requests.put(f"{cp.url}/meshes/default/dataplanes/dp-after", json=dict(_dp(5000), name="dp-after")
                            ).status_code == 201
    finally:
        cp.stop()
    store = SQLiteStore(tmp_path / "kuma.db")
    changes = store.changes_since(revision_before)
    store.close()
    assert changes and changes[0].revision == revision_before + 1 and changes[-1].name == "dp-after"


def test_restart_keeps_everything_and_does_not_recreate_defaults(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path).start()
    try:
        assert requests.put(f"{cp.url}/meshes/demo", json={"type": "Mesh", "name": "demo"}).status_code == 201
        default_before = requests.get(f"{cp.url}/meshes/default").json()
    finally:
        assert cp.stop() == 0
    cp = CpProcess(tmp_path).start()
    try:
        assert [m["name"] for m in requests.get(f"{cp.url}/meshes").json()["items"]] == ["default", "demo"]
        assert requests.get(f"{cp.url}/meshes/default").json() == default_before
    finally:
        cp.stop()
