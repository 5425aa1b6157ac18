"""Versioned SQLite schema. `PRAGMA user_version` holds the version; start-up migrates forward."""
from __future__ import annotations

import sqlite3

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


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(f"the database schema is version {found}, newer than this kuma-cp "
                             f"understands ({SCHEMA_VERSION}); run a newer kuma-cp")
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
