"""`kuma-cp run --egress-enabled`: a zone egress for this machine, run and watched by kuma-cp.

kuma-cp starts `kuma-dp run --proxy-type=egress` (its own executable, called as `kuma-cp dp`) as a
child, exactly as a user would run it: a ZoneEgress definition and a zone token (scope `egress`)
written to `<workDir>/egress/`, the DP server's CA to trust. kuma-dp registers the ZoneEgress and
runs Envoy; when either dies, kuma-cp starts it again after a growing pause (1 s doubling to 30 s,
back to 1 s once it has run for a minute). On stop, SIGTERM, then SIGKILL after 10 s.

The egress outlives a crashed kuma-cp (its own session, as any proxy keeps serving while the control
plane is away); the next kuma-cp finds it by its pid file and watches it instead of starting another.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from appliance.dp.config import DpError
from appliance.dp.envoy import locate
from appliance.store import Store
from appliance.tokens import issuer

log = logging.getLogger("appliance.egress")

TOKEN_VALIDITY = 10 * 365 * 24 * 3600.0    # the token never leaves this machine; it is rewritten each start
MIN_BACKOFF, MAX_BACKOFF, HEALTHY_AFTER = 1.0, 30.0, 60.0
STOP_GRACE = 8.0
DRAIN_TIME = "3s"     # on stop: long enough for requests in flight, short enough for a prompt kuma-cp stop


class EgressError(Exception):
    """A reason the managed egress cannot start, said in one line."""


def primary_address() -> str:
    """This machine's IPv4 address on its default route (no packet is sent), else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _self_command() -> list[str]:
    """How to run this program again: the frozen executable, or this Python with the package."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "appliance"]


class ManagedEgress:
    def __init__(self, store: Store, work_dir: Path, name: str, address: str, port: int, zone: str,
                 cp_port: int, ca_pem: bytes, envoy_binary: str = "", auth_enabled: bool = True) -> None:
        self.store = store
        self.dir = work_dir / "egress"
        self.name = name or f"{socket.gethostname()}-egress"
        self.address = address or primary_address()
        self.port = port
        self.zone = zone
        self.cp_port = cp_port
        self.ca_pem = ca_pem
        self.auth_enabled = auth_enabled
        try:
            self.envoy = locate(envoy_binary)
        except DpError as e:
            raise EgressError(f"zone egress (egress.enabled): {e}; set egress.envoyBinary "
                              f"(KUMA_EGRESS_ENVOY_BINARY) to the Envoy executable") from None
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="egress", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        definition = {"type": "ZoneEgress", "name": self.name, "zone": self.zone,
                      "networking": {"address": self.address, "port": self.port}}
        (self.dir / "zoneegress.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
        (self.dir / "cp-ca.pem").write_bytes(self.ca_pem)
        token_file = self.dir / "token"
        if self.auth_enabled:
            token = issuer.issue_zone_token(self.store, self.zone, ["egress"], TOKEN_VALIDITY)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token)
        log.info("starting the zone egress %s on %s:%d (Envoy %s)", self.name, self.address, self.port, self.envoy)
        self._thread.start()

    def _command(self) -> list[str]:
        command = [*_self_command(), "dp", "run", "--proxy-type=egress",
                   f"--cp-address=https://127.0.0.1:{self.cp_port}",
                   f"--ca-cert-file={self.dir / 'cp-ca.pem'}",
                   f"--dataplane-file={self.dir / 'zoneegress.yaml'}",
                   f"--binary-path={self.envoy}", f"--work-dir={self.dir / 'run'}", f"--drain-time={DRAIN_TIME}"]
        if self.auth_enabled:
            command.append(f"--dataplane-token-file={self.dir / 'token'}")
        return command

    def _pid_file(self) -> Path:
        return self.dir / "kuma-dp.pid"

    def _survivor(self) -> int | None:
        """The egress a previous kuma-cp started, if it still runs (its command line names our directory)."""
        try:
            pid = int(self._pid_file().read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if "--proxy-type=egress" in cmdline and str(self.dir) in cmdline else None

    def _watch_survivor(self, pid: int) -> None:
        log.info("the zone egress started by a previous kuma-cp still runs (pid %d): watching it", pid)
        self._adopted = pid
        while not self._stopping.wait(1.0) and Path(f"/proc/{pid}").exists():
            pass
        self._adopted = None

    def _supervise(self) -> None:
        backoff = MIN_BACKOFF
        survivor = self._survivor()
        if survivor is not None:
            self._watch_survivor(survivor)
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                log.error("cannot start the zone egress: %s", e)
            else:
                self._pid_file().write_text(str(self._proc.pid))
                code = self._proc.wait()
                if self._stopping.is_set():
                    return
                log.warning("the zone egress exited with code %d; starting it again in %.0f s", code,
                            MIN_BACKOFF if time.monotonic() - started > HEALTHY_AFTER else backoff)
            if time.monotonic() - started > HEALTHY_AFTER:
                backoff = MIN_BACKOFF
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.restarts += 1

    def pid(self) -> int | None:
        """The egress kuma-dp's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else self._adopted

    def stop(self) -> None:
        self._stopping.set()
        adopted = self._adopted
        if adopted is not None:
            try:
                os.kill(adopted, signal.SIGTERM)
            except OSError:
                pass
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()   # the supervising thread reaps it: one waiter per process
            self._thread.join(STOP_GRACE)
            if proc.poll() is None:
                proc.kill()
        self._thread.join(timeout=5)
