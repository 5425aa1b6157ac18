"""MeshMetric over the REST API: stored, read back, listed, refused with Kuma's field and message."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import live_api


@pytest.fixture
def api(tmp_path: Path):
    with live_api(tmp_path, defaults=True) as a:
        yield a


def _metric(**default) -> dict:
    return {"type": "MeshMetric", "name": "metrics", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "default": default}}


def test_meshmetric_is_served_with_kumas_defaults(api) -> None:
    r = api.put("/meshes/default/meshmetrics/metrics", _metric(backends=[{"type": "Prometheus", "prometheus": {}}]))
    assert r.status_code == 201, r.text
    assert "warnings" not in r.json() or r.json()["warnings"] == []
    got = api.get("/meshes/default/meshmetrics/metrics").json()
    assert got["spec"]["default"]["backends"] == [{"type": "Prometheus",
                                                   "prometheus": {"path": "/metrics", "port": 5670}}]
    assert [i["name"] for i in api.get("/meshes/default/meshmetrics").json()["items"]] == ["metrics"]
    assert any(t["name"] == "MeshMetric" for t in api.get("/_resources").json()["resources"])


def test_a_bad_meshmetric_is_a_400_naming_the_field(api) -> None:
    r = api.put("/meshes/default/meshmetrics/metrics",
                _metric(backends=[{"type": "Prometheus", "prometheus": {"port": 95599}}]))
    assert r.status_code == 400
    assert r.json()["invalid_parameters"] == [{"field": "spec.default.backends.backend[0].port",
                                               "reason": "port must be a valid (1-65535)"}]


def test_an_opentelemetry_backend_by_reference_is_stored_with_a_warning(api) -> None:
    r = api.put("/meshes/default/meshmetrics/metrics", _metric(backends=[
        {"type": "OpenTelemetry", "openTelemetry": {"backendRef": {"kind": "MeshOpenTelemetryBackend",
                                                                   "labels": {"kuma.io/display-name": "otel"}}}}]))
    assert r.status_code == 201, r.text
    assert any("backendRef' is stored but not yet applied" in w for w in r.json()["warnings"])
