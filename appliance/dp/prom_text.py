"""Prometheus text format (0.0.4) for kuma-dp's metrics hijacker: parse into families, filter, label, render.

Pure functions, no I/O. What is filtered and how follows kuma-dp 2.14 (app/kuma-dp/pkg/dataplane/metrics):
a MeshMetric's profiles (All, Basic, None) and include/exclude selectors choose Envoy's metric families,
the Basic profile drops samples of Kuma's internal clusters and listeners, and every sample gets the
MeshMetric's extra labels (their names made Prometheus-safe, `kuma.proxy_role` -> `kuma_proxy_role`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

Selector = Callable[[str], bool]

_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?\s*$")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")
ENTITY_LABELS = ("envoy_cluster_name", "envoy_http_conn_manager_prefix", "envoy_listener_address")


@dataclass
class Family:
    name: str
    help: str = ""
    type: str = ""
    samples: list[str] = field(default_factory=list)   # sample lines as read, e.g. 'x{a="b"} 1'


def parse(text: str) -> list[Family]:
    """Families in the order met; a sample without HELP/TYPE starts a family of its own name."""
    families: dict[str, Family] = {}
    order: list[Family] = []

    def family(name: str) -> Family:
        found = families.get(name)
        if found is None:
            found = families[name] = Family(name)
            order.append(found)
        return found

    current: Family | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = family(parts[2])
                value = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    current.help = value
                else:
                    current.type = value
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name = match.group(1)
        if current is None or not _belongs(name, current.name):
            current = family(name)
        current.samples.append(line)
    return order


def _belongs(sample: str, family: str) -> bool:
    return sample == family or any(sample == family + s for s in _SUFFIXES)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def label_name(name: str) -> str:
    return _LABEL_CHARS.sub("_", name)


def with_labels(sample: str, labels: dict[str, str]) -> str:
    """A sample line with `labels` added; a label the sample has already keeps its own value."""
    match = _SAMPLE.match(sample)
    if match is None or not labels:
        return sample
    name, own, value, timestamp = match.group(1), match.group(2) or "", match.group(3), match.group(4) or ""
    inner = own[1:-1].strip().rstrip(",")
    present = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"', inner))
    added = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items() if k not in present)
    joined = ",".join(p for p in (inner, added) if p)
    return f"{name}{{{joined}}} {value}{timestamp}"


def sample_name(sample: str) -> str:
    match = _SAMPLE.match(sample)
    return match.group(1) if match else ""


def sample_value(sample: str) -> float:
    """The sample's value; NaN when the line is not a sample (parse keeps only samples)."""
    match = _SAMPLE.match(sample)
    try:
        return float(match.group(3)) if match else float("nan")
    except ValueError:
        return float("nan")


def sample_labels(sample: str) -> dict[str, str]:
    match = _SAMPLE.match(sample)
    if match is None or not match.group(2):
        return {}
    return {k: v for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"', match.group(2))}


def render(families: Iterable[Family], labels: dict[str, str] | None = None) -> str:
    safe = {label_name(k): v for k, v in (labels or {}).items()}
    lines = []
    for f in families:
        if not f.samples:
            continue
        if f.help:
            lines.append(f"# HELP {f.name} {f.help}")
        if f.type:
            lines.append(f"# TYPE {f.name} {f.type}")
        lines += [with_labels(s, safe) for s in f.samples]
    return "\n".join(lines) + ("\n" if lines else "")


# --- MeshMetric profiles (profiles.go) ---------------------------------------------------------

def selector(kind: str, match: str) -> Selector:
    if kind == "Contains":
        return lambda v: match in v
    if kind == "Prefix":
        return lambda v: v.startswith(match)
    if kind == "Exact":
        return lambda v: v == match
    if kind == "Regex":
        try:
            compiled = re.compile(match)
        except re.error:   # validation refuses these; never select on one that slipped through
            return lambda v: False
        return lambda v: compiled.search(v) is not None
    return lambda v: False


_CONTAINS = ("rq_time", "cx_length_ms", "cx_count", "_rq", "bytes", "timeout", "health_check", "lb_healthy_panic",
             "cx_destroy", "error", "fail", "reset", "eject", "overflow", "cancelled", "max_duration_reached",
             "no_cluster", "no_route", "no_filter_chain", "reject", "denied", "days_until_first_cert_expiring",
             "rbac", "cx_active", "cx_connect", "circuit_breakers", "cx_total", "ssl_handshake",
             "ssl_context_update_by_sds")
_EXACT = ("envoy_cluster_membership_degraded", "envoy_cluster_membership_healthy", "envoy_cluster_ssl_handshake",
          "envoy_cluster_membership_total")
_PREFIX = ("envoy_server", "envoy_control_plane", "envoy_dns_filter", "envoy_dns_cares", "kuma_dp_dns")
BASIC: tuple[Selector, ...] = (*(selector("Contains", m) for m in _CONTAINS), *(selector("Exact", m) for m in _EXACT),
                               *(selector("Prefix", m) for m in _PREFIX))
# Samples of these entities (Kuma's own clusters and listeners) are left out by the Basic profile.
BASIC_INTERNAL: tuple[Selector, ...] = (
    selector("Prefix", "system_"), selector("Prefix", "_"), selector("Exact", "ads_cluster"),
    selector("Exact", "access_log_sink"), selector("Exact", "kuma:envoy:admin"),
    selector("Exact", "kuma:metrics:hijacker"), selector("Prefix", "_kuma:metrics:opentelemetry"),
    selector("Prefix", "tracing"))
_BROADEST_FIRST = {"All": 0, "Basic": 1, "None": 2}


def profile_filter(sidecar: dict[str, Any] | None) -> Callable[[list[Family]], list[Family]]:
    """ProfileMutatorGenerator: the Envoy families a MeshMetric's `sidecar.profiles` publishes."""
    profiles = ((sidecar or {}).get("profiles") or {})
    names = sorted((p.get("name", "") for p in profiles.get("appendProfiles") or []),
                   key=lambda n: _BROADEST_FIRST.get(n, 3))
    effective = names[0] if names else "Basic"
    chosen: tuple[Selector, ...] = {"All": (lambda v: True,), "Basic": BASIC, "None": ()}.get(effective, ())
    exclude = [selector(s.get("type", ""), s.get("match", "")) for s in profiles.get("exclude") or []]
    include = [selector(s.get("type", ""), s.get("match", "")) for s in profiles.get("include") or []]

    def keep(family: Family) -> bool:
        wanted = any(s(family.name) for s in chosen)
        if any(s(family.name) for s in exclude):
            wanted = False
        if any(s(family.name) for s in include):   # include takes precedence over exclude
            wanted = True
        return wanted

    def internal(sample: str) -> bool:
        return any(k in ENTITY_LABELS and any(s(v) for s in BASIC_INTERNAL) for k, v in sample_labels(sample).items())

    def apply(families: list[Family]) -> list[Family]:
        out = []
        for f in families:
            if effective == "Basic":
                f = Family(f.name, f.help, f.type, [s for s in f.samples if not internal(s)])
                if not f.samples:
                    continue
            if keep(f):
                out.append(f)
        return out

    return apply
