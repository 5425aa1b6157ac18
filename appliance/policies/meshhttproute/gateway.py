"""MeshHTTPRoute on a builtin gateway: which rules each listener's virtual hosts get (Kuma 2.14's
meshhttproute gateway_routes.go).

- A policy applies to a gateway listener when its top-level targetRef is `{kind: MeshGateway, name: <gateway>}`
  and its `tags` (if any) match the listener's tags (policies/_gateway.py).
- Its `to[]` entries (targetRef Mesh) bring their rules for their `hostnames` ("*" when none). A listener for
  hostname H gets one virtual host per hostname R of those rules that H and R have in common: named H when R
  covers H, else R; a virtual host takes the rules of every hostname that covers it.
- Rules of several policies merge as on sidecars (`merge_rules`, in precedence order) and become routes as on
  sidecars (`routes_for`), without the catch-all to a service: a gateway has no service of its own, and a
  request no route matches is answered 404 by Envoy. A listener without any rule answers 404 to everything.
"""
from __future__ import annotations

from dataclasses import dataclass

from appliance.model.proxy import GatewayListener, MeshGateway, MeshSnapshot, Proxy
from appliance.policies._gateway import to_entries_by_policy
from appliance.policies.meshhttproute.plugin import KIND, OutboundRoutes, merge_rules, routes_for

WILDCARD = "*"


@dataclass(frozen=True)
class VirtualHost:
    hostname: str
    routes: OutboundRoutes
    origins: tuple[str, ...] = ()   # the MeshHTTPRoutes whose rules it holds, sorted (Kuma's route entry name)


# --- hostnames (Kuma's runtime/gateway/match/hostnames.go) ------------------------------------------------

def _parts(name: str) -> tuple[str, list[str]]:
    host, *domain = (name or WILDCARD).split(".")
    return host, domain


def contains(broader: str, name: str) -> bool:
    """Whether every host `name` matches is matched by `broader` ("*" and "*.example.com" are wildcards)."""
    (b_host, b_domain), (n_host, n_domain) = _parts(broader), _parts(name)
    if len(b_domain) > len(n_domain) or (b_domain and n_domain[-len(b_domain):] != b_domain):
        return False
    return b_host == WILDCARD or b_host == n_host


def _overlap(a: str, b: str) -> bool:
    return a == b or contains(a, b) or contains(b, a)


def hostname_order(hostname: str) -> tuple[int, int, str]:
    """Most exact first: names without a wildcard, then longer (more labels) names."""
    return (hostname.startswith(WILDCARD), -hostname.count("."), hostname)


def virtual_hosts(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                  listeners: list[GatewayListener]) -> tuple[VirtualHost, ...]:
    """The virtual hosts of the listeners that share one port, most exact hostname first."""
    out: dict[str, VirtualHost] = {}
    taken: list[str] = []   # hostnames of listeners already done: their hosts are theirs (Kuma's observedHostnames)
    for listener in sorted(listeners, key=lambda l: hostname_order(l.hostname)):
        # (policy, hostnames, `to` entry), in precedence order
        entries = [(policy, list(e.get("hostnames") or [WILDCARD]), e)
                   for policy, e in to_entries_by_policy(snapshot.policies.get(KIND, ()), proxy, gateway, listener)]
        matches: list[str] = []
        for hostname in (h for _, hostnames, _ in entries for h in hostnames):
            if _overlap(listener.hostname, hostname):
                found = listener.hostname if contains(hostname, listener.hostname) else hostname
                if found not in matches:
                    matches.append(found)
        for host in matches or [listener.hostname]:
            if host in out or any(contains(t, host) for t in taken):
                continue
            covering = [(policy, e) for policy, hostnames, e in entries if any(contains(h, host) for h in hostnames)]
            confs = ({"rules": list(reversed(e.get("rules") or []))} for _, e in covering)
            out[host] = VirtualHost(host, routes_for(snapshot, "", merge_rules(confs)["rules"]),
                                    tuple(sorted({policy for policy, _ in covering})))
        taken.append(listener.hostname)
    return tuple(sorted(out.values(), key=lambda v: hostname_order(v.hostname)))
