"""A waitress server that binds in the caller's thread (a port conflict stops start-up) and stops cleanly."""
from __future__ import annotations

import threading
from typing import Any

from waitress.server import create_server


class BindError(Exception):
    pass


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, threads: int) -> None:
        self._map: dict = {}
        try:
            # asyncore_use_poll: select() breaks past 1,024 descriptors (STACK-NOTES)
            self._server = create_server(app, host=host, port=port, threads=threads, asyncore_use_poll=True,
                                         ident="kuma-cp", clear_untrusted_proxy_headers=True, map=self._map)
        except OSError as e:
            raise BindError(e.strerror or str(e)) from e
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self._server.run, name=f"http-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        def close_all() -> None:
            # runs inside the server's loop: once the map is empty the loop returns
            for channel in list(self._map.values()):
                channel.close()

        self._server.trigger.pull_trigger(close_all)
        if self._thread:
            self._thread.join(timeout)
        self._server.task_dispatcher.shutdown(timeout=timeout)
