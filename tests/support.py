"""Test helpers: a live API on a temporary store (SQLite or a real PostgreSQL) over real HTTP on 127.0.0.1."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, TypeVar

import pytest
import requests
from requests.adapters import HTTPAdapter

from appliance.api.app import create_app
from appliance.config import load_config
from appliance.core.events import ChangeHub
from appliance.core.manager import ResourceManager
from appliance.runtime.defaults import ensure_defaults
from appliance.runtime.http import HttpServer
from appliance.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from appliance.store.pg_connect import PostgresSettings
    from appliance.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KUMA_REFERENCE_DIR", ROOT.parent / "shared" / "kuma-2.14"))
REFERENCE_MISSING = (f"{SHARED} not found: Kuma's reference data (REST fixtures, OpenAPI, Envoy goldens) lives "
                     "beside the checkout in CI (../shared/kuma-2.14); set KUMA_REFERENCE_DIR to use another copy")


def kuma_reference(*parts: str) -> Path:
    """`SHARED/parts...`, or skip the test (or the module, when called at import) if Kuma's reference data is
    absent, as in a fresh clone. Under KUMA_REQUIRE_REFERENCE=1 (CI sets it) a missing copy fails instead:
    there a skip would hide that these tests never ran."""
    if not SHARED.is_dir():
        if os.environ.get("KUMA_REQUIRE_REFERENCE") == "1":
            pytest.fail(REFERENCE_MISSING, pytrace=False)
        pytest.skip(REFERENCE_MISSING, allow_module_level=True)
    return SHARED.joinpath(*parts)


def system_tool(reason: str, *names: str) -> list[str]:
    """The paths of the Debian-packaged programs a test drives (a browser, Prometheus), or skip the test (or
    the module) with `reason` where one is missing, as on a machine where `make test-deps` was not run. Under
    KUMA_REQUIRE_SYSTEM_TOOLS=1 (`.ci/run` sets it after `make test-deps`) a missing one fails instead."""
    paths = [shutil.which(name) for name in names]
    if not all(paths):
        system_missing(reason)
    return [str(p) for p in paths]


def system_missing(reason: str) -> NoReturn:
    """Skip the test (or the module) because the machine lacks something it needs (a program, root, network
    namespaces); under KUMA_REQUIRE_SYSTEM_TOOLS=1 (CI, after `make test-deps`) fail instead."""
    if os.environ.get("KUMA_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


T = TypeVar("T")


def eventually(check: Callable[[], T], what: str | Callable[[], str] = "", timeout: float = 20.0,
               every: float = 0.1) -> T:
    """Poll `check` until it returns something true, and return that: for what happens in the background.
    A check that raises OSError (a refused connection, any `requests` error) has not succeeded yet; any other
    exception (an AssertionError saying a process died) ends the wait. `what` (or a function that says it when
    the time is up, e.g. with a log) names the condition in the failure. Not a speed assertion: the bound is
    generous."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        try:
            if result := check():
                return result
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout}s: {said or 'condition not met'}"
                                 + (f" (last error: {last})" if last else ""))
        time.sleep(every)


class _FromAddress(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.source, 0), **kwargs)


