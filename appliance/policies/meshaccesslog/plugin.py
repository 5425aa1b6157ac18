"""MeshAccessLog on a sidecar: access logs on its inbound and outbound listeners (HTTP and TCP).

As Kuma 2.14 (plugin/v1alpha1/plugin.go, plugin/xds/{configurer,rules,clusters}.go):
- inbound: each rule of an inbound (`rules[]`, or `from[]` read as rules) logs on its own to each of its
  backends; a rule with a `spiffeID`/`sni` match logs only what matches, through a CEL filter;
- outbound: the merged `to` conf of the outbound's service (kuma.io/service), its backends;
- on every filter chain of the listener: the HTTP connection manager's `access_log`, or the TCP proxy's;
- the format: Kuma's default for the protocol (HTTP-based or network) unless `plain` or `json` is given, with
  `%KUMA_*%` placeholders filled in when the config is generated (source and destination service, the
  proxy's address as the source address, mesh, zone, traffic direction); every line ends in a newline;
- `file`: Envoy's file logger at `path` (only admins may set it: schema.admin_only);
- `tcp`: Envoy's file logger at the pipe kuma-dp reads (names.access_log_socket), each line a JSON object
  `{"address", "message"}` that kuma-dp forwards to the address (appliance/dp/accesslogs.py);
- `openTelemetry` with an `endpoint`: Envoy's OpenTelemetry logger over gRPC to a cluster per endpoint,
  `meshaccesslog:opentelemetry:<n>` numbered in the order the proxy's listeners first use them.
A `backendRef` (MeshOpenTelemetryBackend) is not resolved by this control plane: such a backend logs nothing,
and the API says so on write (schema.deprecations).
On a builtin gateway (`apply_to_gateway`), each port's listener logs, from the policies that select its
listeners, as Kuma's gateway: the `to` entries for the whole mesh (destination `*`, OUTBOUND), then the
`from`/`rules` entries (source `unknown`, INBOUND); the HTTP format on HTTP ports, the TCP one on the others
(Kuma reads an HTTPS listener's protocol as unknown).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, substitution_format_string_pb2 as sfs_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from opentelemetry.proto.common.v1 import common_pb2

from appliance.model import names
from appliance.model.proxy import MeshGateway, MeshSnapshot, Proxy
from appliance.policies import _collectors, _envoy, _gateway, _rules

KIND = "MeshAccessLog"
FILE_LOGGER = "envoy.access_loggers.file"
OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
UNKNOWN_SERVICE = "unknown"

NETWORK_FORMAT = ("[%START_TIME%] %RESPONSE_FLAGS% %KUMA_MESH% %KUMA_SOURCE_ADDRESS_WITHOUT_PORT%(%KUMA_SOURCE_SERVICE%)"
                  "->%UPSTREAM_HOST%(%KUMA_DESTINATION_SERVICE%) took %DURATION%ms, sent %BYTES_SENT% bytes, "
                  "received: %BYTES_RECEIVED% bytes")
HTTP_FORMAT = ('[%START_TIME%] %KUMA_MESH% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
               "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
               '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
               '"%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
               '"%KUMA_SOURCE_SERVICE%" "%KUMA_DESTINATION_SERVICE%" "%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%" '
               '"%UPSTREAM_HOST%"')

Conf = dict[str, Any]
ListenerKey = tuple[str, int]


@dataclass(frozen=True)
class Values:
    """KumaValues: what the `%KUMA_*%` placeholders stand for on one listener."""
    source_service: str
    source_ip: str
    destination_service: str
    mesh: str
    zone: str
    direction: str            # INBOUND | OUTBOUND


def interpolate(text: str, values: Values) -> str:
    """InterpolateKumaValues, in Kuma's order (the address with port before the one without)."""
    for placeholder, value in (
            ("%KUMA_SOURCE_ADDRESS%", _host_port(values.source_ip)),
            ("%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%", values.source_ip),
            ("%KUMA_SOURCE_SERVICE%", values.source_service),
            ("%KUMA_DESTINATION_SERVICE%", values.destination_service),
            ("%KUMA_MESH%", values.mesh),
            ("%KUMA_TRAFFIC_DIRECTION%", values.direction),
            ("%KUMA_ZONE%", values.zone),
            ("%KUMA_WORKLOAD%", "")):
        text = text.replace(placeholder, value)
    return text


def _host_port(ip: str) -> str:
    return f"[{ip}]:0" if ":" in ip else f"{ip}:0"


def default_format(protocol: str) -> str:
    return HTTP_FORMAT if protocol in names.HTTP_PROTOCOLS else NETWORK_FORMAT


@dataclass(frozen=True)
class Log:
    """One access log of a listener: a backend, the listener's default format and values, and (inbound rules
    with a match) the CEL expression of the connections it logs."""
    backend: Conf
    default_format: str
    values: Values
    expression: str = ""


