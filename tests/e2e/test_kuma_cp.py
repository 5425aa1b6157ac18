"""`kuma-cp` as an operator runs it: start-up, readiness, bad configuration, port conflicts."""
from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from appliance.core.resources.model import Resource
from appliance.store import WriteOp
from appliance.store.sqlite import SQLiteStore
from tests.support import ROOT, CpProcess, cp_command, free_port, kuma_reference

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cp_command(*args), capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_version() -> None:
    out = _run(["version"])
    assert out.returncode == 0 and "kuma-cp" in out.stdout and "2.14" in out.stdout


def test_run_serves_api_and_diagnostics(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path).start()
    try:
        assert requests.get(cp.url + "/").json()["product"] == "Kuma"
        assert requests.get(f"http://127.0.0.1:{cp.diag_port}/healthy").status_code == 200
        assert (tmp_path / "kuma.db").exists()
    finally:
        assert cp.stop() == 0


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    """SIGINT (ctrl-C in a terminal) as SIGTERM: every part stopped in reverse order, exit 0, ports free."""
    cp = CpProcess(tmp_path).start()
    cp.proc.send_signal(signal.SIGINT)
    assert cp.proc.wait(timeout=15) == 0
    log = cp.read_log()
    assert "signal SIGINT received, stopping" in log and log.rstrip().endswith("stopped"), log
    assert "Traceback" not in log
    for port in (cp.api_port, cp.diag_port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))   # free again: nothing left listening


def test_skip_mesh_creation(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path, env={"KUMA_DEFAULTS_SKIP_MESH_CREATION": "true"}).start()
    try:
        assert requests.get(cp.url + "/meshes").json()["total"] == 0
    finally:
        cp.stop()


@pytest.mark.parametrize("env, message", [
    ({"KUMA_API_SERVER_HTTP_PORT": "eighty"}, "apiServer.http.port (env KUMA_API_SERVER_HTTP_PORT): 'eighty'"),
    ({"KUMA_STORE_TYPE": "etcd"}, "store.type (env KUMA_STORE_TYPE): 'etcd', expected one of sqlite, memory"),
])
def test_bad_env_stops_startup_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    out = _run(["run"], env={"KUMA_GENERAL_WORK_DIR": str(tmp_path), **env})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kuma-cp: invalid value for {message}"), out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_file_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "kuma-cp.conf.yaml"
    f.write_text("apiServer:\n  http:\n    prot: 5681\n")
    out = _run(["run", "-c", str(f)], env={"KUMA_GENERAL_WORK_DIR": str(tmp_path)})
    assert out.returncode == 1
    assert out.stderr.strip() == (f"kuma-cp: {f}:3: unknown setting 'apiServer.http.prot'; "
                                  "did you mean 'apiServer.http.port'?")


def test_kumas_own_defaults_file_starts_the_control_plane(tmp_path: Path) -> None:
    defaults = kuma_reference("kuma-cp.defaults.yaml")
    cp = CpProcess(tmp_path, args=("-c", str(defaults))).start()
    try:
        assert requests.get(cp.url + "/").json()["product"] == "Kuma"
        config = requests.get(cp.url + "/config").json()
        assert config["mode"] == "zone" and config["store"]["type"] == "memory"   # the file's values
        assert config["notApplied"] == []
        assert "appliance.config" not in cp.read_log()   # not one warning
    finally:
        assert cp.stop() == 0


def test_kuma_settings_we_do_not_apply_are_logged_one_line_each(tmp_path: Path) -> None:
    f = tmp_path / "kuma-cp.conf.yaml"
    f.write_text("apiServer:\n  auth:\n    clientCertsDir: /etc/kuma/certs\nxdsServer:\n  nackBackoff: 5s\n")
    cp = CpProcess(tmp_path, args=("-c", str(f)),
                   env={"KUMA_METRICS_DATAPLANE_IDLE_TIMEOUT": "1m", "KUMA_API_SERVER_HTTP_PROT": "1"}).start()
    try:
        warnings = [line.split("appliance.config: ", 1)[1] for line in cp.read_log().splitlines()
                    if " WARNING appliance.config: " in line]
        assert warnings == [
            f"setting apiServer.auth.clientCertsDir ({f}:3) is set to \"/etc/kuma/certs\" but kuma-appliance does not "
            "apply it: it has no effect (Kuma 2.14.3 setting; listed by GET /config under notApplied)",
            "setting metrics.dataplane.idleTimeout (env KUMA_METRICS_DATAPLANE_IDLE_TIMEOUT) is set to \"1m\" but "
            "kuma-appliance does not apply it: it has no effect (Kuma 2.14.3 setting; listed by GET /config "
            "under notApplied)",
            "environment variable KUMA_API_SERVER_HTTP_PROT is not a kuma-cp setting and is ignored; "
            "did you mean KUMA_API_SERVER_HTTP_PORT?",
        ]
        listed = requests.get(cp.url + "/config").json()["notApplied"]
        assert [item["setting"] for item in listed] == ["apiServer.auth.clientCertsDir",
                                                   "metrics.dataplane.idleTimeout"]
    finally:
        assert cp.stop() == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = CpProcess(tmp_path / "a")
    (tmp_path / "a").mkdir()
    first.start()
    try:
        env = {"KUMA_GENERAL_WORK_DIR": str(tmp_path / "b"), "KUMA_API_SERVER_HTTP_PORT": str(first.api_port),
               "KUMA_DIAGNOSTICS_SERVER_PORT": str(free_port()), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port())}
        out = _run(["run"], env=env)
        assert out.returncode == 1
        assert f"cannot listen on 0.0.0.0:{first.api_port} for the API server (apiServer.http.port)" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        first.stop()


