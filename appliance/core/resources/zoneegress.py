"""ZoneEgress: global-scoped, flat body (zone, networking.address/port/admin).

Kuma v2.14.3's ZoneEgressResource.Validate. Its address check reports at
`networking.address.address` (validateAddress appends `.address` to a path that already has it);
we keep that, since clients compare field paths.
"""
from __future__ import annotations

from typing import Any

from appliance.core.resources.proto_validation import (
    STRING, UINT32, address_errors, is_loopback_overlap, message, port_errors, top, uint, without_nulls,
)
from appliance.core.validation import Violations

SHAPE: dict[str, Any] = top(
    zone=STRING,
    networking=message(address=STRING, port=UINT32, admin=message(port=UINT32)),
)


def validate(content: dict[str, Any], out: Violations) -> None:
    net = without_nulls(SHAPE, content).get("networking") or {}
    port = uint(net.get("port"))
    admin = net.get("admin")
    if admin is not None and uint(admin.get("port")) == port and is_loopback_overlap(net.get("address", "")):
        out.add("networking.admin.port", "must differ from port")
    if address := net.get("address", ""):
        address_errors("networking.address", address, out)
    port_errors("networking.port", port, out)
