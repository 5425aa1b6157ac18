"""MADS over gRPC: Kuma 2.14's `kuma.observability.v1.MonitoringAssignmentDiscoveryService/FetchMonitoringAssignments`
(api/observability/v1/mads.proto), served beside the HTTP form on the same port.

Kuma ships generated code for its protos; we describe the one message it needs (MonitoringAssignment) at
start and register it in protobuf's default pool, so that clients here can unpack it from an Any as well.
"""
from __future__ import annotations

from typing import Any, Callable

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from appliance.xds import mads

SERVICE = "kuma.observability.v1.MonitoringAssignmentDiscoveryService"
_F = descriptor_pb2.FieldDescriptorProto


def _labels_entry(message: descriptor_pb2.DescriptorProto) -> str:
    entry = message.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="key")
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="value")
    return "LabelsEntry"


def _describe() -> type[Message]:
    name = "kuma.observability.v1.MonitoringAssignment"
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(name="kuma/observability/v1/mads.proto",
                                               package="kuma.observability.v1", syntax="proto3")
    assignment = proto.message_type.add(name="MonitoringAssignment")
    target = assignment.nested_type.add(name="Target")
    for number, field in enumerate(("name", "scheme", "address", "metrics_path"), 1):
        target.field.add(name=field, number=number, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
                         json_name="metricsPath" if field == "metrics_path" else field)
    target.field.add(name="labels", number=5, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, json_name="labels",
                     type_name=f".{name}.Target.{_labels_entry(target)}")
    assignment.field.add(name="mesh", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="mesh")
    assignment.field.add(name="service", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="service")
    assignment.field.add(name="targets", number=4, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                         json_name="targets", type_name=f".{name}.Target")
    assignment.field.add(name="labels", number=5, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, json_name="labels",
                         type_name=f".{name}.{_labels_entry(assignment)}")
    pool.AddSerializedFile(proto.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


MonitoringAssignment = _describe()


def to_message(assignment: mads.Assignment) -> Message:
    message = MonitoringAssignment(mesh=assignment.mesh, service=assignment.service)
    for t in assignment.targets:
        target = message.targets.add(name=t.name, scheme=t.scheme, address=t.address, metrics_path=t.metrics_path)
        target.labels.update(t.labels)
    return message


# (client id) -> (assignments, version)
Fetch = Callable[[str], tuple[list[mads.Assignment], str]]


def handler(fetch: Fetch, nonce: Callable[[], str]) -> grpc.GenericRpcHandler:
    def fetch_assignments(request: discovery_pb2.DiscoveryRequest, context: Any) -> discovery_pb2.DiscoveryResponse:
        found, version = fetch(request.node.id)
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=mads.ASSIGNMENT_TYPE,
                                                   nonce=nonce())
        for assignment in found:
            packed = any_pb2.Any()
            packed.Pack(to_message(assignment), deterministic=True)
            response.resources.append(packed)
        return response

    return grpc.method_handlers_generic_handler(SERVICE, {"FetchMonitoringAssignments": grpc.unary_unary_rpc_method_handler(
        fetch_assignments, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
        response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString)})
