"""The SQLite file as other local users and other programs meet it: private modes, one process per
file, damaged or foreign databases refused at start."""
from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
from pathlib import Path
from typing import Iterator

import pytest

from appliance.core.resources.model import Resource
from appliance.store import StoreError, WriteOp
from appliance.store.file_modes import EXISTING_DIR_LIMIT, PRIVATE_FILE, tightened
from appliance.store.sqlite import SQLiteStore
from tests.support import umask

DB_FILES = ("kuma.db", "kuma.db-wal", "kuma.db-shm", "kuma.db.lock")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    with umask(0o022):   # the usual one
        yield


def test_tightened_cuts_only_what_is_beyond_the_limit() -> None:
    assert tightened(stat.S_IFREG | 0o644, PRIVATE_FILE) == 0o600
    assert tightened(stat.S_IFREG | 0o600, PRIVATE_FILE) is None
    assert tightened(stat.S_IFREG | 0o400, PRIVATE_FILE) is None       # read-only stays read-only
    assert tightened(stat.S_IFDIR | 0o755, EXISTING_DIR_LIMIT) == 0o750
    assert tightened(stat.S_IFDIR | 0o750, EXISTING_DIR_LIMIT) is None  # the packaged /var/lib/kuma
    assert tightened(stat.S_IFDIR | 0o777, EXISTING_DIR_LIMIT) == 0o750


def test_database_files_are_private_under_the_usual_umask(tmp_path: Path, umask_022: None) -> None:
    store = SQLiteStore(tmp_path / "kuma.db")
    try:
        store.create(Resource("Mesh", "", "default", {}))
        assert {name: oct(_mode(tmp_path / name)) for name in DB_FILES} == {name: "0o600" for name in DB_FILES}
    finally:
        store.close()


def test_loose_database_files_are_tightened_with_one_line_each(tmp_path: Path, umask_022: None,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    SQLiteStore(tmp_path / "kuma.db").close()
    loose = ("kuma.db", "kuma.db-wal", "kuma.db-shm")
    for name in loose:
        (tmp_path / name).touch()   # an empty -wal / -shm is what SQLite itself starts from
        os.chmod(tmp_path / name, 0o644)
    caplog.set_level(logging.WARNING, "appliance.store")
    store = SQLiteStore(tmp_path / "kuma.db")
    try:
        assert [oct(_mode(tmp_path / name)) for name in loose] == ["0o600"] * 3
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 3 and all("0644" in line and "0600" in line for line in said), said
        assert sorted(line.split()[0] for line in said) == sorted(str(tmp_path / name) for name in loose)
    finally:
        store.close()


def test_a_second_store_on_the_same_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "kuma.db")
    try:
        with pytest.raises(StoreError, match=f"in use by another kuma-cp \\(pid {os.getpid()}\\)"):
            SQLiteStore(tmp_path / "kuma.db")
        first.create(Resource("Mesh", "", "still-writable", {}))
    finally:
        first.close()
    again = SQLiteStore(tmp_path / "kuma.db")   # closing released the lock
    assert again.get("Mesh", "", "still-writable") is not None
    again.close()


def _filled(path: Path, n: int) -> None:
    store = SQLiteStore(path)
    try:
        store.write([WriteOp("create", Resource("Mesh", "", f"mesh-{i:05d}", {"note": "x" * 1000}))
                     for i in range(n)])
    finally:
        store.close()


def test_a_database_damaged_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kuma.db"
    _filled(path, 300)
    size = path.stat().st_size
    assert size > 64 * 1024
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(8).randbytes(8192))
    with pytest.raises(StoreError, match=f"cannot open SQLite store {path}: the database is damaged"):
        SQLiteStore(path)


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "kuma.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="holds tables kuma-cp did not create \\(notes\\)"):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_a_kuma_database_with_a_foreign_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kuma.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE extra (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is not kuma-cp's schema version 1 \\(differs in: extra\\)"):
        SQLiteStore(path)


def test_an_analyzed_database_is_still_ours(tmp_path: Path) -> None:
    """sqlite_stat1 (a manual ANALYZE) is SQLite's, not a foreign table."""
    path = tmp_path / "kuma.db"
    _filled(path, 3)
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    conn.close()
    store = SQLiteStore(path)
    assert store.count("Mesh") == 3
    store.close()
