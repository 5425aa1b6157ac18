"""The control plane's own metrics: counters, histograms and summaries with labels, in one process-wide registry.

A leaf (imports nothing of ours), so that every layer records where things happen: the xDS cache (generation
time), the xDS server (responses, ACK/NACK, delivery), the API (request counts and durations), the store
(operation durations) and the identity provider (certificates). runtime/metrics.py renders them on the
diagnostics port. Names, labels and units are Kuma 2.14's where Kuma has the metric (pkg/xds/metrics,
pkg/util/xds/stats_callbacks.go, pkg/metrics/store, pkg/xds/secrets, go-http-metrics with prefix api_server).
Kuma's summaries carry quantiles; ours carry only `_sum` and `_count` (a valid Prometheus summary): the
rate of the two gives the mean, and the histograms give the distributions.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator

# Prometheus' client default buckets (seconds), as Kuma's histograms use them
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


def _labels(names: tuple[str, ...], values: LabelValues, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = [*zip(names, values), *extra]
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


class _Family:
    kind = ""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = labels
        self._lock = threading.Lock()

    def _key(self, values: tuple[str, ...]) -> LabelValues:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
        return tuple(str(v) for v in values)

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> list[str]:
        samples = self.samples()
        if not samples:
            return []
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *samples]


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + by

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def add(self, by: float, *labels: str) -> None:
        self.inc(*labels, by=by)


class Summary(_Family):
    kind = "summary"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, list[float]] = {}   # [sum, count]

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            found = self._values.setdefault(key, [0.0, 0.0])
            found[0] += value
            found[1] += 1

    def count(self, *labels: str) -> float:
        return self._values.get(self._key(labels), [0.0, 0.0])[1]

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._values.items())
        out = []
        for key, (total, count) in items:
            out += [f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}",
                    f"{self.name}_count{_labels(self.label_names, key)} {_number(count)}"]
        return out


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help, labels)
        self.buckets = (*sorted(buckets), math.inf)
        self._values: dict[LabelValues, tuple[list[int], list[float]]] = {}   # per-bucket counts, [sum]

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * len(self.buckets), [0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            total[0] += value

    def count(self, *labels: str) -> int:
        found = self._values.get(self._key(labels))
        return sum(found[0]) if found else 0

    @contextmanager
    def time(self, *labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, *labels)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._values.items())
        out = []
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip(self.buckets, counts):
                running += count
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, (('le', _number(bound)),))} {running}")
            out += [f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}",
                    f"{self.name}_count{_labels(self.label_names, key)} {running}"]
        return out


# --- Kuma 2.14's families ------------------------------------------------------------------------

XDS_GENERATION = Summary("xds_generation", "Summary of XDS Snapshot generation", ("proxy_type", "result"))   # ms
XDS_GENERATION_ERRORS = Counter("xds_generation_errors", "Counter of errors during XDS generation")
XDS_RESPONSES_SENT = Counter("xds_responses_sent", "Number of responses sent by the server to a client",
                             ("type_url",))
XDS_REQUESTS_RECEIVED = Counter("xds_requests_received", "Number of confirmations requests from a client",
                                ("type_url", "confirmation", "error_type"))
# milliseconds, as Kuma observes it; buckets fit for milliseconds (Kuma keeps the client's default ones)
XDS_DELIVERY = Histogram("xds_delivery", "Summary of config delivery including a response (ACK/NACK) from the client",
                         buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
API_REQUEST_DURATION = Histogram("api_server_http_request_duration_seconds",
                                 "The latency of the HTTP requests.", ("code", "handler", "method"))
API_REQUESTS_INFLIGHT = Gauge("api_server_http_requests_inflight",
                              "The number of inflight requests being handled at the same time.", ("handler",))
STORE = Summary("store", "Summary of Store operations", ("operation", "resource_type"))   # seconds
STORE_CONFLICTS = Counter("store_conflicts", "Counter of store conflicts while update", ("resource_type",))
CERT_GENERATION = Counter("cert_generation", "Number of generated certificates", ("mesh",))
CERT_GENERATION_FAILURE = Counter("cert_generation_failure", "Number of failed certificate generations", ("mesh",))
CA_GET_CERT = Summary("ca_manager_get_cert", "Summary of CA manager get certificate latencies",
                      ("backend_name",))   # ms

FAMILIES: tuple[_Family, ...] = (
    XDS_GENERATION, XDS_GENERATION_ERRORS, XDS_RESPONSES_SENT, XDS_REQUESTS_RECEIVED, XDS_DELIVERY,
    API_REQUEST_DURATION, API_REQUESTS_INFLIGHT, STORE, STORE_CONFLICTS, CERT_GENERATION, CERT_GENERATION_FAILURE,
    CA_GET_CERT,
)


def render() -> list[str]:
    out: list[str] = []
    for family in FAMILIES:
        out += family.render()
    return out
