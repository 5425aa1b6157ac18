"""Versioned SQLite schema. `PRAGMA user_version` holds the version; start-up migrates forward.

Before migrating, the schema found must be the one these migrations made at that version: a
database of another program (or one a user altered) is refused rather than taken over.
"""
from __future__ import annotations

import sqlite3
from functools import lru_cache

from appliance.store.base import StoreError

# Each entry moves the schema from version i to i+1. Append only; never edit a shipped step.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE resources (
        type TEXT NOT NULL,
        mesh TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        creation_time TEXT NOT NULL,
        modification_time TEXT NOT NULL,
        labels TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (type, mesh, name)
    ) WITHOUT ROWID;
    CREATE INDEX resources_by_name ON resources (type, name, mesh);
    CREATE TABLE changes (
        revision INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL,
        type TEXT NOT NULL,
        mesh TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


# Our objects as sqlite_master lists them; SQLite's own (sqlite_sequence, sqlite_stat1 after a
# manual ANALYZE) are not a program's schema.
_SCHEMA_QUERY = ("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                 "ORDER BY type, name")

Schema = frozenset[tuple[str, str, str, str]]


def schema_of(conn: sqlite3.Connection) -> Schema:
    return frozenset((type_, name, table, " ".join((sql or "").split()))
                     for type_, name, table, sql in conn.execute(_SCHEMA_QUERY))


@lru_cache(maxsize=None)
def expected_schema(version: int) -> Schema:
    """The schema MIGRATIONS[:version] make, replayed on an empty in-memory database."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for step in MIGRATIONS[:version]:
            for statement in step.split(";"):
                if statement.strip():
                    conn.execute(statement)
        return schema_of(conn)
    finally:
        conn.close()


def check_schema(found: Schema, version: int) -> None:
    """Raise StoreError unless `found` is what this kuma-cp creates at schema `version`."""
    expected = expected_schema(version)
    if found == expected:
        return
    if version == 0:
        names = ", ".join(sorted({name for _, name, _, _ in found}))
        raise StoreError(f"the database holds tables kuma-cp did not create ({names}): it is not a kuma-cp "
                         f"database; point store.sqlite.path (or general.workDir) at another file")
    strange = sorted({name for _, name, _, _ in found ^ expected})
    raise StoreError(f"the database schema is not kuma-cp's schema version {version} (differs in: "
                     f"{', '.join(strange)}); restore the database from a backup")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(f"the database schema is version {found}, newer than this kuma-cp "
                             f"understands ({SCHEMA_VERSION}); run a newer kuma-cp")
        check_schema(schema_of(conn), found)
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:   # a failed COMMIT (a full disk) has rolled back already: keep its error
            conn.execute("ROLLBACK")
        raise
    return found
