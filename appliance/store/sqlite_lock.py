"""One kuma-cp per SQLite database: an exclusive lock on `<db>.lock`, held for the store's life.

A second instance on the same file would believe itself the only leader (SQLite has no leader
election), close the first one's proxy subscriptions and never hear of its writes. flock() is
released by the kernel when the holder exits, however it exits (kill -9 included), so a stale
lock file never blocks a restart. The file holds the holder's PID, for the refusal message.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from appliance.store.base import StoreError
from appliance.store.file_modes import private_file


class DatabaseLocked(StoreError):
    """Another process holds the database's lock."""


class DatabaseLock:
    def __init__(self, db_path: Path) -> None:
        """Take the lock of `db_path` or raise DatabaseLocked naming the holder's PID."""
        self.path = db_path.with_name(db_path.name + ".lock")
        try:
            private_file(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"cannot open SQLite store {db_path}: cannot open its lock file {self.path}: "
                             f"{e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseLocked(f"SQLite store {db_path} is in use by another kuma-cp (pid {holder}): one kuma-cp "
                                 f"per SQLite database; stop it first, or use PostgreSQL to run several instances")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass   # e.g. a full disk: the lock holds all the same, a refused instance says "pid unknown"
        self._fd: int | None = fd

    def release(self) -> None:
        # The file stays: removing it races with a process that has just opened it, which would then
        # lock a file nobody else sees.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
