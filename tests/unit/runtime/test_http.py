"""HttpServer: waitress on real sockets, stopped while clients keep sending requests."""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

import pytest
import requests

from appliance.runtime.http import HttpServer


def _app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _stop_under_load(clients: int) -> None:
    """Start a server, let `clients` keep-alive clients hammer it, and stop it once each got an answer."""
    server = HttpServer(_app, "127.0.0.1", 0, threads=4).start()
    url = f"http://127.0.0.1:{server.port}/"
    answered = threading.Semaphore(0)
    done = threading.Event()

    def client() -> None:
        http = requests.Session()
        while not done.is_set():
            try:
                http.get(url, timeout=5)
                answered.release()
            except requests.RequestException:
                pass  # the server went away mid-request: what stopping means
        http.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        for _ in range(clients):
            assert answered.acquire(timeout=10), "the server never answered"
        server.stop()
    finally:
        done.set()
        for t in threads:
            t.join()


def test_stopping_while_requests_are_in_flight_never_uses_a_closed_wake_up_pipe(
        caplog: pytest.LogCaptureFixture) -> None:
    """Every worker that finishes a response wakes waitress' loop through a pipe. Stopping used to close that
    pipe inside the loop, so a wake-up racing the stop made `stop()` itself fail with EBADF (seen once in
    tests/api), and workers logged "Exception when servicing ... Bad file descriptor" (a write that could
    as well have reached a file that reused the descriptor). Races: many cycles, a few hit the window."""
    caplog.set_level(logging.ERROR, logger="waitress")
    for _ in range(100):
        _stop_under_load(clients=3)
    errors = [r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records]
    assert errors == []


def test_stop_twice_and_stop_before_start() -> None:
    server = HttpServer(_app, "127.0.0.1", 0, threads=2).start()
    url = f"http://127.0.0.1:{server.port}/"
    assert requests.get(url, timeout=5).text == "ok"
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    never_started = HttpServer(_app, "127.0.0.1", 0, threads=2)
    never_started.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{never_started.port}/", timeout=5)
