"""The labels Kuma gives a dataplane's metrics: mads.DataplaneLabels and MeshMetric's extraLabels.

Shared by the MeshMetric plugin (labels kuma-dp adds to what it publishes) and the monitoring assignment
server (labels of each scrape target)."""
from __future__ import annotations

import re
from typing import Iterable

from appliance.model.proxy import Proxy

_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
ZONE_TAG = "kuma.io/zone"
WORKLOAD_LABEL = "kuma.io/workload"


def sanitize_label_name(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


def dataplane_labels(tag_sets: Iterable[dict[str, str]]) -> dict[str, str]:
    """Each tag as a label (its first value) and its plural as `,v1,v2,` (every value, sorted), keys in
    sorted order so that a user's own plural tag wins over the generated one, as in Kuma."""
    values: dict[str, set[str]] = {}
    for tags in tag_sets:
        for key, value in tags.items():
            values.setdefault(key, set()).add(value)
    out: dict[str, str] = {}
    for key in sorted(values):
        ordered = sorted(values[key])
        out[sanitize_label_name(key)] = ordered[0] if ordered else ""
        out[sanitize_label_name(f"{key}s")] = "," + ",".join(ordered) + ","
    return out


def extra_labels(proxy: Proxy) -> dict[str, str]:
    """What kuma-dp adds to every metric it publishes for MeshMetric (without unified naming)."""
    labels = {"mesh": proxy.mesh, "kuma.proxy_role": "sidecar"}
    if proxy.labels.get(ZONE_TAG):
        labels["zone"] = proxy.labels[ZONE_TAG]
    if proxy.labels.get(WORKLOAD_LABEL):
        labels["kuma.workload"] = proxy.labels[WORKLOAD_LABEL]
    labels.update(dataplane_labels(i.tags for i in proxy.inbounds))
    labels["dataplane"] = proxy.name
    if "kuma.workload" not in labels and proxy.inbounds and proxy.inbounds[0].service:
        labels["service"] = proxy.inbounds[0].service
    return dict(sorted(labels.items()))
