"""Leader election: which kuma-cp instance runs the jobs that must run once.

On PostgreSQL the leader is the instance holding a session advisory lock on a connection of its
own. PostgreSQL releases the lock the moment that connection ends (kill -9, crash, network loss),
so another instance takes it at its next attempt; the holder checks its connection every
CHECK_INTERVAL and gives leadership up as soon as a check fails. Kuma (pglock) waits a 5 s lease
instead; a lock tied to the session needs no lease and no clocks.

With SQLite or the memory store there is one instance: it is always the leader.

The election connection carries `application_name = kuma-cp-elector:<instance id>`, so the live
instances are the sessions PostgreSQL lists (`live_instances`): a killed instance leaves the list
as soon as PostgreSQL notices its socket closed.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

log = logging.getLogger("appliance.leader")

# pg_try_advisory_lock(bigint): a fixed key ("kumacp" in ASCII) that nothing else in the database uses
LOCK_KEY = 0x6B756D616370
CHECK_INTERVAL = 1.0
APPLICATION_PREFIX = "kuma-cp-elector:"

Callback = Callable[[], None]


class Leadership(Protocol):
    instance_id: str

    @property
    def is_leader(self) -> bool: ...

    def on_elected(self, callback: Callback) -> None: ...

    def on_lost(self, callback: Callback) -> None: ...

    def live_instances(self) -> set[str] | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Callbacks:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._elected: list[Callback] = []
        self._lost: list[Callback] = []
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    def on_elected(self, callback: Callback) -> None:
        self._elected.append(callback)

    def on_lost(self, callback: Callback) -> None:
        self._lost.append(callback)

    def _set(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info("%s leader (instance %s)", "became" if leader else "no longer", self.instance_id)
        for callback in self._elected if leader else self._lost:
            try:
                callback()
            except Exception:  # a failing callback must not stop the election
                log.exception("leader %s callback failed", "elected" if leader else "lost")


class AlwaysLeader(_Callbacks):
    """A single instance (SQLite, memory): elected at start, until stopped."""

    def live_instances(self) -> set[str] | None:
        return {self.instance_id}

    def start(self) -> None:
        self._set(True)

    def stop(self) -> None:
        self._set(False)


class PostgresLeaderElector(_Callbacks):
    """`connect(application_name)` opens a new autocommit psycopg connection to the store's database."""

    def __init__(self, connect: Callable[[str], Any], instance_id: str, interval: float = CHECK_INTERVAL) -> None:
        super().__init__(instance_id)
        self._connect = connect
        self.interval = interval
        self._conn: Any = None
        self._lock = threading.Lock()          # one user of the connection at a time
        self._unreachable = False              # said once per outage, not every second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        """The first attempt runs here, so that an instance that can lead has led (defaults created)
        before it reports ready; then the election goes on in its own thread."""
        self._attempt()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            self._drop()
        self._set(False)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._attempt()

    def _attempt(self) -> None:
        import psycopg   # here, not at the top: an instance on SQLite never loads it
        try:
            with self._lock:
                if self._conn is None:
                    self._conn = self._connect(self.application_name)
                if self.is_leader:
                    self._conn.execute("SELECT 1").fetchone()
                    return
                won = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            (log.debug if self._unreachable else log.warning)("leader election: %s", reason)
            self._unreachable = True
            with self._lock:
                self._drop()
            self._set(False)
            return
        self._unreachable = False
        if won:
            self._set(True)

    def _drop(self) -> None:
        """Close the connection: the lock goes with it (the caller then gives leadership up)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection may fail again; it is gone either way
                pass

    @property
    def application_name(self) -> str:
        return (APPLICATION_PREFIX + self.instance_id)[:63]   # PostgreSQL's NAMEDATALEN - 1

    def live_instances(self) -> set[str] | None:
        """The instances with an election connection open now; None when this one cannot tell."""
        import psycopg
        try:
            with self._lock:
                if self._conn is None:
                    return None
                rows = self._conn.execute(
                    "SELECT DISTINCT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE %s",
                    (APPLICATION_PREFIX + "%",)).fetchall()
        except psycopg.Error:
            return None
        return {row[0][len(APPLICATION_PREFIX):] for row in rows}


def is_live(instance_id: str, live: set[str]) -> bool:
    """`instance_id` among `live_instances()`, which are cut to PostgreSQL's 63-byte application_name."""
    return (APPLICATION_PREFIX + instance_id)[:63][len(APPLICATION_PREFIX):] in live
