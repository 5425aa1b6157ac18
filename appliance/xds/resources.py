"""xDS type URLs, and generated resources packed once with their content hash as version."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break on one ADS stream: secrets before what uses them, clusters before endpoints
# before listeners before routes (STACK-NOTES, "The xDS protocol").
PUSH_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
WILDCARD_TYPES = (LISTENER, CLUSTER)
SHORT = {LISTENER: "LDS", CLUSTER: "CDS", ENDPOINT: "EDS", ROUTE: "RDS", SECRET: "SDS"}

Resources = dict[str, dict[str, Message]]


@dataclass(frozen=True)
class Packed:
    name: str
    any: any_pb2.Any
    version: str


def pack(type_url: str, name: str, message: Message) -> Packed:
    body = message.SerializeToString(deterministic=True)
    version = hashlib.blake2b(body, digest_size=8).hexdigest()
    return Packed(name, any_pb2.Any(type_url=type_url, value=body), version)


def pack_all(resources: Resources) -> dict[str, dict[str, Packed]]:
    return {t: {n: pack(t, n, m) for n, m in items.items()} for t, items in resources.items()}


def type_version(items: dict[str, Packed], names: frozenset[str] | None = None) -> str:
    """A version for a whole type (state of the world): the hash of what is sent."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(items):
        if names is None or name in names:
            h.update(name.encode())
            h.update(items[name].version.encode())
    return h.hexdigest()
