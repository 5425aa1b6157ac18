"""`to[].targetRef`s of kind MeshService on the outbounds to MeshService ports (model/destinations.py).

Kuma 2.14 resolves such a targetRef to the real MeshServices it names (resolve.TargetRef): by `name`, or by
`labels` (every MeshService carrying them), all their ports, or the one whose name is `sectionName`. Here each
port it names becomes a group of its own (`kuma.io/service` = the port's legacy name, which is the `service`
of its outbound), beside the kuma.io/service group the same targetRef has always meant, so every plugin that
computes its `to` rules for an outbound's service finds the entries for a MeshService outbound too.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from appliance.model.names import SERVICE_TAG

if TYPE_CHECKING:   # policies import nothing of core/, which model/destinations reads from
    from appliance.model.destinations import Destination
Subset = tuple[tuple[str, str, bool], ...]


def named(ref: Mapping[str, Any], destinations: Mapping[str, Destination] | None) -> list[Destination]:
    """The MeshService ports a targetRef of kind MeshService names."""
    if not destinations or ref.get("kind") != "MeshService":
        return []
    labels = ref.get("labels") or {}
    name, section = ref.get("name") or "", ref.get("sectionName") or ""
    out = []
    for destination in destinations.values():
        if labels:
            have = dict(destination.labels)
            if not all(have.get(k) == v for k, v in labels.items()):
                continue
        elif destination.service != name:
            continue
        if not section or destination.section == section:
            out.append(destination)
    return out


def subsets(ref: Mapping[str, Any], destinations: Mapping[str, Destination] | None) -> list[Subset]:
    return [((SERVICE_TAG, d.name, False),) for d in named(ref, destinations)]
