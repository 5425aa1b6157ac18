"""ExternalService: mesh-scoped, flat body (networking.address, tls, tags).

Kuma v2.14.3's ExternalServiceResource.Validate, messages and field paths word for word.
"""
from __future__ import annotations

import re
from typing import Any

from appliance.core.resources.proto_validation import (
    BOOL, SERVICE_TAG, STRING, TAGS, inbound_protocol_errors, key, message, port_errors,
    split_host_port, tag_errors, top, without_nulls,
)
from appliance.core.resources.secret import DATA_SOURCE, base64_error, data_source_errors, refused_source_errors
from appliance.core.validation import Violations
from appliance.gocompat import is_dns_name, parse_ip

_TLS_SOURCES = ("caCert", "clientCert", "clientKey")

SHAPE: dict[str, Any] = top(
    networking=message(
        address=STRING,
        tls=message(enabled=BOOL, caCert=DATA_SOURCE, clientCert=DATA_SOURCE, clientKey=DATA_SOURCE,
                    allowRenegotiation=BOOL, serverName=STRING, skipHostnameVerification=BOOL),
        disableHostDNSEntry=BOOL),
    tags=TAGS,
)

_DIGITS = re.compile(r"[0-9]+")


def data_sources(content: dict[str, Any]) -> list[tuple[str, Any]]:
    tls = ((content.get("networking") or {}).get("tls") or {})
    return [(f"networking.tls.{name}", tls[name]) for name in _TLS_SOURCES if tls.get(name) is not None]


def validate(content: dict[str, Any], out: Violations) -> None:
    es = without_nulls(SHAPE, content)
    net = es.get("networking")
    tls = (net or {}).get("tls") or {}
    # Kuma cannot even decode a body with bad base64 inline data, so it reports nothing else.
    for name in _TLS_SOURCES:
        inline = (tls.get(name) or {}).get("inline")
        if inline is not None and (problem := base64_error(inline)):
            out.add(f"networking.tls.{name}.inline", problem)
            return
    if net is None:
        out.add("networking", "should have networking")
    else:
        _address_errors(net.get("address", ""), out)
    if tls.get("serverName") == "":
        out.add("networking.tls.serverName", "cannot be empty")
    for name in _TLS_SOURCES:
        data_source_errors(f"networking.tls.{name}", tls.get(name), out)
    refused_source_errors(data_sources(es), out)
    tags = es.get("tags") or {}
    tag_errors("tags", tags, out, require_service=True, extra=inbound_protocol_errors)
    service = tags.get(SERVICE_TAG, "")
    parts = split_host_port((net or {}).get("address", ""))
    if service and parts and parts[0] == service:
        out.add(key("tags", SERVICE_TAG), "cannot be the same as networking.address")


def _address_errors(address: str, out: Violations) -> None:
    """validateExternalServiceAddress: HOST:PORT, where HOST is an IP address or a domain name."""
    path = "networking.address"
    if address == "":
        out.add(path, "address can't be empty")
        return
    parts = split_host_port(address)
    if parts is None:
        out.add(path, "unable to parse address")
    host, port = parts or ("", "")
    if parse_ip(host) is None and not is_dns_name(host):
        out.add(path, "address has to be a valid IP address or a domain name")
    # Go's strconv.ParseUint: 0 on a syntax error, the largest uint32 when out of range.
    number = int(port) if _DIGITS.fullmatch(port) else 0
    if not _DIGITS.fullmatch(port) or number > 4294967295:
        out.add(path, "unable to parse port in address")
    port_errors(path, min(number, 4294967295), out)
