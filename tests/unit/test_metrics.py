"""`/metrics` text: Prometheus' exposition format, and figures that cannot be read are left out."""
from __future__ import annotations

from appliance.runtime.metrics import Gauge, process_gauges, render


def _down() -> float:
    raise ConnectionError("database down")


def test_render_writes_help_type_and_escaped_labels() -> None:
    text = render([
        Gauge("cp_info", "Static information about the CP instance", lambda: 1.0,
              (("version", "0.1.0"), ("instance_id", 'vm-"1"\\x\n'))),
        Gauge("leader", "1 indicates that this instance is leader", lambda: 0),
        Gauge("store_revision", "unknown now", lambda: None),
        Gauge("broken", "raises", _down),
    ])
    assert text.splitlines() == [
        "# HELP cp_info Static information about the CP instance",
        "# TYPE cp_info gauge",
        'cp_info{instance_id="vm-\\"1\\"\\\\x\\n",version="0.1.0"} 1.0',
        "# HELP leader 1 indicates that this instance is leader",
        "# TYPE leader gauge",
        "leader 0.0",
    ]


def test_process_figures_are_this_process() -> None:
    values = {g.name: g.read() for g in process_gauges()}
    assert values["process_resident_memory_bytes"] > 1024 * 1024
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_start_time_seconds"] > 1.6e9
    assert {g.kind for g in process_gauges() if g.name == "process_cpu_seconds_total"} == {"counter"}
