"""A proxy's ADS stream without Envoy: a gRPC client that sends what Envoy sends after kuma-dp's bootstrap,
including the node metadata kuma-dp puts there (`dataplane.resource`)."""
from __future__ import annotations

import json
import queue

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from appliance.xds.resources import CLUSTER

DEFINITION = {"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
    "address": "127.0.0.1", "inbound": [{"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": "web"}}]}}


class Proxy:
    """One ADS stream, as Envoy opens it after kuma-dp's bootstrap: the node metadata carries
    `definition` (kuma-dp --dataplane-file; None: none), the call `token` (--dataplane-token-file)."""

    def __init__(self, port: int, ca_pem: bytes, definition: dict | None = DEFINITION,
                 token: str = "", node_id: str = "default.web-1") -> None:
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem),
                                           options=[("grpc.ssl_target_name_override", "localhost")])
        self.requests: queue.Queue = queue.Queue()
        metadata = struct_pb2.Struct()
        if definition is not None:
            metadata.update({"dataplane.resource": json.dumps(definition)})
        self.requests.put(discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id=node_id, metadata=metadata), type_url=CLUSTER))
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.responses = stub.StreamAggregatedResources(iter(self.requests.get, None),
                                                        metadata=[("authorization", token)] if token else None)
        next(self.responses)   # answered: the stream is open on the server (or refused: raises grpc.RpcError)

    def close(self) -> None:
        self.requests.put(None)
        self.responses.cancel()
        self.channel.close()
