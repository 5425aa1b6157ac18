"""MeshTCPRoute on a builtin gateway: where a TCP listener sends its connections (Kuma 2.14's meshtcproute
gateway.go with runtime/gateway's TCPFilterChainGenerator).

The `to[]` entries (targetRef Mesh) of the MeshTCPRoutes that target the gateway and match the listener's tags
(policies/_gateway.py) merge as on sidecars: the most precedent policy's first rule wins whole. Its backendRefs
are the weighted backends; a listener without any gets no Envoy listener (nowhere to send the connections).
"""
from __future__ import annotations

from appliance.model.proxy import GatewayListener, MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _rules
from appliance.policies._backends import Backend, backend
from appliance.policies._gateway import to_entries
from appliance.policies.meshtcproute.plugin import KIND, conf_of


def listener_backends(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                      listener: GatewayListener) -> tuple[Backend, ...]:
    entries = to_entries(snapshot.policies.get(KIND, ()), proxy, gateway, listener)
    merged = _rules.merge(conf_of(e) for e in entries)
    refs = (merged.get("default") or {}).get("backendRefs") or []
    return tuple(found for found in map(backend, refs) if found is not None and found.weight > 0)
