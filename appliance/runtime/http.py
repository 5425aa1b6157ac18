"""A waitress server that binds in the caller's thread (a port conflict stops start-up) and stops cleanly."""
from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)


class BindError(Exception):
    pass


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, threads: int, sockets: list[Any] | None = None) -> None:
        """`sockets`: serve on these (bound and listening, e.g. an abstract unix socket) instead of host:port."""
        self._map: dict = {}
        where: dict[str, Any] = {"sockets": sockets} if sockets else {"host": host, "port": port}
        try:
            # asyncore_use_poll: select() breaks past 1,024 descriptors (STACK-NOTES)
            self._server = create_server(app, **where, threads=threads, asyncore_use_poll=True,
                                         ident="kuma-cp", clear_untrusted_proxy_headers=True, map=self._map)
        except OSError as e:
            raise BindError(e.strerror or str(e)) from e
        self._thread: threading.Thread | None = None
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def port(self) -> int:
        port = getattr(self._server, "effective_port", 0)
        return int(port) if isinstance(port, (int, str)) else 0   # a unix socket's is its name (bytes)

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self._server.run, name=f"http-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, let the requests in flight finish (up to `timeout`), then
        close waitress' wake-up pipe. Idempotent.

        The pipe is closed here, last, and never inside the loop: any thread may write to it at any time
        (`pull_trigger`: ours below, and every worker that finishes a response). Closed in the loop, a
        worker's wake-up that ran our thunk before our own write made that write fail with EBADF, and a
        write after the close could land in whatever file reused the descriptor's number."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        trigger = self._server.trigger

        def close_all_but_trigger() -> None:
            # In the loop's thread (or in ours, when it never started): the loop returns once its map is
            # empty, so the trigger leaves the map, but its descriptors stay open.
            trigger.del_channel()
            for channel in list(self._map.values()):
                # the dispatcher's own close: waitress' server.close() would close the trigger too
                wasyncore.dispatcher.close(channel)

        if self._thread is None:
            close_all_but_trigger()
        else:
            trigger.pull_trigger(close_all_but_trigger)
            self._thread.join(timeout)
        dispatcher = self._server.task_dispatcher
        dispatcher.shutdown(timeout=timeout)
        if dispatcher.threads or (self._thread is not None and self._thread.is_alive()):
            # A stuck request holds a worker that writes to the pipe when it ends (and a stuck loop reads
            # it): leak its descriptors rather than let a write reach a file that reused their numbers.
            log.warning("HTTP server on port %d still busy after %.0fs; leaving its wake-up pipe open",
                        self.port, timeout)
            return
        trigger.close()
