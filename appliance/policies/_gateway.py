"""What the policies share on builtin gateways (Kuma 2.14's matchers.DppSelectedByPolicy with a MeshGateway):
which MeshGateway configures a gateway proxy, which policies apply to one of its listeners, and what of the
generated resources belongs to each port (`GatewayPort`, what the plugins' `apply_to_gateway` edit)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from appliance.model.proxy import GatewayListener, MeshGateway, Policy, Proxy
from appliance.policies import _rules


def select_gateway(gateways: tuple[MeshGateway, ...], tags: dict[str, str]) -> MeshGateway | None:
    """The MeshGateway that configures a gateway proxy with these tags: the one whose matching selector has the
    most tags (Kuma's policy.SelectDataplanePolicy); on a tie, the first by name."""
    best, best_rank = None, -1
    for gateway in gateways:
        for selector in gateway.selectors:
            if selector and all(k in tags and (tags[k] == v or v == "*") for k, v in selector.items()):
                if len(selector) > best_rank:
                    best, best_rank = gateway, len(selector)
    return best


def listener_tags(proxy: Proxy, gateway: MeshGateway, listener: GatewayListener) -> dict[str, str]:
    """What a policy's `targetRef.tags` is matched against: the proxy's gateway tags, over them the MeshGateway's,
    over those the listener's own."""
    return {**(proxy.gateway_tags or {}), **gateway.tags, **listener.tags}


def to_entries(policies: tuple[Policy, ...], proxy: Proxy, gateway: MeshGateway,
               listener: GatewayListener) -> Iterator[dict[str, Any]]:
    """The `to[]` entries (targetRef Mesh) of the policies whose top-level targetRef is this gateway and whose
    `tags` match this listener, in precedence order (later ones win when confs merge)."""
    return (entry for _, entry in to_entries_by_policy(policies, proxy, gateway, listener))


def to_entries_by_policy(policies: tuple[Policy, ...], proxy: Proxy, gateway: MeshGateway,
                         listener: GatewayListener) -> Iterator[tuple[str, dict[str, Any]]]:
    """`to_entries`, each with the name of its policy (what the inspect API names a gateway's routes by)."""
    tags = listener_tags(proxy, gateway, listener)
    for policy, ref in _rules.in_precedence_order(policies):
        if ref.get("kind") != "MeshGateway" or ref.get("name") != gateway.name:
            continue
        if not _rules.tags_match(ref.get("tags") or {}, tags):
            continue
        yield from ((policy.name, e) for e in policy.spec.get("to") or []
                    if (e.get("targetRef") or {}).get("kind") == "Mesh")


@dataclass(frozen=True)
class GatewayPort:
    """One port of a builtin gateway as generated: Kuma keys its gateway rules by (address, port)."""
    port: int
    protocol: str                          # HTTP, HTTPS, TCP, TLS
    listener: str                          # the Envoy listener's name
    route_configs: tuple[str, ...]         # its route configurations (HTTP/HTTPS)
    backends: tuple[tuple[str, str], ...]  # (service, cluster) its routes send to


def _selects_listener(ref: dict[str, Any], tags: dict[str, str], gateway: MeshGateway) -> bool:
    kind = ref.get("kind")
    if kind in ("Mesh", "MeshSubset"):
        proxy_types = ref.get("proxyTypes") or []
        selector = (ref.get("tags") or {}) if kind == "MeshSubset" else {}
        return (not proxy_types or "Gateway" in proxy_types) and _rules.tags_match(selector, tags)
    if kind in ("MeshService", "MeshServiceSubset"):
        selector = {**((ref.get("tags") or {}) if kind == "MeshServiceSubset" else {}),
                    _rules.SERVICE_TAG: ref.get("name") or ""}
        return _rules.tags_match(selector, tags)
    if kind == "MeshGateway":
        return ref.get("name") == gateway.name and _rules.tags_match(ref.get("tags") or {}, tags)
    return False   # Dataplane never selects a builtin gateway; MeshHTTPRoute is not applied (the API warns)


def port_policies(policies: Sequence[Policy], proxy: Proxy, gateway: MeshGateway, port: int) -> list[Policy]:
    """The policies whose top-level targetRef selects a listener of the gateway on this port (by its tags,
    see `listener_tags`), in precedence order: Kuma's matchers.inboundsSelectedByTags for a builtin gateway."""
    listeners = [l for l in gateway.listeners if l.port == port]
    return [p for p, ref in _rules.in_precedence_order(policies)
            if any(_selects_listener(ref, listener_tags(proxy, gateway, l), gateway) for l in listeners)]


def gateway_policies(policies: Sequence[Policy], proxy: Proxy, gateway: MeshGateway) -> list[Policy]:
    """The policies whose top-level targetRef selects any listener of the gateway, in precedence order: what
    applies to the gateway proxy as a whole (Kuma's MatchedPolicies for it: its SingleItemRules, its rules in the
    inspect API)."""
    return [p for p, ref in _rules.in_precedence_order(policies)
            if any(_selects_listener(ref, listener_tags(proxy, gateway, l), gateway) for l in gateway.listeners)]
