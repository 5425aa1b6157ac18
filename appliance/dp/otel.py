"""kuma-dp's OpenTelemetry push (MeshMetric `backends[].openTelemetry`): what the hijacker would publish, as OTLP.

Every `refreshInterval` the pusher gathers Envoy's metrics (profiles applied) and the applications', with the
MeshMetric's extra labels as attributes, and calls the collector's
`opentelemetry.proto.collector.metrics.v1.MetricsService/Export` over gRPC through the Unix socket the control
plane gave Envoy a listener on (Envoy forwards to the collector). `to_otlp` is pure; `Pusher` is the I/O.
Prometheus counters become cumulative monotonic sums, gauges gauges, histograms histograms (explicit
bounds from `le`), summaries summaries.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from appliance.dp import prom_text
from appliance.gocompat import parse_seconds

log = logging.getLogger("kuma-dp")

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
IDLE_CHECK = 5.0        # how often the settings are read while no backend is due
EXPORT_TIMEOUT = 10.0


def _attributes(labels: dict[str, str]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in sorted(labels.items())]


_value = prom_text.sample_value
_name = prom_text.sample_name


def to_otlp(families: list[prom_text.Family], labels: dict[str, str], now_ns: int,
            start_ns: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().instrumentation_library_metrics.add()
    scope.instrumentation_library.name = "kuma-dp"
    for family in families:
        metric = scope.metrics.add(name=family.name, description=family.help)
        if family.type == "histogram":
            _histogram(metric, family, labels, now_ns, start_ns)
        elif family.type == "summary":
            _summary(metric, family, labels, now_ns, start_ns)
        else:
            if family.type == "counter":
                metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                metric.sum.is_monotonic = True
                points = metric.sum.data_points
            else:
                points = metric.gauge.data_points
            for sample in family.samples:
                point = points.add(time_unix_nano=now_ns, as_double=_value(sample))
                if family.type == "counter":
                    point.start_time_unix_nano = start_ns
                point.attributes.extend(_attributes({**labels, **prom_text.sample_labels(sample)}))
    return request


def _series(family: prom_text.Family, skip: str) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    for sample in family.samples:
        own = prom_text.sample_labels(sample)
        key = tuple(sorted((k, v) for k, v in own.items() if k != skip))
        out.setdefault(key, []).append(sample)
    return out


def _histogram(metric: Any, family: prom_text.Family, labels: dict[str, str], now_ns: int, start_ns: int) -> None:
    metric.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for key, samples in _series(family, "le").items():
        point = metric.histogram.data_points.add(time_unix_nano=now_ns, start_time_unix_nano=start_ns)
        point.attributes.extend(_attributes({**labels, **dict(key)}))
        buckets = []
        for sample in samples:
            name = _name(sample)
            if name.endswith("_bucket"):
                buckets.append((float(prom_text.sample_labels(sample)["le"]), _value(sample)))
            elif name.endswith("_sum"):
                point.sum = _value(sample)
            elif name.endswith("_count"):
                point.count = int(_value(sample))
        buckets.sort()
        previous = 0.0
        for bound, cumulative in buckets:   # Prometheus' cumulative buckets -> OTLP's per-bucket counts
            point.bucket_counts.append(int(cumulative - previous))
            previous = cumulative
            if bound != float("inf"):
                point.explicit_bounds.append(bound)
        if buckets and buckets[-1][0] != float("inf"):
            point.bucket_counts.append(max(0, point.count - int(previous)))


def _summary(metric: Any, family: prom_text.Family, labels: dict[str, str], now_ns: int, start_ns: int) -> None:
    for key, samples in _series(family, "quantile").items():
        point = metric.summary.data_points.add(time_unix_nano=now_ns, start_time_unix_nano=start_ns)
        point.attributes.extend(_attributes({**labels, **dict(key)}))
        for sample in samples:
            name = _name(sample)
            if name.endswith("_sum"):
                point.sum = _value(sample)
            elif name.endswith("_count"):
                point.count = int(_value(sample))
            elif "quantile" in prom_text.sample_labels(sample):
                point.quantile_values.add(quantile=float(prom_text.sample_labels(sample)["quantile"]),
                                          value=_value(sample))


# (MeshMetric settings) -> (families, extra labels) that a scrape would publish now
Gather = Callable[[dict[str, Any]], tuple[list[prom_text.Family], dict[str, str]]]


class Pusher:
    """Pushes to each OpenTelemetry backend the current MeshMetric settings name, each at its own interval."""

    def __init__(self, settings: Callable[[], dict[str, Any] | None], gather: Gather) -> None:
        self.settings = settings
        self.gather = gather
        self.started_ns = time.time_ns()
        self._due: dict[str, float] = {}          # backend socket -> when it is next pushed to
        self._channels: dict[str, grpc.Channel] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-pusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=EXPORT_TIMEOUT + 1)
        for channel in self._channels.values():
            channel.close()

    def _backends(self, config: dict[str, Any] | None) -> dict[str, float]:
        metrics = ((config or {}).get("observability") or {}).get("metrics") or {}
        out = {}
        for backend in metrics.get("backends") or []:
            otel = backend.get("openTelemetry") or {}
            if backend.get("type") == "OpenTelemetry" and otel.get("endpoint"):
                try:
                    out[otel["endpoint"]] = max(parse_seconds(otel.get("refreshInterval") or "1m"), 0.1)
                except ValueError:
                    out[otel["endpoint"]] = 60.0
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                config = self.settings()
                wait = self._push_due(config, self._backends(config))
            except Exception:   # a bad scrape must not end the pushes
                log.exception("OpenTelemetry push failed")
                wait = IDLE_CHECK
            self._stop.wait(wait)

    def _push_due(self, config: dict[str, Any] | None, backends: dict[str, float]) -> float:
        now = time.monotonic()
        for gone in set(self._due) - set(backends):
            del self._due[gone]
            channel = self._channels.pop(gone, None)
            if channel is not None:
                channel.close()
        due = [s for s in backends if self._due.get(s, 0.0) <= now]
        if due and config is not None:
            families, labels = self.gather(config)
            request = to_otlp(families, labels, time.time_ns(), self.started_ns)
            for socket_path in due:
                self._due[socket_path] = now + backends[socket_path]
                self._export(socket_path, request)
        if not backends:
            return IDLE_CHECK
        return max(0.05, min(min(self._due.values()) - time.monotonic(), IDLE_CHECK))

    def _export(self, socket_path: str, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        channel = self._channels.get(socket_path)
        if channel is None:
            channel = self._channels[socket_path] = grpc.insecure_channel("unix:" + socket_path)
        export = channel.unary_unary(EXPORT, request_serializer=metrics_service_pb2.ExportMetricsServiceRequest.SerializeToString,
                                     response_deserializer=metrics_service_pb2.ExportMetricsServiceResponse.FromString)
        try:
            export(request, timeout=EXPORT_TIMEOUT)
        except grpc.RpcError as e:
            log.warning("OpenTelemetry push to %s failed: %s", socket_path, e.code() if hasattr(e, "code") else e)