@dataclass(frozen=True)
class Matched:
    inbound: dict[ListenerKey, tuple[Log, ...]]
    outbound: dict[ListenerKey, tuple[Log, ...]]
    socket: str                                   # the pipe of `tcp` backends
    otel_clusters: dict[tuple[str, int], str]     # OpenTelemetry endpoint -> its cluster's name
    has_sni_match: frozenset[ListenerKey] = frozenset()
    to_key: tuple[str, ...] = ()


NOTHING = Matched({}, {}, "", {})


def match_to_cel(match: dict[str, Any] | None) -> str:
    """MatchToCEL: the client identity (URI SAN) and SNI a rule's match asks for, as one CEL expression."""
    if not match:
        return ""
    parts = []
    spiffe = match.get("spiffeID") or {}
    if spiffe.get("type") == "Exact":
        parts.append(f"connection.uri_san_peer_certificate == {json.dumps(spiffe.get('value', ''))}")
    elif spiffe.get("type") == "Prefix":
        parts.append(f"connection.uri_san_peer_certificate.startsWith({json.dumps(spiffe.get('value', ''))})")
    sni = match.get("sni") or {}
    if sni.get("type") == "Exact":
        parts.append(f"connection.requested_server_name == {json.dumps(sni.get('value', ''))}")
    return " && ".join(parts)


def _backends(conf: Conf) -> list[Conf]:
    return [b for b in conf.get("backends") or [] if isinstance(b, dict)]


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    if not snapshot.policies.get(KIND):
        return NOTHING
    selection = _rules.select(snapshot.policies[KIND], proxy)
    if not selection.proxy:
        return NOTHING
    identifying = proxy.services[0] if proxy.services else UNKNOWN_SERVICE
    zone = proxy.labels.get("kuma.io/zone", "")
    inbound: dict[ListenerKey, tuple[Log, ...]] = {}
    sni_listeners = set()
    for found in proxy.inbounds:
        key = _rules.inbound_key(found)
        if key in inbound:
            continue
        values = Values(UNKNOWN_SERVICE, proxy.address, identifying, proxy.mesh, zone, "INBOUND")
        rules = _rules.inbound_rules(selection.by_inbound.get(key, ()), from_as_rules=True)
        inbound[key] = tuple(Log(b, default_format(found.protocol), values, match_to_cel(r.match))
                             for r in rules for b in _backends(r.conf))
        if any((r.match or {}).get("sni") is not None for r in rules):
            sni_listeners.add(key)
    to_rules = _rules.to_rules(selection)
    outbound: dict[ListenerKey, tuple[Log, ...]] = {}
    for found in proxy.outbounds:
        rule = _rules.compute(to_rules, {_rules.SERVICE_TAG: found.service})
        if rule is None:
            continue
        values = Values(identifying, proxy.address, found.service, proxy.mesh, zone, "OUTBOUND")
        protocol = snapshot.protocols.get(found.service, "tcp")
        outbound[(found.address, found.port)] = tuple(
            Log(b, default_format(protocol), values) for b in _backends(rule.conf))
    otel = _otel_clusters([log for logs in (*inbound.values(), *outbound.values()) for log in logs])
    socket = names.access_log_socket(proxy.work_dir, proxy.name, proxy.mesh)
    # Outbound logs name the calling proxy's service and zone, and may name its address, pipe and collector
    # numbering: proxies whose logs name the same are given one copy of each outbound (`generate_sidecar`).
    logs = [log for found in outbound.values() for log in found]
    to_key = (*selection.key, identifying, zone,
              proxy.address if any(map(_names_source_address, logs)) else "",
              socket if any(log.backend.get("type") == "Tcp" for log in logs) else "",
              json.dumps(sorted(otel.items())) if otel else "") if logs else ()
    return Matched(inbound, outbound, socket, otel, frozenset(sni_listeners), to_key)


def _names_source_address(log: Log) -> bool:
    """Whether the log's text (its format, or the default one it falls back to) holds %KUMA_SOURCE_ADDRESS...%."""
    kind = log.backend.get("type")
    conf = log.backend.get({"File": "file", "Tcp": "tcp", "OpenTelemetry": "openTelemetry"}.get(kind, "")) or {}
    uses_default = conf.get("body") is None if kind == "OpenTelemetry" else not conf.get("format")
    return "%KUMA_SOURCE_ADDRESS" in json.dumps(conf) + (log.default_format if uses_default else "")


def _otel_endpoint(backend: Conf) -> tuple[str, int] | None:
    otel = backend.get("openTelemetry") if backend.get("type") == "OpenTelemetry" else None
    if not isinstance(otel, dict) or otel.get("backendRef") is not None or not otel.get("endpoint"):
        return None   # a backendRef names a MeshOpenTelemetryBackend, which this control plane does not resolve
    return _collectors.otel_endpoint(str(otel["endpoint"]))


