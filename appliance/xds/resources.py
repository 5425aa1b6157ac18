"""xDS type URLs, and generated resources packed once with their content hash as version."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message
from appliance.model.names import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TYPE_ORDER, Resources

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "PUSH_ORDER", "Packed", "ROUTE", "Resources", "SECRET", "SHORT",
           "WILDCARD_TYPES", "pack", "pack_all", "type_version"]

# Make-before-break on one ADS stream: secrets before what uses them, clusters before endpoints
# before listeners before routes (STACK-NOTES, "The xDS protocol").
PUSH_ORDER = TYPE_ORDER
WILDCARD_TYPES = (LISTENER, CLUSTER)
SHORT = {LISTENER: "LDS", CLUSTER: "CDS", ENDPOINT: "EDS", ROUTE: "RDS", SECRET: "SDS"}


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
