"""ZoneEgress validation against the cases of Kuma v2.14.3's zone_egress_validator_test.go."""
from __future__ import annotations

import pytest

from appliance.core.resources import zoneegress


@pytest.mark.parametrize("body", [
    "{networking: {address: 192.168.0.1, port: 10001}}",
    "{zone: zone-1, networking: {admin: {port: 10001}, address: 192.168.0.1, port: 10001}}",
], ids=["address and port", "admin port equal to port on another interface"])
def test_accepts(check, body: str) -> None:
    assert check(zoneegress, body) == []


@pytest.mark.parametrize("body, expected", [
    ("{networking: {address: 192.168.0.1}}", [("networking.port", "port must be in the range [1, 65535]")]),
    ("{networking: {admin: {port: 10001}, address: 127.0.0.1, port: 10001}}",
     [("networking.admin.port", "must differ from port")]),
    ("{networking: {admin: {port: 10001}, address: 0.0.0.0, port: 10001}}",
     [("networking.admin.port", "must differ from port"),
      ("networking.address.address", "must not be 0.0.0.0 or ::")]),
    ("{networking: {address: '..>_<..', port: 10001}}",
     [("networking.address.address", "address has to be valid IP address or domain name")]),
    ("{}", [("networking.port", "port must be in the range [1, 65535]")]),
], ids=["no port", "admin port equal to port on loopback", "wildcard address shares the admin port",
        "invalid address (Kuma's doubled path)", "no networking"])
def test_rejects(check, body: str, expected: list[tuple[str, str]]) -> None:
    assert check(zoneegress, body) == expected
