"""The change listener: one thread, one dedicated connection, `LISTEN kuma_changes`.

A notification says "the change log moved"; what changed is read from the log itself, so a lost
notification or a lost connection costs nothing: after every (re)connect the store catches up from
the last revision it published. Between notifications the connection is pinged once a second, which
is what `healthy()` reports (the resources are never polled).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import psycopg

from appliance.store.base import StoreUnavailable
from appliance.store.pg_connect import PostgresSettings, reason

log = logging.getLogger("appliance.store.postgres")

CHANNEL = "kuma_changes"
APPLICATION_NAME = "kuma-cp listener"   # how the listener's connection shows in pg_stat_activity
PING_INTERVAL = 1.0   # seconds without a notification before the connection is checked
_TICK = 0.25          # how long one wait for notifications lasts: bounds how long stop() takes


class ChangeListener:
    def __init__(self, settings: PostgresSettings, wake: Callable[[int | None], None]) -> None:
        """`wake(revision)` is called on this thread after every notification, with the revision it
        announced, and after every (re)connect, with None (anything may have been written)."""
        self._settings = settings
        self._wake = wake
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-change-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_TICK + self._settings.connection_timeout + 1)

    def _run(self) -> None:
        delay = 0.0     # a lost connection is retried at once; failed retries back off
        while not self._stop.is_set():
            if delay and self._stop.wait(delay):
                return
            try:
                conn = psycopg.connect(autocommit=True, **{**self._settings.connect_kwargs(),
                                                           "application_name": APPLICATION_NAME})
            except psycopg.Error as e:
                delay = self._next_delay(delay)
                log.warning("cannot reach PostgreSQL at %s (%s); retrying in %.1fs", self._settings.address,
                            reason(e), delay)
                continue
            delay = 0.0
            try:
                with conn:
                    self._listen(conn)
            except psycopg.Error as e:
                log.warning("lost the connection to PostgreSQL at %s: %s", self._settings.address, reason(e))
            finally:
                self.connected.clear()

    def _next_delay(self, delay: float) -> float:
        s = self._settings
        return s.min_reconnect_interval if delay == 0 else min(delay * 2, s.max_reconnect_interval)

    def _listen(self, conn: psycopg.Connection) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        if not self.connected.is_set():
            log.info("listening for changes on PostgreSQL at %s", self._settings.address)
        self.connected.set()
        pending = True          # catch up with whatever was written while we were not listening
        announced: int | None = None
        last_heard = time.monotonic()
        while not self._stop.is_set():
            if pending:
                pending = not self._try_wake(announced)
            for notify in conn.notifies(timeout=_TICK, stop_after=1):
                revision = int(notify.payload) if notify.payload.isdigit() else None
                if not pending:
                    announced = revision
                elif announced is not None:
                    announced = None if revision is None else max(announced, revision)
                pending = True
            if pending:
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard >= PING_INTERVAL:
                self._ping(conn)
                last_heard = time.monotonic()

    def _ping(self, conn: psycopg.Connection) -> None:
        """A server that stops answering (hung, or its host frozen) leaves the connection open and the
        query waiting: past connectionTimeout a watchdog reports the database unreachable until the
        answer comes (or the connection breaks)."""
        watchdog = threading.Timer(self._settings.connection_timeout, self._unresponsive)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.execute("SELECT 1")
        finally:
            watchdog.cancel()
        if not self.connected.is_set():
            log.info("PostgreSQL at %s answers again", self._settings.address)
            self.connected.set()

    def _unresponsive(self) -> None:
        log.warning("PostgreSQL at %s does not answer (%ss)", self._settings.address,
                    self._settings.connection_timeout)
        self.connected.clear()

    def _try_wake(self, announced: int | None) -> bool:
        try:
            self._wake(announced)
            return True
        except StoreUnavailable as e:   # the pool may fail while this connection still works
            log.warning("catching up with the change log failed, retrying: %s", e)
        except Exception:   # a bug: say where, and keep listening
            log.exception("catching up with the change log failed; retrying")
        return False
