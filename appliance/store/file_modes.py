"""Files that hold secrets stay private to kuma-cp's user, whatever the umask.

The SQLite database holds the admin token and every signing key; the work dir holds the DP
server's key and the issued workload keys. New files are created 0600 and new directories 0700;
files found looser at start are tightened, with one log line each.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("appliance.store")

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
# An existing work dir may stay open to kuma-cp's group, never to other users: the packaged
# /var/lib/kuma is 0750 (owner and group kuma), set again by systemd's StateDirectoryMode at every
# start. The files in it are 0600 either way.
EXISTING_DIR_LIMIT = 0o750


def tightened(mode: int, limit: int) -> int | None:
    """The permission bits of `mode` cut to `limit`; None when `mode` is already within it."""
    perms = stat.S_IMODE(mode)
    return None if perms & ~limit == 0 else perms & limit


def restrict(path: Path, limit: int) -> bool:
    """Cut the permissions of `path` (when it exists; a symlink is left alone) to `limit`; say so
    in one log line. Returns whether it changed anything."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    new = tightened(st.st_mode, limit)
    if new is None:
        return False
    os.chmod(path, new)
    log.warning("%s was open to other local users (mode %04o); tightened to %04o", path,
                stat.S_IMODE(st.st_mode), new)
    return True


def private_dir(path: Path) -> None:
    """Create `path` 0700 (missing parents as the umask says), or cut an existing one to
    EXISTING_DIR_LIMIT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        restrict(path, EXISTING_DIR_LIMIT)
        return
    os.chmod(path, PRIVATE_DIR)   # mkdir's mode is cut by the umask, which may take more away


def private_file(path: Path) -> None:
    """Create an empty `path` 0600 when absent, or cut an existing one to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        restrict(path, PRIVATE_FILE)
        return
    os.chmod(path, PRIVATE_FILE)
