"""What the end-to-end tests share: a control plane with apps and their kuma-dp proxies (`Mesh`), small
apps to put behind them (HTTP and TCP echo), and the resources most tests start from."""
from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
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
                instance: str = "", drain: str = "1s", **variables: object) -> subprocess.Popen:
        """`instance`: a second kuma-dp for the same Dataplane gets its own work dir and log (`<name><instance>`)."""
        run = name + instance
        dp_file = self.tmp / f"{run}.dataplane.yaml"
        dp_file.write_text(template)
        args = [*cp_command("dp", "run"), f"--cp-address=https://{cp_host}:{self.cp_port}",
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
