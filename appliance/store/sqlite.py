"""SQLite driver: one file, WAL, fsync on every commit, so an acknowledged write survives kill -9.

One process per file (sqlite_lock). Writes are serialised by a thread lock and `BEGIN IMMEDIATE`;
reads use one connection per thread and never block writers. The files are private (0600) and
checked at start (integrity, schema). A full disk fails writes with StoreUnavailable (503) and
makes the store unhealthy until a write succeeds again.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Callable, TypeVar

import orjson

from appliance.core.events import Change
from appliance.core.resources.model import Resource
from appliance.store.base import (ListPage, ListQuery, Store, StoreError, StoreUnavailable, WriteOp, now_rfc3339,
                                  stamp)
from appliance.core.events import ChangeHub
from appliance.store.file_modes import PRIVATE_FILE, private_file, restrict
from appliance.store.migrations import SCHEMA_VERSION, migrate
from appliance.store.sqlite_lock import DatabaseLock

log = logging.getLogger("appliance.store")
_T = TypeVar("_T")
_COLUMNS = "type, mesh, name, version, creation_time, modification_time, labels, content"


def _check_integrity(conn: sqlite3.Connection) -> None:
    """Refuse a damaged file at start rather than serve it. quick_check reads every page but does not
    match indexes to tables (integrity_check does): ~10 ms warm, ~60 ms from a cold page cache for
    5,000 dataplanes with their insights (5.5 MiB)."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise StoreError(f"the database is damaged (quick_check: {'; '.join(problems)}); "
                         f"restore it from a backup")


def _row_to_resource(row: tuple) -> Resource:
    return Resource(
        type=row[0], mesh=row[1], name=row[2], version=row[3],
        creation_time=row[4], modification_time=row[5],
        labels=orjson.loads(row[6]), content=orjson.loads(row[7]),
    )


class SQLiteStore(Store):
    def __init__(self, path: str | Path, hub: ChangeHub | None = None, busy_timeout: float = 5.0) -> None:
        super().__init__(hub)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._full = False          # the last write found the disk full (see `healthy`)
        self._db_lock = DatabaseLock(self.path)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            # SQLite gives the -wal and -shm files the database file's mode: private from the first byte
            private_file(self.path)
            for suffix in ("-wal", "-shm"):
                restrict(self.path.with_name(self.path.name + suffix), PRIVATE_FILE)
        except OSError as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e.strerror}") from e
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            _check_integrity(self._writer)
            migrate(self._writer)
        except (sqlite3.DatabaseError, StoreError) as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._db_lock.release()

    # --- reads -------------------------------------------------------------------------------
    def get(self, type: str, mesh: str, name: str) -> Resource | None:
        row = self._reader().execute(
            f"SELECT {_COLUMNS} FROM resources WHERE type=? AND mesh=? AND name=?", (type, mesh, name)
        ).fetchone()
        return _row_to_resource(row) if row else None

    def list(self, query: ListQuery) -> ListPage:
        where = ["type = ?"]
        args: list = [query.type]
        if query.mesh is not None:
            where.append("mesh = ?")
            args.append(query.mesh)
        if query.name_contains:
            where.append("instr(name, ?) > 0")
            args.append(query.name_contains)
        for k, v in query.labels.items():
            where.append("json_extract(labels, ?) = ?")
            args.extend([f'$."{k}"', v])
        sql_where = " AND ".join(where)
        conn = self._reader()
        if query.predicate is None:
            total = conn.execute(f"SELECT count(*) FROM resources WHERE {sql_where}", args).fetchone()[0]
            if query.size == 0:
                return ListPage([], total, None)
            limit = -1 if query.size is None else query.size
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE {sql_where} ORDER BY name, mesh LIMIT ? OFFSET ?",
                [*args, limit, query.offset],
            ).fetchall()
            items = [_row_to_resource(r) for r in rows]
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE {sql_where} ORDER BY name, mesh", args).fetchall()
            matching = [r for r in map(_row_to_resource, rows) if query.predicate(r)]
            total = len(matching)
            end = None if query.size is None else query.offset + query.size
            items = matching[query.offset:end]
        end_offset = query.offset + len(items)
        next_offset = end_offset if query.size and end_offset < total else None
        return ListPage(items, total, next_offset)

    def revision(self) -> int:
        row = self._reader().execute("SELECT max(revision) FROM changes").fetchone()
        return row[0] or 0

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        rows = self._reader().execute(
            "SELECT revision, op, type, mesh, name, version FROM changes WHERE revision > ? "
            "ORDER BY revision LIMIT ?", (revision, limit)).fetchall()
        return [Change(*r) for r in rows]

    # --- writes ------------------------------------------------------------------------------
    def _commit(self, ops: list[WriteOp]) -> list[Change]:
        with self._write_lock:
            try:
                changes = self._transaction(lambda conn: [self._apply(conn, op) for op in ops])
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                self._disk_full()
                raise StoreUnavailable(f"cannot write to the SQLite store {self.path}: its disk is full; "
                                       f"nothing was written") from e
            self._disk_usable()
        return changes

    def _transaction(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:   # SQLite has rolled back already after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise
        return out

    def healthy(self) -> bool:
        """False while the disk is full: from a write that failed for lack of space until a small
        write succeeds again (tried here, so that readiness returns on its own once space is freed)."""
        if not self._full:
            return True
        with self._write_lock:
            try:
                # a write of one page (the header), committed: it needs space as any write does
                self._transaction(lambda conn: conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}"))
            except sqlite3.Error:
                return False   # still full (or worse): not ready; the next probe tries again
            self._disk_usable()
        return True

    def _disk_full(self) -> None:
        if not self._full:
            log.warning("SQLite store %s: the disk is full; writes answer 503 and /ready says not ready "
                        "until space is freed", self.path)
        self._full = True

    def _disk_usable(self) -> None:
        if self._full:
            log.info("SQLite store %s: the disk has space again; writes go on", self.path)
        self._full = False

    def _apply(self, conn: sqlite3.Connection, op: WriteOp) -> Change:
        res = op.resource
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM resources WHERE type=? AND mesh=? AND name=?", (res.type, res.mesh, res.name)
        ).fetchone()
        current = _row_to_resource(row) if row else None
        stamp(op, current)
        if op.op == "delete":
            conn.execute("DELETE FROM resources WHERE type=? AND mesh=? AND name=?", (res.type, res.mesh, res.name))
        else:
            conn.execute(
                f"INSERT OR REPLACE INTO resources ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                (res.type, res.mesh, res.name, res.version, res.creation_time, res.modification_time,
                 orjson.dumps(res.labels).decode(), orjson.dumps(res.content).decode()),
            )
        cur = conn.execute(
            "INSERT INTO changes (op, type, mesh, name, version, at) VALUES (?,?,?,?,?,?)",
            (op.op, res.type, res.mesh, res.name, res.version, now_rfc3339()),
        )
        return Change(cur.lastrowid, op.op, res.type, res.mesh, res.name, res.version)
