"""Monitoring assignments as Kuma's MADS generator decides them, and Prometheus' HTTP SD form of them."""
from __future__ import annotations

from appliance.model.proxy import Policy
from appliance.xds import mads
from tests.unit.xds.scenarios import db_proxy, snapshot, web_proxy

MESH_METRICS = {"name": "prom", "type": "prometheus", "conf": {"port": 1234, "path": "/stats"}}


def test_mesh_metrics_lists_every_proxy_with_its_tags_as_labels():
    found = mads.assignments([(snapshot(metrics=MESH_METRICS), [web_proxy(), db_proxy()])], "any-client")
    assert [a.resource_name for a in found] == ["/meshes/default/dataplanes/db-1", "/meshes/default/dataplanes/web-1"]
    web = mads.resource_json(found[1])
    assert web == {"@type": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment", "mesh": "default",
                   "service": "web", "targets": [{
                       "name": "web-1", "scheme": "http", "address": "10.0.0.1:1234", "metrics_path": "/stats",
                       "labels": {"kuma_io_protocol": "http", "kuma_io_protocols": ",http,", "kuma_io_service": "web",
                                  "kuma_io_services": ",web,", "team": "frontend", "teams": ",frontend,"}}]}
    assert mads.assignments([(snapshot(), [web_proxy()])]) == []   # metrics off


def test_meshmetric_replaces_mesh_metrics_and_assigns_by_client_id():
    policies = {"MeshMetric": (
        Policy("MeshMetric", "db", {"targetRef": {"kind": "MeshService", "name": "db"}, "default": {"backends": [
            {"type": "Prometheus", "prometheus": {"clientId": "team-db", "port": 9000, "tls": {"mode": "ProvidedTLS"}}}]}}),
        Policy("MeshMetric", "web", {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"backends": [
            {"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}}]}}))}
    meshes = [(snapshot(metrics=MESH_METRICS, policies=policies), [web_proxy(), db_proxy()])]
    db = mads.assignments(meshes, "team-db")
    assert [(t.name, t.scheme, t.address, t.labels) for a in db for t in a.targets] == [
        ("db-1", "https", "10.0.0.4:9000", {})]
    # a client no backend names gets the default client's, as Kuma's FallBackNodeHash
    assert [t.name for a in mads.assignments(meshes, "prometheus-0") for t in a.targets] == ["web-1"]
    assert mads.version(db) != mads.version(mads.assignments(meshes))


def test_http_sd_labels_targets_as_kuma_sd_does():
    found = mads.assignments([(snapshot(metrics=MESH_METRICS), [web_proxy()])])
    assert mads.http_sd(found) == [{"targets": ["10.0.0.1:1234"], "labels": {
        "__meta_kuma_mesh": "default", "__meta_kuma_service": "web", "__meta_kuma_dataplane": "web-1",
        "__scheme__": "http", "__metrics_path__": "/stats",
        "__meta_kuma_label_kuma_io_protocol": "http", "__meta_kuma_label_kuma_io_protocols": ",http,",
        "__meta_kuma_label_kuma_io_service": "web", "__meta_kuma_label_kuma_io_services": ",web,",
        "__meta_kuma_label_team": "frontend", "__meta_kuma_label_teams": ",frontend,"}}]
