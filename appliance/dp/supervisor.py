"""Run Envoy as our child and stop it the way kuma-dp 2.14 does (app/kuma-dp/cmd/run.go,
pkg/core/alias.go SetupSignalHandler, pkg/dataplane/command):

- Envoy runs in its own process group, so a Ctrl-C in the terminal reaches kuma-dp only and the
  shutdown below is not cut short; it dies with us (PR_SET_PDEATHSIG) if kuma-dp is killed.
- First SIGTERM/SIGINT: tell Envoy to fail its health checks (admin POST /healthcheck/fail), wait
  --drain-time for connections to drain, then SIGTERM Envoy. Second signal: SIGTERM Envoy now.
  Third: kill Envoy and exit 1. An Envoy that ignores SIGTERM is killed after 5 s (Go's WaitDelay).
- SIGUSR2: drain inbound listeners for good (admin POST /drain_listeners?inboundonly&graceful&skip_exit).
- kuma-dp exits when Envoy exits, with Envoy's exit code (128 + N when a signal N ended it).
The drain wait also ends when Envoy exits by itself: there is nothing left to wait for.
"""
from __future__ import annotations

import ctypes
import http.client
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from appliance.dp.config import DpError
from appliance.dp.envoy import AdminAddress, UnixHTTPConnection

log = logging.getLogger("kuma-dp")

KILL_DELAY = 5.0      # seconds between SIGTERM and SIGKILL (Kuma: command.WaitDelay)
ADMIN_TIMEOUT = 5.0


def admin_post(admin: AdminAddress, path: str) -> None:
    """POST to Envoy's admin API; raises OSError/HTTPException or RuntimeError on a non-200."""
    conn: http.client.HTTPConnection = (UnixHTTPConnection(admin.socket_path, ADMIN_TIMEOUT) if admin.socket_path
                                        else http.client.HTTPConnection(admin.host, admin.port, timeout=ADMIN_TIMEOUT))
    try:
        conn.request("POST", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"expected 200 status code, got {resp.status}")
    finally:
        conn.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when kuma-dp dies (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self, args: list[str], admin: AdminAddress | None, drain_time: float) -> None:
        self.args = args
        self.admin = admin
        self.drain_time = drain_time
        self.proc: subprocess.Popen[bytes] | None = None
        # SimpleQueue.put is reentrant: safe to call from a signal handler.
        self.events: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.events.put(("signal", signum))

    def _wait_child(self) -> None:
        assert self.proc is not None
        self.events.put(("exited", self.proc.wait()))

    def run(self) -> int:
        """Start Envoy and supervise it until it exits; returns kuma-dp's exit code."""
        handled = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2]
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            log.info("starting Envoy: %s", " ".join(self.args))
            try:
                self.proc = subprocess.Popen(self.args, process_group=0, preexec_fn=_die_with_parent)
            except OSError as e:
                raise DpError(f"could not start Envoy {self.args[0]}: {e.strerror}")
            threading.Thread(target=self._wait_child, name="envoy-wait", daemon=True).start()
            return self._loop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _send(self, signum: int) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def _loop(self) -> int:
        stops = 0
        drained_for_good = False
        drain_until: float | None = None   # waiting for connections to drain until then
        kill_at: float | None = None       # SIGTERM sent; SIGKILL at this time
        while True:
            deadline = min((t for t in (drain_until, kill_at) if t is not None), default=None)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = self.events.get(timeout=timeout)
            except queue.Empty:
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    drain_until, kill_at = None, now + KILL_DELAY
                    log.info("stopping Envoy")
                    self._send(signal.SIGTERM)
                if kill_at is not None and now >= kill_at:
                    log.info("Envoy did not stop within %gs of SIGTERM, killing it", KILL_DELAY)
                    kill_at = None
                    self._send(signal.SIGKILL)
                continue
            if kind == "exited":
                code = exit_code(value)
                if code == 0:
                    log.info("Envoy terminated successfully")
                else:
                    log.info("Envoy terminated with exit code %d", code)
                return code
            if value == signal.SIGUSR2:
                if not drained_for_good:
                    drained_for_good = True
                    log.info("draining Envoy connections")
                    self._admin("/drain_listeners?inboundonly&graceful&skip_exit")
                continue
            stops += 1
            name = signal.Signals(value).name
            if stops == 1:
                log.info("received %s, stopping Envoy gracefully", name)
                if drained_for_good or not self._admin("/healthcheck/fail"):
                    drain_until = time.monotonic()
                else:
                    log.info("waiting %gs for connections to be drained", self.drain_time)
                    drain_until = time.monotonic() + self.drain_time
            elif stops == 2:
                log.info("received a second %s, stopping Envoy", name)
                drain_until, kill_at = None, time.monotonic() + KILL_DELAY
                self._send(signal.SIGTERM)
            else:
                log.info("received a third %s, killing Envoy", name)
                self._send(signal.SIGKILL)
                return 1

    def _admin(self, path: str) -> bool:
        if self.admin is None:
            return False
        try:
            admin_post(self.admin, path)
            return True
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            log.warning("Envoy admin %s failed: %s", path.split("?")[0], e)
            return False
