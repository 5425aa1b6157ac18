"""MeshTLS on a sidecar: the mTLS mode of its inbounds and the TLS versions and ciphers of its mesh traffic.

As Kuma 2.14 (plugin/v1alpha1/plugin.go), with `from[]` read as rules that match every client (the policy's
`is_from_as_rules`), and only while the mesh has mTLS on (without it the policy does nothing, as in Kuma):
- `mode` per inbound, over the mesh's (a PERMISSIVE backend makes the default Permissive, else Strict):
  Strict keeps the mesh mTLS filter chain alone; Permissive adds plaintext and foreign-TLS chains beside it
  (policies._envoy.set_inbound_mtls_mode, the layout the generator uses for the mesh's own mode);
- `tlsVersion` on the inbound's DownstreamTlsContext (min, max), and `tlsCiphers` there only together with
  a version (Kuma's ServerSideMTLS sets ciphers only where it made TLS parameters);
- `tlsVersion` and `tlsCiphers` on the UpstreamTlsContext of every mesh mTLS cluster the proxy calls,
  taken from its first inbound's conf (both may only come from a Mesh-wide policy, so every inbound has
  the same); clusters of external services (direct, or mTLS to the zone egress) are left alone. One
  deviation: a TLS13 minimum with a TLSAuto maximum gets a TLSv1_3 maximum upstream (see upstream_params).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from appliance.model.proxy import MeshSnapshot, Proxy
from appliance.policies import _envoy, _rules
from appliance.policies.meshtls.schema import PERMISSIVE, STRICT

KIND = "MeshTLS"

Conf = dict[str, Any]

# common_tls.ToTlsVersion; TLSAuto (and anything else) is Envoy's own default.
_PROTOCOLS = {"TLS10": common_pb2.TlsParameters.TLSv1_0, "TLS11": common_pb2.TlsParameters.TLSv1_1,
              "TLS12": common_pb2.TlsParameters.TLSv1_2, "TLS13": common_pb2.TlsParameters.TLSv1_3}


# Envoy's maximum for an upstream (client) context that leaves it at TLS_AUTO.
_CLIENT_DEFAULT_MAX = common_pb2.TlsParameters.TLSv1_2


def _protocol(version: Any) -> int:
    return _PROTOCOLS.get(version, common_pb2.TlsParameters.TLS_AUTO)


@dataclass(frozen=True)
class Matched:
    modes: dict[_rules.InboundKey, str] = field(default_factory=dict)     # Strict | Permissive per inbound
    inbound: dict[_rules.InboundKey, Conf] = field(default_factory=dict)  # the conf of each inbound
    outbound: Conf = field(default_factory=dict)      # tlsVersion / tlsCiphers for the mesh mTLS clusters
    external: frozenset[str] = frozenset()            # clusters of external services: never touched
    to_key: tuple[Any, ...] = ()


_NOTHING = Matched()


def _external_clusters(snapshot: MeshSnapshot) -> frozenset[str]:
    """Kuma's IsExternalService check, by cluster name: ExternalServices, MeshExternalServices and the
    parts of them that routes send to."""
    external = set(snapshot.external_services) | set(snapshot.mesh_external_services)
    return frozenset(external | {name for name, (owner, _) in snapshot.subsets.items() if owner in external})


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    policies = snapshot.policies.get(KIND, ())
    if snapshot.mtls is None or not policies:
        return _NOTHING
    selection = _rules.select(policies, proxy)
    mesh_mode = PERMISSIVE if snapshot.mtls.mode == "PERMISSIVE" else STRICT
    modes, confs = {}, {}
    for inbound in proxy.inbounds:
        key = _rules.inbound_key(inbound)
        rules = _rules.inbound_rules(selection.by_inbound.get(key, ()), from_as_rules=True)
        if rules and key not in confs:
            confs[key] = _rules.catch_all_conf(rules)
            modes[key] = confs[key].get("mode") or mesh_mode
    if not confs:
        return _NOTHING
    first = next(iter(confs.values()))
    outbound = {k: first[k] for k in ("tlsVersion", "tlsCiphers") if first.get(k)}
    to_key = (("tlsVersion", tuple(sorted((outbound.get("tlsVersion") or {}).items()))),
              ("tlsCiphers", tuple(outbound.get("tlsCiphers") or ()))) if outbound else ()
    return Matched(modes, confs, outbound, _external_clusters(snapshot), to_key)


def downstream_params(context: tls_pb2.DownstreamTlsContext, conf: Conf) -> None:
    """ServerSideMTLSConfigurer: min, max as given; ciphers only beside a version."""
    version = conf.get("tlsVersion")
    if version is None:
        return
    params = context.common_tls_context.tls_params
    if version.get("min") is not None:
        params.tls_minimum_protocol_version = _protocol(version["min"])
    if version.get("max") is not None:
        params.tls_maximum_protocol_version = _protocol(version["max"])
    if (version.get("min") is not None or version.get("max") is not None) and conf.get("tlsCiphers"):
        params.cipher_suites[:] = conf["tlsCiphers"]


def upstream_params(context: tls_pb2.UpstreamTlsContext, conf: Conf) -> None:
    """configureTLSParams: new TLS parameters from the ciphers and the version bounds given."""
    version, ciphers = conf.get("tlsVersion") or {}, conf.get("tlsCiphers") or []
    if not ciphers and version.get("min") is None and version.get("max") is None:
        return
    params = context.common_tls_context.tls_params
    params.Clear()
    params.SetInParent()
    params.cipher_suites.extend(ciphers)
    if version.get("min") is not None:
        params.tls_minimum_protocol_version = _protocol(version["min"])
    if version.get("max") is not None:
        params.tls_maximum_protocol_version = _protocol(version["max"])
    # Where Kuma differs from itself: `TLSAuto` leaves the maximum to Envoy, whose client maximum is TLS 1.2, so
    # Kuma's `{min: TLS13}` (stored with `max: TLSAuto`) would have every mesh client refuse every handshake.
    # Envoy's choice can only be TLS 1.3 then: say so.
    if (params.tls_minimum_protocol_version > _CLIENT_DEFAULT_MAX
            and params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLS_AUTO):
        params.tls_maximum_protocol_version = params.tls_minimum_protocol_version


def _configure_inbound(listener: listener_pb2.Listener, mode: str, conf: Conf) -> None:
    _envoy.set_inbound_mtls_mode(listener, permissive=mode == PERMISSIVE)
    chain = _envoy.mtls_chain(listener)
    if chain is None or conf.get("tlsVersion") is None:
        return
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    downstream_params(context, conf)
    chain.transport_socket.typed_config.CopyFrom(_envoy.pack(context))


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    if matched.modes:
        inbound_listeners = _envoy.listeners_by_address(resources, base_pb2.INBOUND)
        for key, mode in matched.modes.items():
            listener = inbound_listeners.get(key)
            if listener is not None:
                _configure_inbound(listener, mode, matched.inbound[key])
    if not matched.outbound:
        return
    for name, cluster in resources.get(_envoy.CLUSTER, {}).items():
        if name in matched.external or cluster.transport_socket.name != _envoy.TLS_TRANSPORT_SOCKET:
            continue   # only Kuma's own mTLS to mesh services, as Kuma's TransportSocketTLS check
        context = tls_pb2.UpstreamTlsContext()
        cluster.transport_socket.typed_config.Unpack(context)
        upstream_params(context, matched.outbound)
        cluster.transport_socket.typed_config.CopyFrom(_envoy.pack(context))
