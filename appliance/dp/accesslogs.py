"""kuma-dp's access log streamer: MeshAccessLog `tcp` backends (app/kuma-dp/pkg/dataplane/accesslogs in Kuma 2.14).

The control plane points Envoy's file access logger at a named pipe in kuma-dp's work dir
(`kuma-al-<name>-<mesh>.sock`); each line Envoy writes there is a JSON object `{"address", "message"}` (or,
from older control planes, `address;message`). kuma-dp reads the lines and sends each message to its address
over TCP, one connection per address kept open. A line whose address cannot be reached is dropped, not retried
(as Kuma: retrying would let the pipe fill and delay every later log); a failed connection is dropped and made
anew for the next line.

Where we differ from Kuma: the pipe is mode 0600 (Kuma: 0666), so that only Envoy, which runs as kuma-dp's
user, can write to it: another local user could otherwise inject log lines or make kuma-dp connect anywhere.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path

log = logging.getLogger("kuma-dp")

CONNECT_TIMEOUT = 5.0   # seconds, Kuma's defaultConnectTimeout


def parse_line(line: bytes) -> tuple[str, bytes] | None:
    """The address and the bytes to send for one line from the pipe; None for a line of neither format.

    A message that is a JSON object (the `json` format) is sent as Go's encoding/json writes it: keys sorted,
    no spaces, <, > and & escaped, then a newline. A text message is sent as Envoy wrote it (with its newline)."""
    try:
        wrapped = json.loads(line)
    except ValueError:
        address, sep, message = line.partition(b";")
        return (address.decode("utf-8", "replace"), message) if sep else None
    if not isinstance(wrapped, dict):
        return None
    address, message = str(wrapped.get("address") or ""), wrapped.get("message")
    if isinstance(message, str):
        return address, message.encode()
    text = json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return address, text.encode() + b"\n"


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class AccessLogStreamer:
    """Owns the pipe at `path` while running: created on start, removed on stop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._senders: dict[str, socket.socket] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def start(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.mkfifo(self.path, 0o600)
        if not stat.S_ISFIFO(os.lstat(self.path).st_mode):
            raise OSError(f"{self.path} is not a pipe")
        # Read-write: we hold a writer ourselves, so the pipe never reads as closed when Envoy reopens it.
        self._fd = os.open(self.path, os.O_RDWR)
        self._thread = threading.Thread(target=self._run, name="access-log-streamer", daemon=True)
        self._thread.start()
        log.info("access log streamer reading %s", self.path)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        try:
            os.write(self._fd, b"\n")   # wakes the reader
        except OSError:
            pass
        self._thread.join(timeout=CONNECT_TIMEOUT + 1)
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        os.close(self._fd)
        Path(self.path).unlink(missing_ok=True)
        self._thread = None

    def _run(self) -> None:
        with os.fdopen(os.dup(self._fd), "rb") as pipe:
            for line in pipe:
                if self._stopping.is_set():
                    return
                parsed = parse_line(line)
                if parsed is None:
                    if line.strip():
                        log.error("access log line invalid: expected a JSON object or 'address;message'")
                    continue
                self._send(*parsed)

    def _send(self, address: str, message: bytes) -> None:
        sender = self._senders.get(address)
        if sender is None:
            try:
                sender = socket.create_connection(_split_address(address), timeout=CONNECT_TIMEOUT)
            except (OSError, ValueError) as e:
                log.error("could not connect to TCP log destination %s, dropping the log: %s", address, e)
                return
            self._senders[address] = sender
            log.info("connected to TCP log destination %s", address)
        try:
            sender.sendall(message)
        except OSError as e:
            log.error("could not send the log to TCP log destination %s, dropping it: %s", address, e)
            sender.close()
            del self._senders[address]
