"""Kuma's API request metrics (go-http-metrics with the prefix api_server): count, duration, in flight.

`handler` is the route template (`/meshes/{mesh}/...`), never the raw path, so that resource names do not
become label values."""
from __future__ import annotations

import time
from typing import Any

import falcon

from appliance import telemetry


def _handler(req: falcon.Request) -> str:
    return req.uri_template or "unmatched"


class RequestMetrics:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        req.context.metrics_handler = _handler(req)
        telemetry.API_REQUESTS_INFLIGHT.add(1, req.context.metrics_handler)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, succeeded: bool) -> None:
        started = req.context.get("metrics_started")
        if started is None:
            return
        handler = req.context.get("metrics_handler")
        if handler is not None:
            telemetry.API_REQUESTS_INFLIGHT.add(-1, handler)
        telemetry.API_REQUEST_DURATION.observe(time.perf_counter() - started, str(resp.status_code),
                                               handler or _handler(req), req.method)