# --- Envoy messages -------------------------------------------------------------------------------

def _text(text: str, omit_empty: bool) -> sfs_pb2.SubstitutionFormatString:
    sfs = sfs_pb2.SubstitutionFormatString(omit_empty_values=omit_empty)
    sfs.text_format_source.inline_string = text
    return sfs


def _json(fields: dict[str, Any], omit_empty: bool) -> sfs_pb2.SubstitutionFormatString:
    sfs = sfs_pb2.SubstitutionFormatString(omit_empty_values=omit_empty)
    sfs.json_format.update(fields)
    return sfs


def _json_fields(entries: list[dict[str, Any]], values: Values) -> dict[str, str]:
    return {str(e.get("key", "")): interpolate(str(e.get("value", "")), values) for e in entries}


def _file_format(backend: Conf, log: Log) -> sfs_pb2.SubstitutionFormatString:
    """FileBackendSFS."""
    fmt = backend.get("format")
    if not fmt:
        return _text(interpolate(log.default_format + "\n", log.values), False)
    omit = bool(fmt.get("omitEmptyValues"))
    if fmt.get("plain") is not None:
        return _text(interpolate(fmt["plain"] + "\n", log.values), omit)
    return _json(_json_fields(fmt.get("json") or [], log.values), omit)


def _tcp_format(backend: Conf, log: Log) -> sfs_pb2.SubstitutionFormatString:
    """TCPBackendSFS: the line kuma-dp reads, the address to forward to beside the message."""
    fmt = backend.get("format")
    address = str(backend.get("address", ""))
    if not fmt:
        return _json({"address": address, "message": interpolate(log.default_format + "\n", log.values)}, False)
    omit = bool(fmt.get("omitEmptyValues"))
    if fmt.get("plain") is not None:
        return _json({"address": address, "message": interpolate(fmt["plain"] + "\n", log.values)}, omit)
    return _json({"address": address, "message": _json_fields(fmt.get("json") or [], log.values)}, omit)


