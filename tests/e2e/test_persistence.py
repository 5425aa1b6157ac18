"""kill -9 in the middle of a write stream loses no acknowledged write; the change log goes on."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from appliance.store.sqlite import SQLiteStore
from tests.support import CpProcess, kill_mid_write_stream, numbered_dataplane

pytestmark = pytest.mark.slow


def test_kill_9_mid_write_stream_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path).start()
    acknowledged = kill_mid_write_stream(cp, 300)

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
        assert requests.put(f"{cp.url}/meshes/default/dataplanes/dp-after", json=dict(numbered_dataplane(5000), name="dp-after")
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
