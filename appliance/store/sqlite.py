"""SQLite driver: one file, WAL, fsync on every commit, so an acknowledged write survives kill -9.

Writes are serialised by a process lock and `BEGIN IMMEDIATE` (safe with other processes on the
same file, see STACK-NOTES). Reads use one connection per thread and never block writers.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

from appliance.core.events import Change
from appliance.core.resources.model import Resource
from appliance.store.base import ListPage, ListQuery, Store, StoreError, WriteOp, now_rfc3339, stamp
from appliance.core.events import ChangeHub
from appliance.store.migrations import migrate

_COLUMNS = "type, mesh, name, version, creation_time, modification_time, labels, content"


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
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            migrate(self._writer)
        except sqlite3.DatabaseError as e:
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
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                changes = [self._apply(conn, op) for op in ops]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return changes

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
