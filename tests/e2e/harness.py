"""What the end-to-end tests share: a control plane with apps and their kuma-dp proxies (`Mesh`), small
apps to put behind them (HTTP and TCP echo), and the resources most tests start from."""
from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from tests.support import ROOT, CpProcess, cp_command, dataplane_token, free_port, terminate_all

MTLS = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}
ALLOW_ALL = {"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
             "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"},
                                                               "default": {"action": "Allow"}}]}}


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(b"echo:" + data)


def serve_in_thread(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: {{ protocol }}
  outbound:
  - port: {{ outPort }}
    tags:
      kuma.io/service: {{ outService }}
  - port: {{ out2Port }}
    tags:
      kuma.io/service: {{ out2Service }}
"""


class Mesh:
    """A control plane, apps and their proxies, torn down together."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.cp = CpProcess(tmp / "cp", env)
        (tmp / "cp").mkdir()
        self.procs: list[subprocess.Popen] = []
        self.cp_port = int(self.cp.env["KUMA_DP_SERVER_PORT"])

    def token(self, name: str) -> Path:
        return dataplane_token(self.cp.url, name, self.tmp)

    def kuma_dp(self, name: str, token: Path | None, template: str = DATAPLANE, cp_host: str = "127.0.0.1",
                instance: str = "", drain: str = "1s", prefix: tuple[str, ...] = (),
                **variables: object) -> subprocess.Popen:
        """`instance`: a second kuma-dp for the same Dataplane gets its own work dir and log (`<name><instance>`);
        `prefix`: what runs it (`ip netns exec NS`)."""
        run = name + instance
        dp_file = self.tmp / f"{run}.dataplane.yaml"
        dp_file.write_text(template)
        args = [*prefix, *cp_command("dp", "run"), f"--cp-address=https://{cp_host}:{self.cp_port}",
                f"--ca-cert-file={self.tmp / 'cp' / 'kuma-cp.crt'}", f"--dataplane-file={dp_file}",
                f"--dataplane-var=name={name}", f"--work-dir={self.tmp / run}",
                f"--drain-time={drain}"]
        variables = {"out2Port": free_port(), "out2Service": "nothing", **variables}
        args += [f"--dataplane-var={k}={v}" for k, v in variables.items()]
        if token:
            args.append(f"--dataplane-token-file={token}")
        log = open(self.tmp / f"{run}.log", "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
        self.procs.append(proc)
        return proc

    def log_tail(self, run: str, lines: int = 40) -> str:
        """The end of a kuma-dp's log (with its Envoy's), for a failure message."""
        path = self.tmp / f"{run}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return f"{run}.log:\n" + "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        terminate_all(self.procs)
        self.cp.stop()


def tcp_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(payload)
        return s.recv(4096)


def tcp_refused(port: int) -> bool:
    """The proxy closed or reset the connection instead of passing the bytes on (a TCP Deny)."""
    try:
        return tcp_exchange(port, b"x") == b""
    except OSError:
        return True


def running_mesh(tmp: Path, xds: str = "sotw") -> Iterator[Mesh]:
    """For a fixture: a started control plane (`xds`: "sotw" or "delta", Kuma's experimental delta xDS),
    closed with its proxies after the test."""
    mesh = Mesh(tmp, {"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if xds == "delta" else None)
    mesh.cp.start()
    yield mesh
    mesh.close()


VERSIONED_DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: {{ protocol }}
      version: {{ version }}
  outbound:
  - port: {{ httpPort }}
    tags:
      kuma.io/service: backend
  - port: {{ tcpPort }}
    tags:
      kuma.io/service: echo
"""


def version_app(version: str, seen: list[dict] | None = None) -> int:
    """An HTTP app on a free port that answers which version it is, and what it was sent (JSON); a path with
    `delay=<seconds>` in it is answered that much later (a slow backend)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            delay = re.search(r"delay=([0-9.]+)", self.path)
            if delay:
                time.sleep(float(delay.group(1)))
            request = {"version": version, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
            if seen is not None:
                seen.append(request)
            body = json.dumps(request).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    port = free_port()
    serve_in_thread(ThreadingHTTPServer(("127.0.0.1", port), Handler))
    return port


def tcp_version_app(version: str) -> int:
    """A TCP app on a free port that echoes what it gets after `<version>:`."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(4096):
                self.request.sendall(version.encode() + b":" + data)

    port = free_port()
    serve_in_thread(socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler))
    return port


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one-line error every mistake must give."""
        assert self.code == 1, (self.code, self.out, self.err)
        assert "Traceback" not in self.err
        lines = self.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), self.err
        return lines[0]


class Kumactl:
    def __init__(self, home: Path, config: Path | None = None) -> None:
        self.home = home
        self.config = config

    def __call__(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> Result:
        flags = ["--config-file", str(self.config)] if self.config else []
        proc = subprocess.run(cp_command("ctl", *flags, *args), input=stdin,
                              capture_output=True, text=True, timeout=30, cwd=cwd or ROOT,
                              env={**os.environ, "HOME": str(self.home), "PYTHONPATH": str(ROOT)})
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
        r = self(*args, stdin=stdin, cwd=cwd)
        assert r.code == 0, (args, r.out, r.err)
        assert "Traceback" not in r.err
        return r.out


def kumactl_for(tmp: Path, url: str, *auth: str) -> Kumactl:
    """kumactl with its own HOME and config file, pointed at the control plane at `url`."""
    kumactl = Kumactl(tmp, tmp / "kumactl.config")
    kumactl.ok("config", "control-planes", "add", "--name", "cp", "--address", url, *auth)
    return kumactl


# A caller of `backend` (HTTP) and `echo` (TCP) with its Envoy admin on a TCP port the test reads stats from.
CALLER_DATAPLANE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  admin:
    port: {{ adminPort }}
  inbound:
  - port: {{ port }}
    servicePort: {{ servicePort }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: {{ protocol }}
  outbound:
  - port: {{ httpPort }}
    tags:
      kuma.io/service: backend
  - port: {{ tcpPort }}
    tags:
      kuma.io/service: echo
"""