def test_corrupt_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kuma.db").write_bytes(b"garbage" * 1000)
    out = _run(["run"], env={"KUMA_GENERAL_WORK_DIR": str(tmp_path)})
    assert out.returncode == 1 and "cannot open SQLite store" in out.stderr and "Traceback" not in out.stderr


def _one_line_refusal(out: subprocess.CompletedProcess) -> str:
    """The line a refused start says (log lines aside, e.g. a mode tightened on the way)."""
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("kuma-cp: ")]
    assert len(said) == 1, out.stderr
    return said[0]


def _damage(db: Path, how: str) -> None:
    store = SQLiteStore(db)
    store.write([WriteOp("create", Resource("Mesh", "", f"mesh-{i:04d}", {"note": "x" * 1000})) for i in range(300)])
    store.close()
    size = db.stat().st_size
    if how == "middle":
        with open(db, "r+b") as f:
            f.seek(size // 2)
            f.write(random.Random(8).randbytes(8192))
    elif how == "truncated":
        os.truncate(db, size // 2)
    else:
        db.unlink()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.commit()
        conn.close()


@pytest.mark.parametrize("how, reason", [
    ("middle", "the database is damaged (quick_check: "),
    ("truncated", "database disk image is malformed"),
    ("foreign", "the database holds tables kuma-cp did not create (notes): it is not a kuma-cp database"),
])
def test_a_damaged_or_foreign_database_is_refused_with_one_line(tmp_path: Path, how: str, reason: str) -> None:
    _damage(tmp_path / "kuma.db", how)
    out = _run(["run"], env={"KUMA_GENERAL_WORK_DIR": str(tmp_path), "KUMA_API_SERVER_HTTP_PORT": str(free_port()),
                             "KUMA_DIAGNOSTICS_SERVER_PORT": str(free_port()), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()), "KUMA_DP_SERVER_PORT": str(free_port())})
    line = _one_line_refusal(out)
    assert line.startswith(f"kuma-cp: cannot open SQLite store {tmp_path / 'kuma.db'}: ") and reason in line, line


def test_a_second_instance_on_the_same_database_is_refused_before_binding(tmp_path: Path) -> None:
    first = CpProcess(tmp_path).start()
    try:
        # its own ports: refused all the same
        out = _run(["run"], env={"KUMA_GENERAL_WORK_DIR": str(tmp_path), "KUMA_API_SERVER_HTTP_PORT": str(free_port()),
                                 "KUMA_DIAGNOSTICS_SERVER_PORT": str(free_port()), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()),
                                 "KUMA_DP_SERVER_PORT": str(free_port())})
        line = _one_line_refusal(out)
        assert f"SQLite store {tmp_path / 'kuma.db'} is in use by another kuma-cp (pid " in line, line
        pid = int(line.split("(pid ")[1].split(")")[0])
        assert os.getpgid(pid) == first.proc.pid   # the first one (or, one-file binary, its Python child)
        # the first one's ports: the lock is what stops it, before it tries to listen
        same = _one_line_refusal(_run(["run"], env=first.env))
        assert "is in use by another kuma-cp" in same and "cannot listen" not in same, same
        assert requests.put(first.url + "/meshes/still-one", json={"type": "Mesh", "name": "still-one"}).status_code == 201
    finally:
        assert first.stop() == 0


def test_egress_without_envoy_is_a_clear_error(tmp_path: Path) -> None:
    env = {"KUMA_GENERAL_WORK_DIR": str(tmp_path), "KUMA_API_SERVER_HTTP_PORT": str(free_port()),
           "KUMA_DIAGNOSTICS_SERVER_PORT": str(free_port()), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()), "KUMA_DP_SERVER_PORT": str(free_port()),
           "KUMA_EGRESS_ENVOY_BINARY": str(tmp_path / "no-envoy-here")}
    out = _run(["run", "--egress-enabled"], env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "zone egress" in line and "no-envoy-here" in line and "KUMA_EGRESS_ENVOY_BINARY" in line, out.stderr
