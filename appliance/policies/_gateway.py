"""What the route policies share on builtin gateways (Kuma 2.14's matchers.DppSelectedByPolicy for kind
MeshGateway): which MeshGateway configures a gateway proxy, and which policies apply to one of its listeners."""
from __future__ import annotations

from typing import Any, Iterator

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
    tags = listener_tags(proxy, gateway, listener)
    for policy in _rules.sort_policies(policies):
        ref = _rules.top_ref(policy)
        if ref.get("kind") != "MeshGateway" or ref.get("name") != gateway.name:
            continue
        if not all(k in tags and (tags[k] == v or v == "*") for k, v in (ref.get("tags") or {}).items()):
            continue
        yield from (e for e in policy.spec.get("to") or [] if (e.get("targetRef") or {}).get("kind") == "Mesh")
