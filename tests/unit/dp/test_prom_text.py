"""kuma-dp's metrics hijacker: MeshMetric profiles and labels over Envoy's Prometheus text (profiles.go)."""
from __future__ import annotations

from appliance.dp import prom_text
from appliance.dp.metrics import meshmetric_scrape

ENVOY = """# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 3
envoy_cluster_upstream_rq_total{envoy_cluster_name="_kuma:metrics:hijacker"} 9
envoy_cluster_upstream_rq_total{envoy_cluster_name="ads_cluster"} 1
# TYPE envoy_cluster_lb_recalculate_zone_structures counter
envoy_cluster_lb_recalculate_zone_structures{envoy_cluster_name="backend"} 2
# TYPE envoy_server_live gauge
envoy_server_live{} 1
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="backend",le="0.5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="backend",le="+Inf"} 3
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="backend"} 4.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="backend"} 3
"""


def _names(sidecar) -> list[str]:
    return [f.name for f in prom_text.profile_filter(sidecar)(prom_text.parse(ENVOY))]


def test_basic_is_the_default_and_leaves_out_kumas_own_clusters():
    families = prom_text.profile_filter(None)(prom_text.parse(ENVOY))
    assert [f.name for f in families] == ["envoy_cluster_upstream_rq_total", "envoy_server_live",
                                          "envoy_cluster_upstream_rq_time"]
    assert families[0].samples == ['envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 3']
    assert len(families[2].samples) == 4   # the histogram's samples stay together


def test_all_none_include_exclude():
    assert len(_names({"profiles": {"appendProfiles": [{"name": "All"}]}})) == 4
    assert _names({"profiles": {"appendProfiles": [{"name": "None"}]}}) == []
    assert _names({"profiles": {"appendProfiles": [{"name": "None"}],
                                "include": [{"type": "Regex", "match": "lb_.*zone"}]}}) == [
        "envoy_cluster_lb_recalculate_zone_structures"]
    # include wins over exclude
    assert _names({"profiles": {"exclude": [{"type": "Prefix", "match": "envoy_"}],
                                "include": [{"type": "Exact", "match": "envoy_server_live"}]}}) == ["envoy_server_live"]
    assert _names({"profiles": {"appendProfiles": [{"name": "All"}],
                                "exclude": [{"type": "Contains", "match": "rq"}]}}) == [
        "envoy_cluster_lb_recalculate_zone_structures", "envoy_server_live"]


def test_labels_are_added_and_made_prometheus_safe_without_overriding_the_samples_own():
    text = prom_text.render(prom_text.parse('# TYPE x counter\nx{mesh="own"} 1\ny 2\n'),
                            {"mesh": "default", "kuma.proxy_role": "sidecar"})
    assert text == ('# TYPE x counter\nx{mesh="own",kuma_proxy_role="sidecar"} 1\n'
                    'y{mesh="default",kuma_proxy_role="sidecar"} 2\n')


def test_a_scrape_merges_envoy_and_the_applications_and_survives_one_that_fails():
    config = {"observability": {"metrics": {
        "applications": [{"path": "/metrics", "port": 1, "address": ""}, {"path": "/m", "port": 2, "address": ""}],
        "sidecar": {"includeUnused": True, "profiles": {"appendProfiles": [{"name": "None"}]}},
        "extraLabels": {"dataplane": "web-1"}}}}
    queries = []

    def envoy(query: str) -> str:
        queries.append(query)
        return ENVOY

    def app(address: str, port: int, path: str) -> str:
        if port == 2:
            raise OSError("connection refused")
        return "# TYPE orders_total counter\norders_total 7\n"

    assert meshmetric_scrape(config, envoy, app) == '# TYPE orders_total counter\norders_total{dataplane="web-1"} 7\n'
    assert queries == ["text_readouts"]   # includeUnused: no usedonly


def test_otlp_conversion_keeps_kinds_and_turns_cumulative_buckets_into_per_bucket_counts():
    from appliance.dp.otel import to_otlp

    families = prom_text.parse(ENVOY)
    request = to_otlp(families, {"mesh": "default"}, now_ns=2_000, start_ns=1_000)
    metrics = {m.name: m for m in request.resource_metrics[0].instrumentation_library_metrics[0].metrics}
    rq = metrics["envoy_cluster_upstream_rq_total"]
    assert rq.sum.is_monotonic and [p.as_double for p in rq.sum.data_points] == [3.0, 9.0, 1.0]
    assert {a.key: a.value.string_value for a in rq.sum.data_points[0].attributes} == {
        "envoy_cluster_name": "backend", "mesh": "default"}
    assert metrics["envoy_server_live"].gauge.data_points[0].as_double == 1.0
    point = metrics["envoy_cluster_upstream_rq_time"].histogram.data_points[0]
    assert (list(point.explicit_bounds), list(point.bucket_counts), point.count, point.sum) == ([0.5], [1, 2], 3, 4.5)
    assert point.start_time_unix_nano == 1_000 and point.time_unix_nano == 2_000


def test_mesh_metrics_scrape_appends_the_aggregate_applications_as_they_are():
    from appliance.dp.metrics import legacy_scrape

    def app(address: str, port: int, path: str) -> str:
        if port == 2:
            raise OSError("refused")
        return 'app_up{path="' + path + '"} 1'

    assert legacy_scrape("envoy_server_live 1\n", [{"name": "a", "address": "10.0.0.1", "port": 1, "path": "/m"},
                                                  {"name": "b", "port": 2}], app) == \
        'envoy_server_live 1\napp_up{path="/m"} 1\n'
