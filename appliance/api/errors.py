"""Kuma's error body (`/std-errors`) and the mapping from our exceptions to it."""
from __future__ import annotations

from typing import Any

import falcon
import orjson

from appliance.core.manager import MeshNotFound
from appliance.core.validation import BadRequest, ValidationError, Violation
from appliance.store import AlreadyExists, Conflict, NotFound, StoreUnavailable


class KumaError(Exception):
    """An error answered as Kuma answers it; raise from any handler."""

    def __init__(self, status: int, title: str, detail: str,
                 invalid: list[Violation] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid = invalid or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "/std-errors", "status": self.status, "title": self.title,
                               "detail": self.detail}
        if self.invalid:
            out["invalid_parameters"] = [{"field": v.field, "reason": v.reason} for v in self.invalid]
        out["details"] = self.detail
        if self.invalid:
            out["causes"] = [{"field": v.field, "message": v.reason} for v in self.invalid]
        return out


def bad_request(detail: str) -> KumaError:
    return KumaError(400, "Bad Request", detail)


def from_exception(exc: Exception, title: str) -> KumaError:
    """Translate a domain exception into Kuma's answer; `title` says what was being done."""
    if isinstance(exc, KumaError):
        return exc
    if isinstance(exc, ValidationError):
        return KumaError(400, exc.title or title, "Resource is not valid", exc.violations)
    if isinstance(exc, BadRequest):
        return bad_request(f"bad request: {exc}")
    if isinstance(exc, NotFound):
        return KumaError(404, title, "Not found")
    if isinstance(exc, MeshNotFound):
        return KumaError(400, title, "Mesh is not found", [Violation("mesh", str(exc))])
    if isinstance(exc, (Conflict, AlreadyExists)):
        return KumaError(409, "Conflict", str(exc))
    if isinstance(exc, StoreUnavailable):
        # the database is down (PostgreSQL) or its disk is full (SQLite): nothing was written; the client may retry
        return KumaError(503, "Service Unavailable", str(exc))
    raise exc


def write(resp: falcon.Response, err: KumaError) -> None:
    resp.status = err.status
    resp.content_type = "application/json"
    resp.data = orjson.dumps(err.body())


def install(app: falcon.App) -> None:
    """Every failure leaves as Kuma's body: ours, falcon's own (404/405) and unexpected ones (500)."""
    import logging
    log = logging.getLogger("appliance.api")

    def handle_kuma(req: falcon.Request, resp: falcon.Response, ex: KumaError, params: dict) -> None:
        write(resp, ex)

    def handle_http(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict) -> None:
        status = ex.status_code
        if status == 404:
            write(resp, KumaError(404, "Not Found", "Not found"))
        elif status == 405:
            write(resp, KumaError(405, "Method not Allowed", f"method {req.method} is not allowed on {req.path}"))
        else:
            write(resp, KumaError(status, ex.title or "Error", ex.description or ex.title or "error"))
        if isinstance(ex, falcon.HTTPMethodNotAllowed):
            resp.set_header("Allow", ", ".join(ex.headers.get("Allow", "").split(", ")) if ex.headers else "")

    def handle_any(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
        log.exception("unexpected error on %s %s", req.method, req.path)
        write(resp, KumaError(500, "Internal Server Error", "Internal Server Error"))

    def handle_domain(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
        write(resp, from_exception(ex, getattr(ex, "title", None) or "Could not process the request"))

    app.add_error_handler(Exception, handle_any)
    app.add_error_handler(falcon.HTTPError, handle_http)
    app.add_error_handler((ValidationError, BadRequest, NotFound, MeshNotFound, Conflict, AlreadyExists,
                           StoreUnavailable), handle_domain)
    app.add_error_handler(KumaError, handle_kuma)
