"""The control plane's metric families render as Prometheus' text format wants them."""
from __future__ import annotations

from appliance.telemetry import Counter, Histogram, Summary


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    h = Histogram("x_seconds", "X.", ("route",), buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        h.observe(value, "/a")
    assert h.render() == [
        "# HELP x_seconds X.", "# TYPE x_seconds histogram",
        'x_seconds_bucket{route="/a",le="0.1"} 1', 'x_seconds_bucket{route="/a",le="1.0"} 2',
        'x_seconds_bucket{route="/a",le="+Inf"} 3', 'x_seconds_sum{route="/a"} 5.55', 'x_seconds_count{route="/a"} 3']


def test_counter_and_summary_and_label_escaping():
    c = Counter("c", "C.", ("path",))
    c.inc('a"b\\')
    assert c.render()[-1] == 'c{path="a\\"b\\\\"} 1.0'
    s = Summary("s", "S.")
    assert s.render() == []   # nothing observed: nothing said
    s.observe(2.0)
    assert s.render()[2:] == ["s_sum 2.0", "s_count 1.0"]
