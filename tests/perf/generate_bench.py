"""How long generating one sidecar's config takes (1 inbound + 3 outbounds, STRICT mTLS, default policies).

    .venv/bin/python tests/perf/generate_bench.py
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.xds.generate import generate_sidecar  # noqa: E402
from tests.unit.xds.scenarios import IDENTITY, snapshot, web_proxy  # noqa: E402


def main() -> None:
    snap = snapshot("STRICT")
    proxy = web_proxy(outbounds=web_proxy().outbounds + (replace(web_proxy().outbounds[0], port=10003,
                                                                 service="web"),))
    results = {}
    for label, shared in (("no cache", False), ("shared cache", True)):
        cache: dict = {}
        generate_sidecar(snap, proxy, IDENTITY, cache if shared else None)
        runs = 2000
        start = time.perf_counter()
        for _ in range(runs):
            generate_sidecar(snap, proxy, IDENTITY, cache if shared else None)
        results[label] = round((time.perf_counter() - start) / runs * 1000, 3)
    for label, ms in results.items():
        print(f"{label:>13}: {ms} ms per proxy")
    print(json.dumps({"benchmark": "generate_sidecar", "ms_per_proxy": results}))


if __name__ == "__main__":
    main()
