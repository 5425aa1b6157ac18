"""Small protobuf helpers shared by the generators: Any packing, durations, ADS config sources."""
from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from envoy.config.core.v3 import base_pb2, config_source_pb2


def pack(message: Message) -> any_pb2.Any:
    """An Any whose bytes do not depend on map insertion order, so equal configs hash equal."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def seconds(value: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=value)


def ads_source() -> config_source_pb2.ConfigSource:
    """`{ads: {}, resourceApiVersion: V3}`: EDS and SDS both come over the one ADS stream."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def tags_metadata(key: str, tags: dict[str, str]) -> base_pb2.Metadata:
    metadata = base_pb2.Metadata()
    fields = metadata.filter_metadata[key].fields
    for name in sorted(tags):
        fields[name].string_value = tags[name]
    return metadata


def string_struct(values: dict[str, str]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for name in sorted(values):
        struct.fields[name].string_value = values[name]
    return struct
