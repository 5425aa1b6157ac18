"""Versioned PostgreSQL schema: `kuma-cp migrate up` applies the steps; `kuma-cp run` only checks.

`schema_migrations` has one row per applied step. Each step runs in its own transaction together
with its row (DDL is transactional in PostgreSQL), so a failed step leaves the previous version
intact and nothing half-applied. Several instances may run `migrate up` at once: an advisory lock
makes them take turns, and the later ones find nothing left to do.
"""
from __future__ import annotations

import psycopg

from appliance.store.base import StoreError

# Each entry moves the schema from version i to i+1. Append only; never edit a shipped step.
# Names, mesh and type are "C"-collated so that ORDER BY name sorts by bytes as SQLite does
# (a database created with, e.g., en_US.UTF-8 would otherwise page in a different order).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE resources (
        type text COLLATE "C" NOT NULL,
        mesh text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        version bigint NOT NULL,
        creation_time text NOT NULL,
        modification_time text NOT NULL,
        labels jsonb NOT NULL,
        content text NOT NULL,
        PRIMARY KEY (type, mesh, name)
    );
    CREATE INDEX resources_by_name ON resources (type, name, mesh);
    CREATE INDEX resources_labels ON resources USING gin (labels jsonb_path_ops);
    CREATE TABLE changes (
        revision bigserial PRIMARY KEY,
        op text NOT NULL,
        type text NOT NULL,
        mesh text NOT NULL,
        name text NOT NULL,
        version bigint NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# Arbitrary constants naming our advisory locks (one 64-bit key space per database).
MIGRATE_LOCK = 0x6B756D61_6D696772   # "kumamigr"

_CREATE_VERSIONS = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


def schema_version(conn: psycopg.Connection) -> int:
    """The version the database is at; 0 for a database `migrate up` has never touched."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def check_schema(conn: psycopg.Connection, tolerate_newer: bool) -> int:
    """Refuse a schema this binary cannot use, with the one thing to do about it. Returns the version."""
    found = schema_version(conn)
    if found < SCHEMA_VERSION:
        raise StoreError(f"the PostgreSQL schema is at version {found}, this kuma-cp needs version "
                         f"{SCHEMA_VERSION}: run `kuma-cp migrate up` first")
    if found > SCHEMA_VERSION and not tolerate_newer:
        raise StoreError(f"the PostgreSQL schema is at version {found}, newer than this kuma-cp understands "
                         f"({SCHEMA_VERSION}): run a newer kuma-cp, or set "
                         f"store.postgres.tolerateNewerDBVersions (KUMA_STORE_POSTGRES_TOLERATE_NEWER_DB_VERSIONS) "
                         f"if every newer step is backwards compatible")
    return found


def migrate_up(conn: psycopg.Connection, tolerate_newer: bool = False) -> tuple[int, list[int]]:
    """Apply the missing steps on an autocommit connection; return (version found, steps applied).

    A database newer than this binary is an error, or nothing to do with `tolerate_newer`."""
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        conn.execute(_CREATE_VERSIONS)
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            check_schema(conn, tolerate_newer)
            return found, []
        applied = []
        for version in range(found + 1, SCHEMA_VERSION + 1):
            with conn.transaction():
                conn.execute(MIGRATIONS[version - 1])
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
        return found, applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
