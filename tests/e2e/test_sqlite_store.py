"""The SQLite work dir of a real `kuma-cp run`: private to its user, and a full disk answered with 503
and not-ready until space returns."""
from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.support import CpProcess, umask

pytestmark = pytest.mark.slow

SECRET_FILES = ("kuma.db", "kuma.db-wal", "kuma.db-shm", "kuma.db.lock", "kuma-cp.key")


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_a_new_work_dir_and_its_secrets_are_private(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with umask(0o022):
        cp = CpProcess(work.parent, env={"KUMA_GENERAL_WORK_DIR": str(work)}).start()
    try:
        assert _mode(work) == "0o700"
        assert {name: _mode(work / name) for name in SECRET_FILES} == {name: "0o600" for name in SECRET_FILES}
    finally:
        assert cp.stop() == 0


def test_plain_run_keeps_home_kuma_private(tmp_path: Path) -> None:
    """No general.workDir: the work dir is ~/.kuma."""
    home = tmp_path / "home"
    home.mkdir()
    with umask(0o022):
        cp = CpProcess(tmp_path, env={"KUMA_GENERAL_WORK_DIR": "", "HOME": str(home)}).start()
    try:
        assert _mode(home / ".kuma") == "0o700" and _mode(home / ".kuma" / "kuma.db") == "0o600"
    finally:
        assert cp.stop() == 0


def test_a_loose_work_dir_is_tightened_at_start_with_one_line_each(tmp_path: Path) -> None:
    work = tmp_path / "work"
    cp = CpProcess(work.parent, env={"KUMA_GENERAL_WORK_DIR": str(work)}).start()
    assert cp.stop() == 0
    os.chmod(work, 0o755)                 # as kuma-cp left it before
    for name in ("kuma.db", "kuma-cp.key"):
        os.chmod(work / name, 0o644)
    log_before = len(cp.read_log().splitlines())
    cp = CpProcess(work.parent, env={"KUMA_GENERAL_WORK_DIR": str(work)}).start()
    try:
        # other users lose everything; kuma-cp's group may keep the directory (the packaged /var/lib/kuma is 0750)
        assert _mode(work) == "0o750"
        assert _mode(work / "kuma.db") == "0o600" and _mode(work / "kuma-cp.key") == "0o600"
        said = [line for line in cp.read_log().splitlines()[log_before:] if "open to other local users" in line]
        assert len(said) == 3, said
        assert {line.split("WARNING appliance.store: ")[1].split()[0] for line in said} == {
            str(work), str(work / "kuma.db"), str(work / "kuma-cp.key")}
    finally:
        assert cp.stop() == 0
    # the packaged layout (/var/lib/kuma 0750, which systemd sets again at every start) is left as it is
    log_before = len(cp.read_log().splitlines())
    cp = CpProcess(work.parent, env={"KUMA_GENERAL_WORK_DIR": str(work)}).start()
    assert cp.stop() == 0
    assert _mode(work) == "0o750"
    assert [line for line in cp.read_log().splitlines()[log_before:] if "open to other local users" in line] == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB file system (tmpfs) for the work dir, unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {e}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(path: Path) -> None:
    """Write `path` until the file system has not a byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass   # ENOSPC: go on with smaller writes, to leave no page free
    finally:
        os.close(fd)


def _ready(cp: CpProcess) -> int:
    return requests.get(f"http://127.0.0.1:{cp.diag_port}/ready", timeout=5).status_code


def _mesh(cp: CpProcess, name: str) -> requests.Response:
    return requests.put(f"{cp.url}/meshes/{name}", json={"type": "Mesh", "name": name}, timeout=10)


def test_a_full_disk_answers_503_is_not_ready_and_recovers_alone(tmp_path: Path, small_disk: Path) -> None:
    logs = tmp_path / "logs"   # the log stays off the full disk
    logs.mkdir()
    cp = CpProcess(logs, env={"KUMA_GENERAL_WORK_DIR": str(small_disk)}).start()
    try:
        assert _mesh(cp, "before").status_code == 201
        _fill(small_disk / "filler")

        for name in ("during-1", "during-2"):
            r = _mesh(cp, name)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["type"] == "/std-errors" and body["title"] == "Service Unavailable"
            assert "disk is full" in body["detail"], body
        assert _ready(cp) == 503
        assert requests.get(f"{cp.url}/meshes/before", timeout=5).status_code == 200   # reads go on

        (small_disk / "filler").unlink()
        deadline = time.monotonic() + 10
        while _ready(cp) != 200:
            assert time.monotonic() < deadline, "not ready again after the space came back"
            time.sleep(0.1)
        assert _mesh(cp, "after").status_code == 201
    finally:
        assert cp.stop() == 0
    log = cp.read_log()
    assert "Traceback" not in log
    assert len([line for line in log.splitlines() if "disk is full" in line]) == 1, log

    cp = CpProcess(logs, env={"KUMA_GENERAL_WORK_DIR": str(small_disk)}).start()
    try:
        names = {m["name"] for m in requests.get(f"{cp.url}/meshes", timeout=5).json()["items"]}
        assert names == {"default", "before", "after"}
    finally:
        assert cp.stop() == 0
