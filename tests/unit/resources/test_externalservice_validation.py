"""ExternalService validation against the cases of Kuma v2.14.3's external_service_validator_test.go."""
from __future__ import annotations

import pytest

from appliance.core.resources import externalservice

VALID = {
    "IP and port": "{networking: {address: '192.168.0.1:8080'}, tags: {kuma.io/service: backend, version: '1'}}",
    "domain and port": "{networking: {address: 'example.com:8080'}, tags: {kuma.io/service: backend}}",
    "bracketed IPv6": "{networking: {address: '[fd00:a123::1]:8080'}, tags: {kuma.io/service: backend}}",
    "tag values with dots, dashes, underscores and colons": """
        networking: {address: '192.168.0.1:8080'}
        tags: {kuma.io/service: backend, kuma.io/valid: 'abc.0123-789.under_score:90'}""",
    "TLS with every data source": """
        networking:
          address: 'example.com:443'
          tls: {enabled: true, caCert: {inline: Y2E=}, clientCert: {inlineString: c}, clientKey: {secret: k},
                serverName: example.com, allowRenegotiation: false}
        tags: {kuma.io/service: backend}""",
}

MISSING_PORT = [("networking.address", "unable to parse address"),
                ("networking.address", "address has to be a valid IP address or a domain name"),
                ("networking.address", "unable to parse port in address"),
                ("networking.address", "port must be in the range [1, 65535]")]

INVALID = {
    "no networking": ("{tags: {kuma.io/service: backend}}", [("networking", "should have networking")]),
    "an empty address": ("{networking: {address: null}, tags: {kuma.io/service: backend}}",
                         [("networking.address", "address can't be empty")]),
    "a host that is neither IP nor domain": (
        "{networking: {address: '..>_<..:8080'}, tags: {kuma.io/service: backend}}",
        [("networking.address", "address has to be a valid IP address or a domain name")]),
    "a URL instead of HOST:PORT": (
        "{networking: {address: 'http://example.com:8080'}, tags: {kuma.io/service: a}}", MISSING_PORT),
    "an unbracketed IPv6 address": ("{networking: {address: 'fd00:1234::1:8080'}, tags: {kuma.io/service: a}}",
                                    MISSING_PORT),
    "a port out of range": ("{networking: {address: '192.168.0.1:65536'}, tags: {kuma.io/service: a}}",
                            [("networking.address", "port must be in the range [1, 65535]")]),
    "an empty SNI": (
        "{networking: {address: '192.168.0.1:8080', tls: {serverName: ''}}, tags: {kuma.io/service: a}}",
        [("networking.tls.serverName", "cannot be empty")]),
    "tags without the service": ("{networking: {address: '192.168.0.1:8080'}, tags: {version: '1'}}",
                                 [("tags", 'mandatory tag "kuma.io/service" is missing')]),
    "an empty protocol tag": (
        "{networking: {address: '192.168.0.1:8080'}, tags: {kuma.io/service: backend, kuma.io/protocol: null}}",
        [('tags["kuma.io/protocol"]',
          'tag "kuma.io/protocol" has an invalid value "". Allowed values: grpc, http, http2, kafka, tcp'),
         ('tags["kuma.io/protocol"]', "tag value must be non-empty")]),
    "bad characters in tag name and value": ("""
        networking: {address: '192.168.0.1:8080'}
        tags: {kuma.io/service: backend, inv@lidT/gN%me: value, invalidTagValue: inv@lid+t@g}""",
        [('tags["inv@lidT/gN%me"]',
          "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"),
         ('tags["invalidTagValue"]',
          "tag value must consist of alphanumeric characters, dots, dashes and underscores")]),
    "empty TLS data sources": ("""
        tags: {kuma.io/service: backend}
        networking:
          address: '192.168.0.1:8080'
          tls: {enabled: true, caCert: {inline: ''}, clientCert: {inlineString: ''}, clientKey: {secret: ''}}""",
        [("networking.tls.caCert", "data source cannot be empty"),
         ("networking.tls.clientCert", "data source cannot be empty"),
         ("networking.tls.clientKey", "data source cannot be empty")]),
    "the service named like the host": (
        "{networking: {address: 'httpbin.org:80'}, tags: {kuma.io/service: httpbin.org}}",
        [('tags["kuma.io/service"]', "cannot be the same as networking.address")]),
    "inline data that is not base64": ("""
        networking: {address: '', tls: {caCert: {inline: 'not base64!'}}}""",
        [("networking.tls.caCert.inline", "illegal base64 data at input byte 3")]),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_accepts(check, body: str) -> None:
    assert check(externalservice, body) == []


@pytest.mark.parametrize("body, expected", INVALID.values(), ids=INVALID.keys())
def test_rejects(check, body: str, expected: list[tuple[str, str]]) -> None:
    assert check(externalservice, body) == expected