class LiveApi:
    def __init__(self, manager: ResourceManager, url: str, source: str | None = None) -> None:
        """`source`: the address requests come from (127.0.0.2: a remote client, not admin by localhost)."""
        self.manager = manager
        self.store = manager.store
        self.url = url
        self.http = requests.Session()
        if source:
            self.http.mount("http://", _FromAddress(source))

    def remote(self, source: str = "127.0.0.2") -> "LiveApi":
        """The same API seen from another address: not the local admin, an anonymous user unless it sends a token."""
        return LiveApi(self.manager, self.url, source)

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url + path, **kw)

    def put(self, path: str, body=None, **kw) -> requests.Response:
        return self.http.put(self.url + path, json=body, **kw) if body is not None else self.http.put(self.url + path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.http.delete(self.url + path, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return self.http.post(self.url + path, json=body, **kw)


@contextmanager
def live_api(tmp_path: Path, env: dict[str, str] | None = None, defaults: bool = False,
             postgres: "PostgresServer | None" = None, dp_server: bool = False) -> Iterator[LiveApi]:
    """`defaults`: also create what `kuma-cp run` creates on first start (default Mesh, admin token).
    `postgres`: serve from a new database on that server instead of a SQLite file.
    `dp_server`: also run the DP server (xDS), so the inspect views (`_config`) answer."""
    config = load_config(env={"KUMA_GENERAL_WORK_DIR": str(tmp_path), **(env or {})})
    store = postgres.store() if postgres else SQLiteStore(tmp_path / "kuma.db", ChangeHub())
    manager = ResourceManager(store)
    if defaults:
        ensure_defaults(manager, skip_mesh_creation=False, bootstrap_admin_token=True)
    dataplanes = None
    if dp_server:
        from appliance.ca.server_cert import ensure_server_cert
        from appliance.runtime.dataplanes import DataplaneServer
        from appliance.xds.generate import generate_sidecar
        dataplanes = DataplaneServer(manager, ensure_server_cert(tmp_path, ["localhost"], ["127.0.0.1"]),
                                     "127.0.0.1", free_port(), "test-0000", generate_sidecar, work_dir=tmp_path)
        dataplanes.start()
    app = create_app(config, manager, "test-0000", dataplanes)
    server = HttpServer(app, "127.0.0.1", 0, threads=4).start()
    try:
        yield LiveApi(manager, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        if dataplanes:
            dataplanes.stop()
        store.close()


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block (and the processes it starts) under `mask`, whatever the test runner's."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def cp_command(*args: str) -> list[str]:
    """The command line of `kuma-cp ARGS` (`"dp", ...` for kuma-dp, `"ctl", ...` for kumactl): the
    frozen file when KUMA_TEST_BINARY is set (`KUMA_TEST_BINARY=dist/kuma-cp make test-e2e`),
    else this venv's `python -m appliance`."""
    binary = os.environ.get("KUMA_TEST_BINARY")
    if binary:
        return [str((ROOT / binary).resolve()), *args]
    return [sys.executable, "-m", "appliance", *args]


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_BELOW = _ephemeral_floor()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on every interface, below the kernel's ephemeral range: a port that bind(0) picks
    may meanwhile become the local end of an outgoing connection (an Envoy's, a client's) before the
    process it is meant for listens on it."""
    for _ in range(1000):
        port = random.randrange(max(1024, _PORTS_BELOW - 12000), _PORTS_BELOW)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class CpProcess:
    """A real `kuma-cp run` in its own process, with its own ports and work dir."""

    def __init__(self, work_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.work_dir = work_dir
        self.args = args          # extra `kuma-cp run` flags
        self.api_port = free_port()
        self.diag_port = free_port()
        self.https_port = free_port()
        self.env = {**os.environ, "KUMA_GENERAL_WORK_DIR": str(work_dir),
                    "KUMA_API_SERVER_HTTP_PORT": str(self.api_port),
                    "KUMA_DIAGNOSTICS_SERVER_PORT": str(self.diag_port), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()),
                    "KUMA_DP_SERVER_PORT": str(free_port()),
                    # the HTTPS API is on by default, as in Kuma: on a port of its own here too
                    "KUMA_API_SERVER_HTTPS_ENABLED": "true", "KUMA_API_SERVER_HTTPS_PORT": str(self.https_port),
                    **(env or {})}
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
        self.kill()   # a test that fails here must not leave a control plane running behind it
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
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                tail = "\n".join(self.read_log().splitlines()[-15:])
                raise RuntimeError(f"kuma-cp did not stop within 10 s of SIGTERM; its log ends:\n{tail}") from None
        return self.proc.returncode if self.proc else 0


def dataplane_token(api_url: str, name: str, directory: Path, mesh: str = "default",
                    tags: dict[str, list[str]] | None = None) -> Path:
    """A dataplane token from `POST /tokens/dataplane`, in `<directory>/<name>.token` (for --dataplane-token-file);
    `name` "" with `tags`: a token for any proxy with those tags."""
    r = requests.post(f"{api_url}/tokens/dataplane", json={"name": name, "mesh": mesh, **({"tags": tags} if tags else {})})
    assert r.status_code == 200, r.text
    path = directory / f"{name or 'tags'}.token"
    path.write_text(r.text)
    return path


def terminate_all(procs: list[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM to every process at once (kuma-dp drains its Envoy meanwhile), then wait; kill what hangs."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def numbered_dataplane(i: int) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": f"dp-{i}",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 10000 + i, "tags": {"kuma.io/service": f"s{i}"}}]}}


def kill_mid_write_stream(cp: CpProcess, acknowledged_before_kill: int) -> list[int]:
    """Four writers PUT dataplanes dp-0..dp-999; kill -9 the control plane once `acknowledged_before_kill`
    are acknowledged. Returns the numbers of the writes that were acknowledged (201)."""
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(start: int) -> None:
        http = requests.Session()
        for i in range(start, 1000, 4):
            if stop.is_set():
                return
            try:
                r = http.put(f"{cp.url}/meshes/default/dataplanes/dp-{i}", json=numbered_dataplane(i), timeout=5)
            except requests.RequestException:
                return  # the process is gone: this write was never acknowledged
            if r.status_code == 201:
                with lock:
                    acknowledged.append(i)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < acknowledged_before_kill:
        time.sleep(0.01)
    cp.kill()  # SIGKILL while the writers are still going
    stop.set()
    for t in threads:
        t.join()
    assert acknowledged_before_kill <= len(acknowledged) < 1000, "the kill must land mid-stream"
    return acknowledged


def _others_can_enter(path: Path) -> bool:
    """Whether a user that is neither owner nor group can reach `path` (every directory on the way is o+x)."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _dir_others_can_enter() -> Path:
    temp = Path(tempfile.gettempdir()).resolve()
    return temp if _others_can_enter(temp) else Path("/tmp")


def _postgres_bin(readable_by_others: bool) -> Path:
    """The `bin` directory of the pgserver wheel's PostgreSQL. `readable_by_others` (root runs the server as
    another user): a copy under a directory everyone can enter, made once per pgserver version and shared by
    every checkout and session, because a venv inside a 0700 directory (`mktemp -d`, anything under /root)
    is out of that user's reach. The copy keeps the wheel's layout (`pgserver/pginstall`, `pgserver.libs`):
    initdb and psql find libpq through `$ORIGIN/../../../pgserver.libs`."""
    with warnings.catch_warnings():  # pgserver looks up XDG_RUNTIME_DIR at import, and warns without it
        warnings.simplefilter("ignore")
        import pgserver  # a dev dependency: imported only by the tests that start a server
    package = Path(pgserver.__file__).resolve().parent
    installed = package / "pginstall" / "bin"
    if not readable_by_others or _others_can_enter(installed):
        return installed
    from importlib.metadata import version
    cache = _dir_others_can_enter() / f"kuma-test-pgserver-{version('pgserver')}"
    if not cache.is_dir():
        # Built aside and renamed into place: sessions running at once never see half a copy.
        partial = Path(tempfile.mkdtemp(prefix=f"{cache.name}-", dir=cache.parent))
        shutil.copytree(package / "pginstall", partial / "pgserver" / "pginstall")
        shutil.copytree(package.parent / "pgserver.libs", partial / "pgserver.libs")
        for directory, _, _ in os.walk(partial):
            os.chmod(directory, 0o755)
        try:
            partial.rename(cache)
        except OSError:  # another session's copy got there first
            shutil.rmtree(partial, ignore_errors=True)
    return cache / "pgserver" / "pginstall" / "bin"


class PostgresServer:
    """A real PostgreSQL 16 (the `pgserver` wheel's binaries) listening on 127.0.0.1:<free port>, with
    a superuser `kuma` / password `kuma` (Kuma's default credentials) and password auth over TCP.

    `stop()` and `start()` make an outage on the same port; `database()` gives each test module its
    own empty database. pgserver's own `get_server()` listens on a Unix socket only; a control plane
    is configured with host and port, so this runs its `initdb` and `pg_ctl` itself."""

    USER = PASSWORD = "kuma"

    def __init__(self) -> None:
        # PostgreSQL refuses to run as root; pgserver brings (and creates) an unprivileged user for that.
        self._run_as = None
        self._bin = _postgres_bin(readable_by_others=os.geteuid() == 0)
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists
            self._run_as = ensure_user_exists("pgserver")
        # Not under pytest's tmp_path (nor a 0700 TMPDIR): the server's user must reach it (and its socket).
        self.base = Path(tempfile.mkdtemp(prefix="kuma-pg-", dir=_dir_others_can_enter()))
        if self._run_as is not None:
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
        self.data = self.base / "data"
        self.host = "127.0.0.1"
        self.port = free_port()
        pwfile = self.base / "pw"
        pwfile.write_text(self.PASSWORD + "\n")
        if self._run_as is not None:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run("initdb", ["-D", str(self.data), "-U", self.USER, f"--pwfile={pwfile}", "--auth-local=trust",
                             "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"], as_server=True)
        self.start()

    def _run(self, program: str, args: list[str], as_server: bool = False, timeout: float = 60,
             env: dict[str, str] | None = None) -> str:
        """Run one PostgreSQL program; `as_server`: as the server's user. Its output goes through a file, not
        a pipe: `pg_ctl start` leaves the server holding its stdout, and a pipe would never reach EOF."""
        user = {"user": self._run_as.pw_name} if as_server and self._run_as is not None else {}
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run([str(self._bin / program), *args], stdout=out, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout, env=env, cwd=self.base, **user)
            out.seek(0)
            output = out.read()
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited with {done.returncode}: {output}")
        return output

    def start(self) -> None:
        # fsync off: a test server's data may be lost with the machine; it makes CREATE DATABASE cheap.
        options = f"-h {self.host} -p {self.port} -k {self.base} -c fsync=off -c max_connections=400"
        self._run("pg_ctl", ["-D", str(self.data), "-w", "-l", str(self.base / "postgres.log"), "-o", options,
                             "start"], as_server=True, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client at once (what a crash looks like to them); `immediate` too,
        without a checkpoint."""
        self._run("pg_ctl", ["-D", str(self.data), "-w", "-m", mode, "stop"], as_server=True, timeout=30)

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement as the superuser through psql; return its unaligned output, stripped."""
        return self._run("psql", ["-X", "-A", "-t", "-h", self.host, "-p", str(self.port), "-U", self.USER,
                                  "-d", dbname, "-c", statement], env={**os.environ, "PGPASSWORD": self.PASSWORD}).strip()

    def database(self, prefix: str = "kuma") -> str:
        """Create an empty database and return its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def env(self, dbname: str) -> dict[str, str]:
        """The KUMA_* variables that point a control plane at `dbname` on this server."""
        return {"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_HOST": self.host,
                "KUMA_STORE_POSTGRES_PORT": str(self.port), "KUMA_STORE_POSTGRES_USER": self.USER,
                "KUMA_STORE_POSTGRES_PASSWORD": self.PASSWORD, "KUMA_STORE_POSTGRES_DB_NAME": dbname}

    def settings(self, dbname: str, **overrides: Any) -> "PostgresSettings":
        """Settings for `dbname` that notice an outage and its end within a second or two (outage tests
        need no 10 s reconnect waits, nor 5 s connection timeouts)."""
        from appliance.store.pg_connect import PostgresSettings
        return PostgresSettings(**{"host": self.host, "port": self.port, "user": self.USER,
                                   "password": self.PASSWORD, "db_name": dbname, "connection_timeout": 2,
                                   "min_reconnect_interval": 0.1, "max_reconnect_interval": 1.0, **overrides})

    def migrated_database(self) -> str:
        """A new database with the schema `kuma-cp migrate up` creates."""
        from appliance.store.pg_connect import connect
        from appliance.store.pg_schema import migrate_up
        name = self.database()
        with connect(self.settings(name)) as conn:
            migrate_up(conn)
        return name

    def store(self, dbname: str | None = None, **overrides: Any) -> "PostgresStore":
        """A PostgresStore on `dbname` (default: a new migrated database)."""
        from appliance.store.postgres import PostgresStore
        return PostgresStore(self.settings(dbname or self.migrated_database(), **overrides), ChangeHub())

    def close(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # already stopped by a test
            pass
        shutil.rmtree(self.base, ignore_errors=True)
