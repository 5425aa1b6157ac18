"""PostgreSQL driver: the SQLite semantics on a database that several kuma-cp instances share.

Writes: one transaction per batch, holding a database-wide advisory lock (see `_commit`), versions
and compare-and-swap as in SQLite, one change-log row per operation and a `NOTIFY` with the newest
revision, delivered to every listening instance when the transaction commits.

Change events: every change reaches `self.hub` exactly once per instance and in revision order,
whichever instance wrote it. `_published` is the revision up to which this instance has published;
a local write publishes its own changes at once (the fast path), the listener thread publishes
what other instances wrote, and both go through `_publish_new`, which only ever moves forward.
"""
from __future__ import annotations

import logging
import select
import threading
from typing import Any, Iterator

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool

from appliance.core.events import Change, ChangeHub
from appliance.core.resources.model import Resource
from appliance.store.base import ListPage, ListQuery, Store, StoreUnavailable, WriteOp, stamp
from appliance.store.pg_connect import PostgresSettings, connect, unavailable
from appliance.store.pg_listener import CHANNEL, ChangeListener
from appliance.store.pg_schema import check_schema

log = logging.getLogger("appliance.store.postgres")

_COLUMNS = "type, mesh, name, version, creation_time, modification_time, labels, content"
# Arbitrary constant naming the writers' advisory lock ("kumawrit").
WRITE_LOCK = 0x6B756D61_77726974


def _row_to_resource(row: tuple) -> Resource:
    return Resource(type=row[0], mesh=row[1], name=row[2], version=row[3], creation_time=row[4],
                    modification_time=row[5], labels=row[6], content=orjson.loads(row[7]))


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(orjson.loads, conn)
    set_json_dumps(orjson.dumps, conn)


