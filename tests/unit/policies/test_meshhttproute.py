"""MeshHTTPRoute validation, cases taken from Kuma's validation tests (v2.14.3)."""
from __future__ import annotations

import pytest

from appliance.core.validation import check_schema
from appliance.policies.meshhttproute import schema as mhttpr

VALID = {
    "empty to": """
targetRef: {kind: MeshService, name: frontend}
to: []
""",
    "prefix rewrite with prefix match": """
targetRef: {kind: MeshService, name: frontend}
to:
  - targetRef: {kind: MeshService, name: frontend}
    rules:
      - matches: [{path: {value: /prefix, type: PathPrefix}}]
        default:
          filters:
            - type: URLRewrite
              urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /other}}
            - type: RequestRedirect
              requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /other}}
""",
    "MeshGateway to Mesh with hostnames and host rewrite": """
targetRef: {kind: MeshGateway, name: edge}
to:
  - targetRef: {kind: Mesh}
    hostnames: [example.com]
    rules:
      - matches: [{path: {value: /, type: PathPrefix}}]
        default:
          filters: [{type: URLRewrite, urlRewrite: {hostToBackendHostname: true}}]
          backendRefs: [{kind: MeshService, name: backend}]
""",
    "MeshService and MeshMultiZoneService backends": """
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: MeshService, labels: {kuma.io/display-name: backend}}
    rules:
      - matches: [{path: {value: /v1, type: PathPrefix}}]
        default: {backendRefs: [{kind: MeshService, labels: {kuma.io/display-name: backend}, port: 8080}]}
      - matches: [{path: {value: /v2, type: PathPrefix}}]
        default: {backendRefs: [{kind: MeshMultiZoneService, labels: {kuma.io/display-name: backend}, port: 8080}]}
""",
    "unresolved backend from a Gateway API conversion": """
to:
  - targetRef: {kind: MeshService, name: backend}
    rules:
      - matches: [{method: GET}]
        default: {backendRefs: [{kind: MeshService, name: kuma.io/unresolved-backend}]}
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mhttpr, text) == []


def _route(rules: str, top: str = "{kind: MeshService, name: frontend}") -> str:
    return f"""
targetRef: {top}
to:
  - targetRef: {{kind: MeshService, name: frontend}}
    rules:
{rules}
"""


RULE = "spec.to[0].rules[0]"
INVALID = {
    "Mesh is no destination": ("""
targetRef: {kind: MeshService, name: frontend}
to: [{targetRef: {kind: Mesh}, rules: []}]
""", [("spec.to[0].targetRef.kind", "value 'Mesh' is not supported")]),
    "MeshService under a MeshGateway": ("""
targetRef: {kind: MeshGateway, name: edge}
to: [{targetRef: {kind: MeshService, name: backend}, rules: []}]
""", [("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")]),
    "path match values": (_route("""
      - matches:
          - path: {value: relative, type: Exact}
          - path: {value: /trailing/slash/, type: PathPrefix}
          - path: {value: relative, type: PathPrefix}
        default: {}
"""), [(f"{RULE}.matches[0].path.value", "must be an absolute path"),
       (f"{RULE}.matches[1].path.value",
        "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched"),
       (f"{RULE}.matches[2].path.value", "must be an absolute path")]),
    "repeated query param names": (_route("""
      - matches:
          - queryParams: [{type: Exact, name: foo, value: bar}, {type: Exact, name: foo, value: baz}]
        default: {}
"""), [(f"{RULE}.matches[0].queryParams[1].name", "multiple entries for name foo")]),
    "value on a present or absent header match": (_route("""
      - matches:
          - headers: [{type: Present, name: foo, value: x}, {type: Absent, name: foo, value: x}]
        default: {}
"""), [(f"{RULE}.matches[0].headers[0].value", "must not be defined"),
       (f"{RULE}.matches[0].headers[1].value", "must not be defined")]),
    "filters without their configuration": (_route("""
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters:
            - type: RequestHeaderModifier
            - type: ResponseHeaderModifier
            - type: RequestRedirect
            - type: RequestMirror
            - type: URLRewrite
"""), [(f"{RULE}.default.filters[0].requestHeaderModifier", "must be defined"),
       (f"{RULE}.default.filters[1].responseHeaderModifier", "must be defined"),
       (f"{RULE}.default.filters[2].requestRedirect", "must be defined"),
       (f"{RULE}.default.filters[3].requestMirror", "must be defined"),
       (f"{RULE}.default.filters[4].urlRewrite", "must be defined")]),
    "header modifiers": (_route("""
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: foo, value: bar}, {name: foo, value: bazz}]}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {}
            - type: ResponseHeaderModifier
              responseHeaderModifier:
                set: [{name: foo, value: bar}]
                add: [{name: foo, value: bar}]
                remove: [foo]