def _any_value(value: common_pb2.AnyValue, values: Values) -> None:
    """interpolateKumaVariablesInAnyValue: placeholders in every string of a body (and its keys)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        value.string_value = interpolate(value.string_value, values)
    elif kind == "array_value":
        for item in value.array_value.values:
            _any_value(item, values)
    elif kind == "kvlist_value":
        for item in value.kvlist_value.values:
            _any_value(item.value, values)
            item.key = interpolate(item.key, values)


def _otel_body(otel: Conf, log: Log) -> common_pb2.AnyValue:
    """OtelBody: the default format as text, or the given body, read as an OpenTelemetry AnyValue when it
    is one and else used as text."""
    body = otel.get("body")
    if body is None:
        return common_pb2.AnyValue(string_value=interpolate(log.default_format, log.values))
    value = common_pb2.AnyValue()
    try:
        json_format.ParseDict(body, value)
    except (json_format.ParseError, TypeError, ValueError, AttributeError):
        raw = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        return common_pb2.AnyValue(string_value=interpolate(raw, log.values))
    _any_value(value, log.values)
    return value


def _otel_config(otel: Conf, log: Log, cluster: str) -> logs_service_pb2.OpenTelemetryAccessLogConfig:
    config = logs_service_pb2.OpenTelemetryAccessLogConfig(body=_otel_body(otel, log))
    config.attributes.SetInParent()
    for attribute in otel.get("attributes") or []:
        config.attributes.values.add(
            key=interpolate(str(attribute.get("key", "")), log.values),
            value=common_pb2.AnyValue(string_value=interpolate(str(attribute.get("value", "")), log.values)))
    resource = config.resource_attributes.values
    resource.add(key="kuma.mesh", value=common_pb2.AnyValue(string_value=log.values.mesh))
    if log.values.zone:
        resource.add(key="kuma.zone", value=common_pb2.AnyValue(string_value=log.values.zone))
    common = config.common_config
    common.log_name = "MeshAccessLog"
    common.transport_api_version = config_source_pb2.V3
    common.grpc_service.envoy_grpc.cluster_name = cluster
    return config


def access_log(log: Log, socket: str, otel_clusters: dict[tuple[str, int], str]) -> accesslog_pb2.AccessLog | None:
    """BaseAccessLogBuilder (+ CELFilter): None for a backend that logs nothing (an unresolved backendRef)."""
    backend_type = log.backend.get("type")
    if backend_type == "File":
        conf = log.backend.get("file") or {}
        file_log = file_pb2.FileAccessLog(path=str(conf.get("path", "")), log_format=_file_format(conf, log))
        result = accesslog_pb2.AccessLog(name=FILE_LOGGER, typed_config=_envoy.pack(file_log))
    elif backend_type == "Tcp":
        conf = log.backend.get("tcp") or {}
        file_log = file_pb2.FileAccessLog(path=socket, log_format=_tcp_format(conf, log))
        result = accesslog_pb2.AccessLog(name=FILE_LOGGER, typed_config=_envoy.pack(file_log))
    elif backend_type == "OpenTelemetry":
        endpoint = _otel_endpoint(log.backend)
        if endpoint is None:
            return None
        config = _otel_config(log.backend.get("openTelemetry") or {}, log, otel_clusters[endpoint])
        result = accesslog_pb2.AccessLog(name=OTEL_LOGGER, typed_config=_envoy.pack(config))
    else:
        return None
    if log.expression:
        result.filter.extension_filter.name = CEL_FILTER
        result.filter.extension_filter.typed_config.CopyFrom(
            _envoy.pack(cel_pb2.ExpressionFilter(expression=log.expression)))
    return result


def _tls_inspector(listener: listener_pb2.Listener) -> None:
    if all(f.name != names.TLS_INSPECTOR for f in listener.listener_filters):
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name=names.TLS_INSPECTOR, typed_config=_envoy.pack(tls_inspector_pb2.TlsInspector())))


def _configure(listener: listener_pb2.Listener, logs: list[accesslog_pb2.AccessLog]) -> None:
    """bldrs_listener.AccessLogs: on every chain, the HTTP connection manager's logs or the TCP proxy's."""
    for chain in listener.filter_chains:
        _envoy.update_hcm(chain, lambda hcm: hcm.access_log.extend(logs))
        _envoy.update_tcp_proxy(chain, lambda tcp: tcp.access_log.extend(logs))


def _otel_clusters(logs: list[Log]) -> dict[tuple[str, int], str]:
    """EndpointAccumulator: clusters numbered in the order the logs first name their endpoints."""
    otel: dict[tuple[str, int], str] = {}
    for log in logs:
        endpoint = _otel_endpoint(log.backend)
        if endpoint is not None and endpoint not in otel:
            otel[endpoint] = f"meshaccesslog:opentelemetry:{len(otel)}"
    return otel


def apply_to_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway,
                     ports: tuple[_gateway.GatewayPort, ...], resources: _envoy.Resources) -> None:
    identifying = proxy.services[0] if proxy.services else UNKNOWN_SERVICE
    zone = proxy.labels.get("kuma.io/zone", "")
    by_port: dict[ListenerKey, tuple[Log, ...]] = {}
    for port in ports:
        policies = _gateway.port_policies(snapshot.policies.get(KIND, ()), proxy, gateway, port.port)
        if not policies:
            continue
        fmt = default_format("http" if port.protocol == "HTTP" else "tcp")
        common = _rules.compute(_rules.policies_to_rules(policies), {})
        to_values = Values(identifying, proxy.address, "*", proxy.mesh, zone, "OUTBOUND")
        logs = [Log(b, fmt, to_values) for b in _backends(common.conf if common is not None else {})]
        from_values = Values(UNKNOWN_SERVICE, proxy.address, identifying, proxy.mesh, zone, "INBOUND")
        logs += [Log(b, fmt, from_values, match_to_cel(r.match))
                 for r in _rules.inbound_rules(policies, from_as_rules=True) for b in _backends(r.conf)]
        by_port[(proxy.address, port.port)] = tuple(logs)
    if by_port:   # gateway listeners are inbound ones on the proxy's address
        otel = _otel_clusters([log for logs in by_port.values() for log in logs])
        socket = names.access_log_socket(proxy.work_dir, proxy.name, proxy.mesh)
        apply(Matched(by_port, {}, socket, otel), resources)


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    used: set[tuple[str, int]] = set()
    for direction, by_key in ((base_pb2.INBOUND, matched.inbound), (base_pb2.OUTBOUND, matched.outbound)):
        listeners = _envoy.listeners_by_address(resources, direction)
        for key, logs in by_key.items():
            listener = listeners.get(key)
            if listener is None or not logs:
                continue
            built = [found for found in (access_log(log, matched.socket, matched.otel_clusters) for log in logs)
                     if found is not None]
            _configure(listener, built)
            if key in matched.has_sni_match and direction == base_pb2.INBOUND:
                _tls_inspector(listener)
            used.update(e for e in map(_otel_endpoint, (log.backend for log in logs)) if e is not None)
    clusters = resources.setdefault(_envoy.CLUSTER, {})
    for endpoint in sorted(used):
        name = matched.otel_clusters[endpoint]
        if name not in clusters:
            clusters[name] = _collectors.collector_cluster(name, *endpoint, http2=True)