def _check(conn: psycopg.Connection) -> None:
    """Before a pooled connection is handed out: an idle connection has nothing to read unless the
    server closed it (a restart, an administrator's kill), so only a readable one pays for the round
    trip that proves it dead or alive. A check on every request would double the cost of a read."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


class PostgresStore(Store):
    def __init__(self, settings: PostgresSettings, hub: ChangeHub | None = None) -> None:
        """Connects, checks the schema version (StoreError with what to do) and starts listening."""
        super().__init__(hub)
        self.settings = settings
        with connect(settings) as conn:
            check_schema(conn, settings.tolerate_newer_db_versions)
            # Changes before start-up are not events: subscribers read the current state themselves.
            self._published = conn.execute("SELECT coalesce(max(revision), 0) FROM changes").fetchone()[0]
        self._publish_lock = threading.RLock()   # re-entrant: a subscriber may write from its callback
        # Kuma's maxOpenConnections 0 means "no bound"; the pool needs a number.
        max_size = settings.max_open_connections or 1 << 20
        self._pool = ConnectionPool(
            kwargs={**settings.connect_kwargs(), "autocommit": True},
            min_size=settings.min_open_connections, max_size=max_size,
            timeout=settings.connection_timeout, configure=_configure,
            # A connection that died with the server is replaced, not handed to a request.
            check=_check, name="kuma-cp", open=True,
            # No retrying in the background: the pool's backoff grows to tens of seconds during an
            # outage and would keep requests failing that long after the database is back. A
            # failed connection is given up at once, and the next request tries afresh.
            reconnect_timeout=0)
        self._listener = ChangeListener(settings, self._on_notify)
        self._listener.start()

    def healthy(self) -> bool:
        """Whether this instance currently reaches PostgreSQL (its listener connection is up)."""
        return self._listener.connected.is_set()

    def close(self) -> None:
        self._listener.stop()
        self._pool.close()

    def _conn(self) -> Any:
        return _PooledConnection(self)

    # --- reads -------------------------------------------------------------------------------
    def get(self, type: str, mesh: str, name: str) -> Resource | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM resources WHERE type=%s AND mesh=%s AND name=%s",
                               (type, mesh, name)).fetchone()
        return _row_to_resource(row) if row else None

    def list(self, query: ListQuery) -> ListPage:
        where = ["type = %s"]
        args: list = [query.type]
        if query.mesh is not None:
            where.append("mesh = %s")
            args.append(query.mesh)
        if query.name_contains:
            where.append("strpos(name, %s) > 0")
            args.append(query.name_contains)
        if query.labels:
            where.append("labels @> %s")
            args.append(Jsonb(query.labels))
        sql_where = " AND ".join(where)
        with self._conn() as conn:
            if query.predicate is None:
                total = conn.execute(f"SELECT count(*) FROM resources WHERE {sql_where}", args).fetchone()[0]
                if query.size == 0:
                    return ListPage([], total, None)
                rows = conn.execute(f"SELECT {_COLUMNS} FROM resources WHERE {sql_where} "
                                    "ORDER BY name, mesh LIMIT %s OFFSET %s",
                                    [*args, query.size, query.offset]).fetchall()
                items = [_row_to_resource(r) for r in rows]
            else:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM resources WHERE {sql_where} ORDER BY name, mesh",
                                    args).fetchall()
        if query.predicate is not None:
            matching = [r for r in map(_row_to_resource, rows) if query.predicate(r)]
            total = len(matching)
            end = None if query.size is None else query.offset + query.size
            items = matching[query.offset:end]
        end_offset = query.offset + len(items)
        return ListPage(items, total, end_offset if query.size and end_offset < total else None)

    def revision(self) -> int:
        with self._conn() as conn:
            return conn.execute("SELECT coalesce(max(revision), 0) FROM changes").fetchone()[0]

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        with self._conn() as conn:
            rows = conn.execute("SELECT revision, op, type, mesh, name, version FROM changes "
                                "WHERE revision > %s ORDER BY revision LIMIT %s", (revision, limit)).fetchall()
        return [Change(*r) for r in rows]

    # --- writes ------------------------------------------------------------------------------
    def write(self, ops: list[WriteOp]) -> list[Change]:
        changes = self._commit(ops)
        try:
            self._publish_new(changes)
        except StoreUnavailable as e:
            # Committed but not yet published: the listener catches up once the database answers again.
            log.warning("published a write late: %s", e)
        return changes

    def _commit(self, ops: list[WriteOp]) -> list[Change]:
        if not ops:
            return []
        with self._conn() as conn:
            with conn.transaction():
                # Serialise writers on the change log. Revisions come from a sequence, and two
                # concurrent transactions could commit out of order (11 visible before 10): a reader
                # of "changes after 10" would then never see 10. Under this lock a transaction takes
                # its revisions and commits before the next one takes any, so revisions become
                # visible in order. It is released at commit, after the commit is visible.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                changes = [self._apply(conn, op) for op in ops]
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(changes[-1].revision)))
        return changes

    def _apply(self, conn: psycopg.Connection, op: WriteOp) -> Change:
        res = op.resource
        key = (res.type, res.mesh, res.name)
        row = conn.execute(f"SELECT {_COLUMNS} FROM resources WHERE type=%s AND mesh=%s AND name=%s",
                           key).fetchone()
        stamp(op, _row_to_resource(row) if row else None)
        # The resource row and its change-log row in one statement: one round trip under the lock.
        log_change = ("logged AS (INSERT INTO changes (op, type, mesh, name, version) "
                      "VALUES (%s,%s,%s,%s,%s) RETURNING revision) SELECT revision FROM logged")
        if op.op == "delete":
            sql = f"WITH gone AS (DELETE FROM resources WHERE type=%s AND mesh=%s AND name=%s), {log_change}"
            args: tuple = key
        else:
            sql = (f"WITH written AS (INSERT INTO resources ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                   "ON CONFLICT (type, mesh, name) DO UPDATE SET version=EXCLUDED.version, "
                   "modification_time=EXCLUDED.modification_time, labels=EXCLUDED.labels, "
                   f"content=EXCLUDED.content), {log_change}")
            args = (*key, res.version, res.creation_time, res.modification_time, Jsonb(res.labels),
                    orjson.dumps(res.content).decode())
        revision = conn.execute(sql, (*args, op.op, *key, res.version)).fetchone()[0]
        return Change(revision, op.op, res.type, res.mesh, res.name, res.version)

    def _on_notify(self, announced: int | None) -> None:
        """The listener heard of revision `announced` (None: of something, after a reconnect). A
        write of this instance was already published by its writer: no need to read the log."""
        if announced is None or announced > self._published:
            self._publish_new()

    def _publish_new(self, written: list[Change] | None = None) -> None:
        """Publish every change after `_published`, in order. `written`: changes this instance just
        committed; when they directly follow what was published, no query is needed."""
        with self._publish_lock:
            if written and written[-1].revision <= self._published:
                return      # the listener got there first
            if written and written[0].revision == self._published + 1:
                batches: Iterator[list[Change]] = iter([written])
            else:
                batches = self._unpublished()
            for batch in batches:
                self.hub.publish(batch)
                self._published = batch[-1].revision

    def _unpublished(self) -> Iterator[list[Change]]:
        while batch := self.changes_since(self._published):
            yield batch


class _PooledConnection:
    """A pool connection whose connectivity failures leave as StoreUnavailable naming the server."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._cm = store._pool.connection()

    def __enter__(self) -> psycopg.Connection:
        try:
            return self._cm.__enter__()
        except psycopg.OperationalError as e:
            raise unavailable(self._store.settings, e) from e

    def __exit__(self, *exc: Any) -> bool | None:
        try:
            result = self._cm.__exit__(*exc)
        except psycopg.OperationalError as e:
            raise unavailable(self._store.settings, e) from e
        if exc[0] is not None and issubclass(exc[0], psycopg.OperationalError):
            raise unavailable(self._store.settings, exc[1]) from exc[1]
        return result
