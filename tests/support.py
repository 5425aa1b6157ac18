"""Test helpers: a live API on a temporary SQLite file, served over real HTTP on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from appliance.api.app import create_app
from appliance.config import load_config
from appliance.core.events import ChangeHub
from appliance.core.manager import ResourceManager
from appliance.runtime.bootstrap import ensure_defaults
from appliance.runtime.http import HttpServer
from appliance.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KUMA_REFERENCE_DIR", ROOT.parent / "shared" / "kuma-2.14"))


class LiveApi:
    def __init__(self, manager: ResourceManager, url: str) -> None:
        self.manager = manager
        self.store = manager.store
        self.url = url
        self.http = requests.Session()

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url + path, **kw)

    def put(self, path: str, body=None, **kw) -> requests.Response:
        return self.http.put(self.url + path, json=body, **kw) if body is not None else self.http.put(self.url + path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.http.delete(self.url + path, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return self.http.post(self.url + path, json=body, **kw)


@contextmanager
def live_api(tmp_path: Path, env: dict[str, str] | None = None, defaults: bool = False) -> Iterator[LiveApi]:
    """`defaults`: also create what `kuma-cp run` creates on first start (default Mesh, admin token)."""
    config = load_config(env={"KUMA_GENERAL_WORK_DIR": str(tmp_path), **(env or {})})
    store = SQLiteStore(tmp_path / "kuma.db", ChangeHub())
    manager = ResourceManager(store)
    if defaults:
        ensure_defaults(manager, skip_mesh_creation=False, bootstrap_admin_token=True)
    app = create_app(config, manager, "test-0000")
    server = HttpServer(app, "127.0.0.1", 0, threads=4).start()
    try:
        yield LiveApi(manager, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        store.close()


def cp_command(*args: str) -> list[str]:
    """The command line of `kuma-cp ARGS` (`"dp", ...` for kuma-dp, `"ctl", ...` for kumactl): the
    frozen file when KUMA_TEST_BINARY is set (`KUMA_TEST_BINARY=dist/kuma-cp make test-e2e`),
    else this venv's `python -m appliance`."""
    binary = os.environ.get("KUMA_TEST_BINARY")
    if binary:
        return [str((ROOT / binary).resolve()), *args]
    return [sys.executable, "-m", "appliance", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpProcess:
    """A real `kuma-cp run` in its own process, with its own ports and work dir."""

    def __init__(self, work_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.work_dir = work_dir
        self.args = args          # extra `kuma-cp run` flags
        self.api_port = free_port()
        self.diag_port = free_port()
        self.env = {**os.environ, "KUMA_GENERAL_WORK_DIR": str(work_dir),
                    "KUMA_API_SERVER_HTTP_PORT": str(self.api_port),
                    "KUMA_DIAGNOSTICS_SERVER_PORT": str(self.diag_port),
                    "KUMA_DP_SERVER_PORT": str(free_port()), **(env or {})}
        # The frozen file unpacks itself into TMPDIR at every start; what a kill -9 leaves behind
        # stays beside the test's work dir instead of piling up in /tmp.
        self.unpack_dir = work_dir.parent / f"{work_dir.name}-unpack"
        self.env.setdefault("TMPDIR", str(self.unpack_dir))
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 20) -> "CpProcess":
        self.log = open(self.work_dir / "kuma-cp.log", "ab")
        self.unpack_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: kill() must reach the frozen file's Python child too.
        self.proc = subprocess.Popen(cp_command("run", *self.args), env=self.env, start_new_session=True,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kuma-cp exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.diag_port}/ready", timeout=0.5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"kuma-cp not ready in {timeout}s: {self.read_log()}")

    def read_log(self) -> str:
        return (self.work_dir / "kuma-cp.log").read_text(errors="replace")

    def kill(self) -> None:
        """kill -9 of the whole process group: the one-file binary runs as two processes (the
        unpacker and Python), and a SIGKILL of the unpacker alone leaves Python serving."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            return self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else 0
