"""REST API benchmark: GET/PUT throughput and p99 with 32 keep-alive clients, listing 10,000
dataplanes page by page, and start-up time with a 10,000-resource store.

    make bench                      # or: .venv/bin/python tests/perf/api_bench.py [--seconds 5]
    .venv/bin/python tests/perf/api_bench.py --store postgres   # on a real PostgreSQL (pgserver)

Prints a table and one JSON line. The control plane is a real `kuma-cp run` process on a
temporary SQLite file (or a fresh PostgreSQL database); the load comes from one asyncio process on the same machine (so on
2 cores the client takes CPU from the server: the figures are a floor).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.core.manager import ResourceManager  # noqa: E402
from appliance.core.resources import registry  # noqa: E402
from appliance.core.resources.model import Resource  # noqa: E402
from appliance.store import Store, WriteOp  # noqa: E402
from appliance.store.sqlite import SQLiteStore  # noqa: E402
from tests.support import PostgresServer, free_port  # noqa: E402

CLIENTS = 32


def dataplane(i: int, version: int = 0) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": f"dp-{i}",
            "networking": {"address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                           "inbound": [{"port": 8080, "tags": {"kuma.io/service": f"svc-{i % 50}",
                                                               "version": f"v{version}"}}]}}


def populate(store: Store, n: int) -> None:
    """Fill `store` with the default Mesh and `n` dataplanes, then close it."""
    manager = ResourceManager(store)
    manager.ensure_mesh("default")
    ops = []
    for i in range(n):
        body = dataplane(i)
        res = Resource("Dataplane", "default", body["name"], {"networking": body["networking"]})
        res.labels = manager.compute_labels(registry.get("Dataplane"), res)
        ops.append(WriteOp("create", res))
    for start in range(0, len(ops), 5000):
        store.write(ops[start:start + 5000])
    store.close()


class Cp:
    def __init__(self, work_dir: Path, env: dict[str, str]) -> None:
        self.api_port, self.diag_port = free_port(), free_port()
        self.env = {**os.environ, **env, "KUMA_GENERAL_WORK_DIR": str(work_dir),
                    "KUMA_API_SERVER_HTTP_PORT": str(self.api_port),
                    "KUMA_DIAGNOSTICS_SERVER_PORT": str(self.diag_port), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()), "KUMA_DP_SERVER_PORT": str(free_port()),
                    "KUMA_API_SERVER_HTTPS_PORT": str(free_port())}

    def start(self) -> float:
        import urllib.request
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--log-level", "warning"],
                                     env=self.env, cwd=ROOT)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.diag_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/meshes/default/dataplanes?size=1") as r:
            r.read()
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str,
                   body: bytes = b"") -> int:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def load(port: int, seconds: float, make: Callable[[int, int], tuple[str, str, bytes]]) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = 0
        while time.perf_counter() < deadline:
            method, path, body = make(c, k)
            t0 = time.perf_counter()
            status = await _request(reader, writer, method, path, body)
            latencies.append(time.perf_counter() - t0)
            if status >= 300:
                errors += 1
            k += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"rps": round(len(latencies) / elapsed), "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2), "requests": len(latencies),
            "errors": errors}


def list_all(port: int) -> tuple[float, int]:
    import urllib.request
    t0 = time.perf_counter()
    seen, offset = 0, 0
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/meshes/default/dataplanes?size=1000&offset={offset}") as r:
            page = json.loads(r.read())
        seen += len(page["items"])
        if not page["next"]:
            break
        offset += 1000
    return time.perf_counter() - t0, seen


def scenario(n: int, seconds: float, postgres: PostgresServer | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if postgres:
            db = postgres.migrated_database()
            populate(postgres.store(db), n)
            env = postgres.env(db)
        else:
            populate(SQLiteStore(work / "kuma.db"), n)
            env = {}
        cp = Cp(work, env)
        startup = cp.start()
        try:
            port = cp.api_port
            get = asyncio.run(load(port, seconds, lambda c, k: (
                "GET", f"/meshes/default/dataplanes/dp-{random.randrange(n)}", b"")))
            # each client updates its own dataplanes, so no two writers race on one resource
            own = n // CLIENTS
            put = asyncio.run(load(port, seconds, lambda c, k: (
                "PUT", f"/meshes/default/dataplanes/dp-{c + CLIENTS * (k % own)}",
                json.dumps(dataplane(c + CLIENTS * (k % own), k + 1)).encode())))
            listing, seen = list_all(port) if n >= 1000 else (None, None)
        finally:
            cp.stop()
    return {"store": n, "startup_s": round(startup, 3), "get": get, "put": put,
            "list_all_s": round(listing, 3) if listing else None, "listed": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load phase")
    parser.add_argument("--sizes", default="100,10000", help="store sizes to run")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: a real PostgreSQL 16 from the pgserver wheel, on 127.0.0.1")
    args = parser.parse_args()
    postgres = PostgresServer() if args.store == "postgres" else None
    try:
        results = [scenario(int(n), args.seconds, postgres) for n in args.sizes.split(",")]
    finally:
        if postgres:
            postgres.close()
    print(f"{'store':>7} {'start s':>8} {'GET rps':>8} {'GET p99 ms':>11} {'PUT rps':>8} {'PUT p99 ms':>11} "
          f"{'errors':>7} {'list 10k s':>11}")
    for r in results:
        print(f"{r['store']:>7} {r['startup_s']:>8} {r['get']['rps']:>8} {r['get']['p99_ms']:>11} "
              f"{r['put']['rps']:>8} {r['put']['p99_ms']:>11} {r['get']['errors'] + r['put']['errors']:>7} "
              f"{r['list_all_s'] if r['list_all_s'] is not None else '-':>11}")
    print(json.dumps({"benchmark": "api", "store": args.store, "clients": CLIENTS, "results": results}))


if __name__ == "__main__":
    main()
