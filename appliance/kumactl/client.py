"""HTTP to the control plane's API server (stdlib only), and the errors kumactl prints."""
from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator

from appliance import __version__


class CliError(Exception):
    """An error kumactl prints as one `Error: ...` line (and exits 1)."""


class ApiError(CliError):
    """The API server answered with Kuma's error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.title = str(body.get("title") or "")
        self.detail = str(body.get("detail") or body.get("details") or "")
        params = body.get("invalid_parameters")
        if params is None:
            params = [{"field": c.get("field"), "reason": c.get("message")} for c in body.get("causes") or []]
        self.invalid = [(str(p.get("field") or ""), str(p.get("reason") or "")) for p in params or []]
        super().__init__(self.formatted())

    def formatted(self) -> str:
        """kumactl's rendering: `Title (detail)` then one `* field: reason` line per parameter."""
        lines = [f"{self.title} ({self.detail})"]
        lines += [f"* {f}: {r}" for f, r in self.invalid]
        return "\n".join(lines)


@dataclass
class ApiServer:
    """Where and how to reach the API server: `coordinates.apiServer` of a kumactl config."""
    url: str
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    ca_cert_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    skip_verify: bool = False
    timeout: float = 60.0


def _reason(exc: BaseException, url: str) -> str:
    """What went wrong connecting, in the words Go's net/http uses."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return f"dial tcp {host}:{port}: connect: connection refused"
    if isinstance(reason, socket.gaierror):
        return f"dial tcp: lookup {host}: no such host"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(reason, ssl.SSLError):
        return f"tls: {reason.reason or reason}"
    return str(getattr(reason, "strerror", None) or reason)


class ApiClient:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.base = server.url.rstrip("/")
        parts = urllib.parse.urlsplit(server.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"Failed to parse API Server URL: {server.url!r} is not an http(s) URL")
        self._ssl = self._tls_context() if parts.scheme == "https" else None

    def _tls_context(self) -> ssl.SSLContext:
        s = self.server
        try:
            ctx = ssl.create_default_context(cafile=s.ca_cert_file or None)
            if s.skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if s.client_cert_file:
                ctx.load_cert_chain(s.client_cert_file, s.client_key_file or None)
        except (OSError, ssl.SSLError) as e:
            raise CliError(f"could not configure HTTP client with TLS: {e}") from e
        return ctx

    def url(self, path: str, query: list[tuple[str, str]] | None = None) -> str:
        return self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
                body: Any = None) -> tuple[int, bytes]:
        """Send one request; answers (status, body) for any HTTP status, raises CliError if the
        server could not be reached."""
        url = self.url(path, query)
        headers = {"User-Agent": f"kumactl/{__version__}", "Accept": "application/json", **self.server.headers}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.server.token:
            headers["Authorization"] = "Bearer " + self.server.token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.server.timeout or None, context=self._ssl) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise CliError(f'{method.capitalize()} "{url}": {_reason(e, url)}') from e

    def call(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
             body: Any = None) -> tuple[int, bytes]:
        """Like request, but a 4xx/5xx answer raises: ApiError for Kuma's error body."""
        status, raw = self.request(method, path, query, body)
        if status >= 400:
            raise error_from(status, raw)
        return status, raw

    def get_json(self, path: str, query: list[tuple[str, str]] | None = None) -> Any:
        _, raw = self.call("GET", path, query)
        return decode(raw)

    def list_all(self, path: str, query: list[tuple[str, str]] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, following `next`."""
        query = [*(query or []), ("size", "1000")]
        while True:
            page = self.get_json(path, query)
            yield from page.get("items") or []
            offset = next_offset(page)
            if not offset:
                return
            query = [(k, v) for k, v in query if k != "offset"] + [("offset", offset)]


def decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise CliError(f"could not read the control plane's answer as JSON: {e}") from e


def error_from(status: int, raw: bytes) -> CliError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("title"):
        return ApiError(status, body)
    return CliError(f"({status}): {raw.decode(errors='replace')}")


def next_offset(page: dict[str, Any]) -> str:
    """The offset of the next page, read from the list's `next` URL."""
    nxt = page.get("next")
    if not nxt:
        return ""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(str(nxt)).query).get("offset") or [""]
    return values[0]
