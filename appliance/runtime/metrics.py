"""`GET /metrics` on the diagnostics server, in Prometheus' text format (version 0.0.4).

Kuma's `cp_info` (its labels: the build, instance_id, cluster_id) and `leader` gauges, Kuma's
`xds_streams_active`, and figures that cost nothing to read: the store's revision and this
process's memory and CPU (Prometheus' standard process metrics); then what the parts of the control
plane recorded as they worked (appliance/telemetry.py: xDS, API, store, certificates).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import falcon

from appliance import telemetry

log = logging.getLogger("appliance.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    read: Callable[[], float | None]     # None: not known now (e.g. the database is down): left out
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "gauge"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def render(gauges: list[Gauge]) -> str:
    lines = []
    for g in gauges:
        try:
            value = g.read()
        except Exception:   # one unreadable figure must not take /metrics down
            log.debug("metric %s unreadable", g.name, exc_info=True)
            value = None
        if value is None:
            continue
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(g.labels))
        lines += [f"# HELP {g.name} {g.help}", f"# TYPE {g.name} {g.kind}",
                  f"{g.name}{{{labels}}} {float(value)!r}" if labels else f"{g.name} {float(value)!r}"]
    return "\n".join(lines) + "\n"


def process_gauges() -> list[Gauge]:
    """Resident memory, CPU time and start time of this process, from /proc."""
    def stat() -> list[str]:
        return Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()

    def boot_time() -> float:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
        return time.time() - time.monotonic()

    started = boot_time() + int(stat()[19]) / _TICK
    return [
        Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
              lambda: int(stat()[21]) * _PAGE),
        Gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
              lambda: (int(stat()[11]) + int(stat()[12])) / _TICK, kind="counter"),
        Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
              lambda: started),
    ]


class Metrics:
    def __init__(self, gauges: list[Gauge]) -> None:
        self.gauges = gauges

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.text = render(self.gauges) + "".join(line + "\n" for line in telemetry.render())
