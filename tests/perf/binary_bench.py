"""Frozen-binary benchmark (issue #6 targets): size of `dist/kuma-cp`, exec to `/ready` answering
200 with an empty work dir (median of N), idle RSS of a started control plane, bytes unpacked per
start, the tarball's size without Envoy, and the glibc floor; `python -m appliance run` alongside
for comparison.

    make bench-binary               # or: .venv/bin/python tests/perf/binary_bench.py [--runs 10]
                                    #     [--binary dist/kuma-cp] [--no-venv]

Build the binary first (`make binary`). Prints a table and one JSON line. Each start gets its
own empty work dir, its own ports and its own TMPDIR (so the unpacked size can be measured).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402

TARGETS = {"size_mb": 40, "ready_s": 1.0, "idle_rss_mb": 80, "tarball_mb": 60}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def start_once(cmd: list[str], idle_s: float = 0.0) -> dict:
    """Start `cmd run` on an empty work dir, time exec to /ready 200, optionally sit idle and read
    RSS, then SIGTERM it."""
    with tempfile.TemporaryDirectory() as tmp:
        unpack = Path(tmp) / "unpack"
        unpack.mkdir()
        diag = free_port()
        env = {**os.environ, "KUMA_GENERAL_WORK_DIR": str(Path(tmp) / "work"), "TMPDIR": str(unpack),
               "KUMA_API_SERVER_HTTP_PORT": str(free_port()), "KUMA_DIAGNOSTICS_SERVER_PORT": str(diag), "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT": str(free_port()),
               "KUMA_DP_SERVER_PORT": str(free_port()), "KUMA_API_SERVER_HTTPS_PORT": str(free_port())}
        started = time.perf_counter()
        proc = subprocess.Popen([*cmd, "run", "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=tmp)
        ready = None
        while time.perf_counter() - started < 30:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd} exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{diag}/ready", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - started
                        break
            except OSError:
                pass
            time.sleep(0.005)
        if ready is None:
            proc.kill()
            raise SystemExit(f"{cmd}: not ready in 30 s")
        result = {"ready_s": ready, "unpacked_mb": _du(unpack) / 1e6}
        if idle_s:
            time.sleep(idle_s)
            pids = _tree(proc.pid)
            result["rss_mb"] = {p: _rss_kb(p) / 1024 for p in pids}
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        result["exit_code"] = proc.wait(timeout=30)
        result["stop_s"] = time.perf_counter() - t
        result["left_in_tmpdir"] = len(list(unpack.iterdir()))
        return result


def tarball_without_envoy(binary: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "packaging" / "tarball.py"), "--binary", str(binary),
                        "--envoy", "none", "--out", tmp], check=True, capture_output=True)
        return next(Path(tmp).glob("*.tar.gz")).stat().st_size / 1e6


def glibc_floor(binary: Path) -> str:
    # either build venv has PyInstaller, which glibc_check.py reads the archive with
    pythons = [ROOT / "build" / "out" / venv / "bin" / "python" for venv in ("venv-floor", "venv")]
    python = next((p for p in pythons if p.exists()), None)
    if python is None:
        return "n/a (no build venv: run make binary)"
    out = subprocess.run([str(python), str(ROOT / "build" / "glibc_check.py"), str(binary)],
                         capture_output=True, text=True)
    return out.stdout.split(": ", 1)[-1].split(" ")[0] if out.returncode == 0 else "error: " + out.stderr


def measure(name: str, cmd: list[str], runs: int) -> dict:
    starts = [start_once(cmd) for _ in range(runs - 1)]
    starts.append(start_once(cmd, idle_s=3.0))  # the last one also sits idle for RSS
    times = sorted(s["ready_s"] for s in starts)
    rss = starts[-1]["rss_mb"]
    pids = list(rss)
    return {
        "name": name, "runs": runs,
        "ready_median_s": round(statistics.median(times), 3), "ready_min_s": round(times[0], 3),
        "ready_max_s": round(times[-1], 3),
        # one-file: the first pid is the unpacker, the second the Python process
        "idle_rss_mb": round(rss[pids[-1]] if len(pids) > 1 else rss[pids[0]], 1),
        "idle_rss_total_mb": round(sum(rss.values()), 1),
        "unpacked_mb": round(starts[-1]["unpacked_mb"], 1),
        "stop_s": round(statistics.median(s["stop_s"] for s in starts), 3),
        "exit_codes": sorted({s["exit_code"] for s in starts}),
        "left_in_tmpdir": max(s["left_in_tmpdir"] for s in starts),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=Path, default=Path(os.environ.get("KUMA_TEST_BINARY", ROOT / "dist" / "kuma-cp")))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-venv", action="store_true", help="skip the `python -m appliance` comparison")
    args = p.parse_args()
    binary = args.binary.resolve()
    if not binary.is_file():
        raise SystemExit(f"{binary} does not exist: run `make binary` first")
    rows = [measure("one-file", [str(binary)], args.runs)]
    if not args.no_venv:
        rows.append(measure("venv", [sys.executable, "-m", "appliance"], args.runs))
    summary = {"size_mb": round(binary.stat().st_size / 1e6, 1), "tarball_no_envoy_mb": round(tarball_without_envoy(binary), 1),
               "glibc_floor": glibc_floor(binary)}
    with_envoy = sorted((ROOT / "dist").glob("kuma-appliance-*.tar.gz"))
    if with_envoy:
        summary["tarball_in_dist_mb"] = round(with_envoy[-1].stat().st_size / 1e6, 1)

    print(f"{'':>9} {'ready med':>10} {'min':>6} {'max':>6} {'RSS MB':>7} {'RSS all':>8} {'unpack MB':>10} "
          f"{'stop s':>7} {'exit':>5}")
    for r in rows:
        print(f"{r['name']:>9} {r['ready_median_s']:>10} {r['ready_min_s']:>6} {r['ready_max_s']:>6} "
              f"{r['idle_rss_mb']:>7} {r['idle_rss_total_mb']:>8} {r['unpacked_mb']:>10} {r['stop_s']:>7} "
              f"{','.join(map(str, r['exit_codes'])):>5}")
    frozen = rows[0]
    checks = {
        "size_mb": (summary["size_mb"], TARGETS["size_mb"]),
        "ready_s": (frozen["ready_median_s"], TARGETS["ready_s"]),
        "idle_rss_mb": (frozen["idle_rss_total_mb"], TARGETS["idle_rss_mb"]),
        "tarball_mb": (summary["tarball_no_envoy_mb"], TARGETS["tarball_mb"]),
    }
    for key, (value, limit) in checks.items():
        print(f"{key:>12}: {value} (target < {limit}) {'ok' if value < limit else 'MISSED'}")
    print(f"{'glibc floor':>12}: {summary['glibc_floor']}")
    if "tarball_in_dist_mb" in summary:
        print(f"{'dist tarball':>12}: {summary['tarball_in_dist_mb']} MB ({with_envoy[-1].name}, with Envoy if built so)")
    print(json.dumps({"benchmark": "binary", **summary, "results": rows}))
    return 0 if all(v < limit for v, limit in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