"""), [(f"{RULE}.default.filters[0].requestHeaderModifier.set[1].name", "duplicate header name"),
       (f"{RULE}.default.filters[1].responseHeaderModifier", "must have at least one defined: set, add, remove"),
       (f"{RULE}.default.filters[2].responseHeaderModifier.add[0].name", "duplicate header name"),
       (f"{RULE}.default.filters[2].responseHeaderModifier.remove[0].name", "duplicate header name")]),
    "prefix rewrite without prefix match": (_route("""
      - matches: [{path: {value: /prefix, type: Exact}}]
        default:
          filters:
            - type: URLRewrite
              urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /other}}
            - type: RequestRedirect
              requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /other}}
"""), [(f"{RULE}.default.filters[0].urlRewrite.path.replacePrefixMatch",
        "can only appear if all matches match a path prefix"),
       (f"{RULE}.default.filters[1].requestRedirect.path.replacePrefixMatch",
        "can only appear if all matches match a path prefix")]),
    "backend refs": (_route("""
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          backendRefs:
            - {kind: MeshServiceSubset, tags: {version: v1}}
            - {kind: MeshMultiZoneService, name: test-server}
            - {kind: Mesh}
"""), [(f"{RULE}.default.backendRefs[0].name", "must be set when kind is MeshServiceSubset"),
       (f"{RULE}.default.backendRefs[1].port", "must be defined with kind MeshMultiZoneService"),
       (f"{RULE}.default.backendRefs[2].kind", "value 'Mesh' is not supported")]),
    "mirror to a subset without a name": (_route("""
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters:
            - type: RequestMirror
              requestMirror: {backendRef: {kind: MeshServiceSubset, tags: {version: v1}}}
"""), [(f"{RULE}.default.filters[0].requestMirror.backendRef.name", "must be set when kind is MeshServiceSubset")]),
    "hostnames and host rewrite need a MeshGateway": ("""
targetRef: {kind: MeshService, name: frontend}
to:
  - targetRef: {kind: MeshService, name: backend}
    hostnames: [backend.com]
    rules:
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters: [{type: URLRewrite, urlRewrite: {hostToBackendHostname: true, hostname: a.com}}]
          backendRefs: [{kind: MeshService, name: backend}]
""", [("spec.to[0].rules[0].default.filters[0].urlRewrite.hostToBackendHostname", "can only be set with MeshGateway"),
      ("spec.to[0].rules[0].default.filters[0].urlRewrite.hostToBackendHostname",
       "cannot be set together with hostname"),
      ("spec.to[0].hostnames", "must not be defined")]),
    "gateway rule without backends": ("""
targetRef: {kind: MeshGateway, name: edge}
to:
  - targetRef: {kind: Mesh}
    rules:
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /o}}}]
""", [("spec.to[0].rules[0].default.backendRefs", "must not be empty")]),
    "IP addresses as hostnames": (_route("""
      - matches: [{path: {type: PathPrefix, value: /}}]
        default:
          filters:
            - {type: RequestRedirect, requestRedirect: {hostname: 127.0.0.1}}
            - {type: URLRewrite, urlRewrite: {hostname: "2001:db8:3333:4444:5555:6666:7777:8888"}}
"""), [(f"{RULE}.default.filters[0].requestRedirect.hostname", "cannot be an IP address"),
       (f"{RULE}.default.filters[1].urlRewrite.hostname", "cannot be an IP address")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(check, text, expected):
    assert check(mhttpr, text) == expected


def test_validator_rejects_hostnames_that_are_no_dns_names():
    # The schema's pattern catches these first in Kuma; the validator says the same in its own words.
    spec = {"to": [{"targetRef": {"kind": "MeshService", "name": "a"}, "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": name}}
                                for name in ("a..bc", "mx.foo.com.", "a" * 254)]}}]}]}
    dns = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
           "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    filters = "spec.to[0].rules[0].default.filters"
    assert mhttpr.validate(spec) == [
        (f"{filters}[0].requestRedirect.hostname", dns),
        (f"{filters}[1].requestRedirect.hostname", dns),
        (f"{filters}[2].requestRedirect.hostname", "must be no more than 253 characters"),
    ]


def test_schema_requires_matches_and_defaults_the_redirect_code(check):
    assert check(mhttpr, """
to: [{targetRef: {kind: MeshService, name: a}, rules: [{matches: [], default: {}}]}]
""") == ["spec.to[0].rules[0].matches in body should have at least 1 items"]
    spec = {"to": [{"targetRef": {"kind": "MeshService", "name": "a"}, "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}],
                    "backendRefs": [{"kind": "MeshService", "name": "a"}]}}]}]}
    problems: list[str] = []
    check_schema(mhttpr.SPEC_SCHEMA, spec, "spec", problems)
    rule = spec["to"][0]["rules"][0]["default"]
    assert problems == []
    assert rule["filters"][0]["requestRedirect"]["statusCode"] == 302
    assert rule["backendRefs"][0]["weight"] == 1
