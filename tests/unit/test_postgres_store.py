"""The PostgreSQL store against a real server: schema versions and `migrate up`, change propagation
between instances (LISTEN/NOTIFY + the change log), lost connections, a restarted server, the pool bound."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import pytest

from appliance.cli import kuma_cp
from appliance.config import ConfigError, load_config
from appliance.core.events import Change
from appliance.core.resources.model import Resource
from appliance.store import StoreError, StoreUnavailable
from appliance.store.pg_connect import PostgresSettings, connect
from appliance.store.pg_listener import APPLICATION_NAME
from appliance.store.pg_schema import SCHEMA_VERSION, migrate_up
from appliance.store.postgres import PostgresStore
from tests.support import PostgresServer, eventually, free_port


def _mesh(name: str) -> Resource:
    return Resource("Mesh", "", name, {})


class Recorder:
    def __init__(self, store: PostgresStore) -> None:
        self.changes: list[Change] = []
        self._lock = threading.Lock()
        store.hub.subscribe(self._on)

    def _on(self, changes: list[Change]) -> None:
        with self._lock:
            self.changes.extend(changes)

    def revisions(self) -> list[int]:
        with self._lock:
            return [c.revision for c in self.changes]


@pytest.fixture
def two_instances(postgres_server: PostgresServer):
    db = postgres_server.migrated_database()
    a, b = postgres_server.store(db), postgres_server.store(db)
    yield a, b
    a.close()
    b.close()


# --- schema versions -------------------------------------------------------------------------
def test_run_refuses_an_unmigrated_database_and_migrate_up_is_idempotent(postgres_server: PostgresServer) -> None:
    db = postgres_server.database()
    with pytest.raises(StoreError, match=r"schema is at version 0, this kuma-cp needs version \d+: "
                                         r"run `kuma-cp migrate up` first"):
        postgres_server.store(db)
    with connect(postgres_server.settings(db)) as conn:
        assert migrate_up(conn) == (0, list(range(1, SCHEMA_VERSION + 1)))
        assert migrate_up(conn) == (SCHEMA_VERSION, [])
    postgres_server.store(db).close()


def test_concurrent_migrate_up_applies_each_step_once(postgres_server: PostgresServer) -> None:
    db = postgres_server.database()
    results: list[tuple[int, list[int]]] = []

    def migrate() -> None:
        with connect(postgres_server.settings(db)) as conn:
            results.append(migrate_up(conn))

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(applied) for _, applied in results) == [0, 0, 0, SCHEMA_VERSION]
    assert postgres_server.sql("SELECT count(*) FROM schema_migrations", db) == str(SCHEMA_VERSION)


def test_a_newer_schema_is_refused_unless_tolerated(postgres_server: PostgresServer) -> None:
    db = postgres_server.migrated_database()
    postgres_server.sql(f"INSERT INTO schema_migrations (version) VALUES ({SCHEMA_VERSION + 1})", db)
    with pytest.raises(StoreError, match="newer than this kuma-cp understands .*tolerateNewerDBVersions"):
        postgres_server.store(db)
    with connect(postgres_server.settings(db)) as conn:
        with pytest.raises(StoreError, match="newer than this kuma-cp understands"):
            migrate_up(conn)
        assert migrate_up(conn, tolerate_newer=True) == (SCHEMA_VERSION + 1, [])
    store = postgres_server.store(db, tolerate_newer_db_versions=True)
    store.create(_mesh("works"))
    store.close()


def test_kuma_cp_migrate_up_and_run_say_what_happens(postgres_server: PostgresServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    db = postgres_server.database()
    for key, value in {**postgres_server.env(db), "KUMA_GENERAL_WORK_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    assert kuma_cp.main(["run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run `kuma-cp migrate up` first" in err[0]

    assert kuma_cp.main(["migrate", "up"]) == 0
    out = capsys.readouterr().out
    assert f"127.0.0.1:{postgres_server.port}/{db}: schema migrated from version 0 to {SCHEMA_VERSION}" in out
    assert kuma_cp.main(["migrate", "up"]) == 0
    assert "schema is up to date" in capsys.readouterr().out

    monkeypatch.setenv("KUMA_STORE_POSTGRES_PORT", str(free_port()))
    for command in (["run"], ["migrate", "up"]):
        assert kuma_cp.main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kuma-cp: cannot reach PostgreSQL at 127.0.0.1:"), err


@pytest.mark.parametrize("env, message", [
    ({"KUMA_STORE_POSTGRES_TLS_MODE": "verifyFull"}, "store.postgres.tls.caPath is required"),
    ({"KUMA_STORE_POSTGRES_TLS_CERT_PATH": "/c.pem"}, "tls.certPath and store.postgres.tls.keyPath go together"),
    ({"KUMA_STORE_POSTGRES_TLS_MODE": "require"}, "expected one of disable, verifyNone, verifyCa, verifyFull"),
    ({"KUMA_STORE_POSTGRES_DB_NAME": ""}, "store.postgres.dbName must not be empty"),
])
def test_bad_postgres_settings_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PostgresSettings.from_config(load_config(env={"KUMA_STORE_TYPE": "postgres", **env}))


def test_get_config_masks_the_password() -> None:
    config = load_config(env={"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_PASSWORD": "s3cret"})
    assert config["store.postgres.password"] == "s3cret"
    assert config.as_nested()["store"]["postgres"]["password"] == "*****"


class TlsFrontend:
    """PostgreSQL's TLS, in front of the test server (the pgserver wheel's PostgreSQL is built without SSL).

    It speaks the server's side of the protocol's TLS negotiation: to an SSLRequest it answers "S" and
    completes a TLS handshake with a certificate for 127.0.0.1 (to GSSENCRequest it answers "N"), then
    relays the decrypted stream to the real server. A client that does not ask for TLS is relayed as is.
    `tls_sessions` counts handshakes that completed."""

    _SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104

    def __init__(self, upstream: PostgresServer, cert_dir: Path) -> None:
        from appliance.ca.server_cert import ensure_server_cert
        cert = ensure_server_cert(cert_dir, [], [])
        self.ca_path = cert.cert_path      # self-signed: the certificate is its own CA
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert.cert_path, cert.key_path)
        self._upstream = (upstream.host, upstream.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.tls_sessions = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            while True:
                head = client.recv(8, socket.MSG_PEEK)
                code = struct.unpack("!II", head)[1] if len(head) == 8 else 0
                if code == self._GSSENC_REQUEST:
                    client.recv(8)
                    client.sendall(b"N")
                    continue
                if code == self._SSL_REQUEST:
                    client.recv(8)
                    client.sendall(b"S")
                    client = self._context.wrap_socket(client, server_side=True)
                    self.tls_sessions += 1
                break
            upstream = socket.create_connection(self._upstream)
        except (OSError, ssl.SSLError):
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture
def tls_frontend(postgres_server: PostgresServer, tmp_path: Path):
    frontend = TlsFrontend(postgres_server, tmp_path)
    yield frontend
    frontend.close()


@pytest.mark.parametrize("mode, encrypted", [("disable", False), ("verifyNone", True), ("verifyCa", True),
                                             ("verifyFull", True)])
def test_tls_modes(postgres_server: PostgresServer, tls_frontend: TlsFrontend, mode: str, encrypted: bool) -> None:
    db = postgres_server.migrated_database()
    ca = str(tls_frontend.ca_path) if mode in ("verifyCa", "verifyFull") else ""
    store = postgres_server.store(db, port=tls_frontend.port, tls_mode=mode, tls_ca_path=ca)
    try:
        store.create(_mesh("over-tls"))
        assert store.get("Mesh", "", "over-tls") is not None
        assert (tls_frontend.tls_sessions > 0) is encrypted
    finally:
        store.close()


def test_tls_refuses_a_server_the_ca_does_not_vouch_for(postgres_server: PostgresServer, tls_frontend: TlsFrontend,
                                                        tmp_path: Path) -> None:
    from appliance.ca.server_cert import ensure_server_cert
    other_ca = ensure_server_cert(tmp_path / "other", [], []).cert_path
    db = postgres_server.migrated_database()
    with pytest.raises(StoreUnavailable, match=f"cannot reach PostgreSQL at 127.0.0.1:{tls_frontend.port} "
                                               f".*certificate verify failed"):
        postgres_server.store(db, port=tls_frontend.port, tls_mode="verifyFull", tls_ca_path=str(other_ca))


# --- change propagation ----------------------------------------------------------------------
def test_every_instance_publishes_every_change_once_in_order(two_instances) -> None:
    a, b = two_instances
    seen_a, seen_b = Recorder(a), Recorder(b)

    def writer(store: PostgresStore, prefix: str) -> None:
        for i in range(40):
            store.create(_mesh(f"{prefix}-{i}"))

    threads = [threading.Thread(target=writer, args=(s, f"{n}{i}")) for n, s in (("a", a), ("b", b))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = list(range(1, 161))
    eventually(lambda: seen_a.revisions()[-1:] == [160] and seen_b.revisions()[-1:] == [160],
                "both instances published revision 160")
    assert seen_a.revisions() == everything and seen_b.revisions() == everything
    assert {c.name for c in seen_b.changes} == {f"{n}{i}-{k}" for n in "ab" for i in range(2) for k in range(40)}
    assert b.get("Mesh", "", "a0-39").version == 1


def test_a_killed_listener_connection_catches_up_without_loss(two_instances, postgres_server: PostgresServer) -> None:
    a, b = two_instances
    seen_b = Recorder(b)
    eventually(lambda: a.healthy() and b.healthy(), "both listening")
    db = b.settings.db_name
    killed = postgres_server.sql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 f"WHERE datname = '{db}' AND application_name = '{APPLICATION_NAME}'")
    assert int(killed) == 2         # both instances' listeners
    for i in range(30):
        a.create(_mesh(f"m{i}"))    # some of these commit while the listeners reconnect
    eventually(lambda: len(seen_b.revisions()) == 30, "b published all 30 changes")
    assert seen_b.revisions() == list(range(1, 31))
    eventually(b.healthy, "b listening again")


def test_a_restarted_server_is_survived_without_a_restart(postgres_server: PostgresServer) -> None:
    db = postgres_server.migrated_database()
    a, b = postgres_server.store(db, connection_timeout=1), postgres_server.store(db)
    try:
        _restart_scenario(postgres_server, a, b)
    finally:
        a.close()
        b.close()


def _restart_scenario(postgres_server: PostgresServer, a: PostgresStore, b: PostgresStore) -> None:
    seen_b = Recorder(b)
    a.create(_mesh("before"))
    eventually(lambda: len(seen_b.changes) == 1, "b saw the first write")
    postgres_server.stop()
    try:
        eventually(lambda: not a.healthy() and not b.healthy(), "both report the database unreachable")
        # Requests keep failing for a while: long enough for a connection backoff to grow past 5 s.
        down = time.monotonic()
        while time.monotonic() - down < 8:
            with pytest.raises(StoreUnavailable, match=f"cannot reach PostgreSQL at 127.0.0.1:{postgres_server.port}"):
                a.create(_mesh("during"))
    finally:
        postgres_server.start()
    a.create(_mesh("after"))    # at once: no backoff left over from the outage delays the first write
    eventually(lambda: a.healthy() and b.healthy(), "both reconnected")
    eventually(lambda: len(seen_b.changes) == 2, "b saw the write made after the restart")
    assert [c.name for c in seen_b.changes] == ["before", "after"]
    assert b.get("Mesh", "", "during") is None and b.get("Mesh", "", "after") is not None


def test_a_database_that_stops_answering_is_reported(postgres_server: PostgresServer) -> None:
    """The server process behind the listener is frozen (SIGSTOP): the connection stays open, the ping
    gets no answer. The store reports itself unhealthy, and healthy again once the server answers."""
    store = postgres_server.store(connection_timeout=1)
    try:
        eventually(store.healthy, "listening")
        pid = int(postgres_server.sql(f"SELECT pid FROM pg_stat_activity WHERE datname = "
                                      f"'{store.settings.db_name}' AND application_name = '{APPLICATION_NAME}'"))
        os.kill(pid, signal.SIGSTOP)
        try:
            eventually(lambda: not store.healthy(), "reported unhealthy")
            store.create(_mesh("meanwhile"))     # the pool's connections are served by other processes
        finally:
            os.kill(pid, signal.SIGCONT)
        eventually(store.healthy, "healthy again")
    finally:
        store.close()


def test_the_pool_stays_within_max_open_connections(postgres_server: PostgresServer) -> None:
    store = postgres_server.store(max_open_connections=3)
    errors: list[Exception] = []

    def worker(i: int) -> None:
        try:
            for k in range(20):
                store.create(_mesh(f"w{i}-{k}"))
                store.count("Mesh")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        n = int(postgres_server.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                    f"'{store.settings.db_name}' AND application_name = 'kuma-cp'"))
        peak = max(peak, n)
    for t in threads:
        t.join()
    assert errors == [] and store.count("Mesh") == 320
    assert 1 <= peak <= 3
    store.close()
