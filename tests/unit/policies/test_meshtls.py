"""MeshTLS validation: Kuma's validator testdata (v2.14.3, api/v1alpha1/testdata), word for word.

Kuma's validator tests run the validator alone; over the API the schema refuses unknown enum values first
(tests/api/test_meshtls_api.py), so the enum cases call `validate` directly as Kuma's tests do.
"""
from __future__ import annotations

import pytest
import yaml

from appliance.policies.meshtls import schema as mtls

ALL_CIPHERS = """
        - "ECDHE-ECDSA-AES128-GCM-SHA256"
        - "ECDHE-ECDSA-AES256-GCM-SHA384"
        - "ECDHE-ECDSA-CHACHA20-POLY1305"
        - "ECDHE-RSA-AES128-GCM-SHA256"
        - "ECDHE-RSA-AES256-GCM-SHA384"
        - "ECDHE-RSA-CHACHA20-POLY1305"
"""
VALID = {
    "full-valid": """
targetRef:
  kind: Mesh
from:
  - targetRef:
      kind: Mesh
    default:
      tlsVersion:
        min: TLS11
        max: TLS12
      tlsCiphers:""" + ALL_CIPHERS + """
      mode: Strict
""",
    "full-valid-no-top-target": """
from:
  - targetRef:
      kind: Mesh
    default:
      tlsVersion: {min: TLS11, max: TLS12}
      tlsCiphers:""" + ALL_CIPHERS + """
      mode: Strict
""",
    "rules with a mode on a Dataplane": """
targetRef: {kind: Dataplane, labels: {app: demo}}
rules: [{default: {mode: Permissive}}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid(check, text):
    assert check(mtls, text) == []


_BAD_INLINE = """
    default:
      tlsVersion: {min: TLS15, max: TLS16}
      tlsCiphers: ["NotExistingCipher"]
      mode: Strict
"""
CIPHERS_MESSAGE = ('"tlsCiphers" must be one of ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", '
                   '"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", '
                   '"ECDHE-RSA-CHACHA20-POLY1305"]')
ONLY_MESH = [("spec.from[0].default.tlsCiphers", "tlsCiphers can only be defined with top level targetRef kind: Mesh"),
             ("spec.from[0].default.tlsVersion", "tlsVersion can only be defined with top level targetRef kind: Mesh")]
INVALID = {
    "full-invalid": ("""
targetRef:
  kind: Mesh
from:
  - targetRef:
      kind: MeshHTTPRoute
    default: {}
  - targetRef:
      kind: Mesh
    default:
      tlsVersion: {min: TLS15, max: TLS16}
      tlsCiphers: ["NotExistingCipher"]
      mode: NotExistingMode
""", [("spec.from[0].targetRef.kind", "value 'MeshHTTPRoute' is not supported"),
      ("spec.from[1].default.mode", '"mode" must be one of ["Strict", "Permissive"]'),
      ("spec.from[1].default.tlsCiphers", CIPHERS_MESSAGE),
      ("spec.from[1].default.tlsVersion.min", '"min" must be one of ["TLSAuto", "TLS10", "TLS11", "TLS12", "TLS13"]'),
      ("spec.from[1].default.tlsVersion.max", '"max" must be one of ["TLSAuto", "TLS10", "TLS11", "TLS12", "TLS13"]')]),
    "invalid-top-level": ("""
targetRef:
  kind: MeshSubset
  tags:
    kuma.io/service: svc-1
from:
  - targetRef:
      kind: Mesh""" + _BAD_INLINE, ONLY_MESH),
    "invalid-top-level-dataplane": ("""
targetRef:
  kind: Dataplane
  labels:
    app: demo
from:
  - targetRef:
      kind: Mesh""" + _BAD_INLINE, ONLY_MESH),
    "invalid-top-level-sectionName": ("""
targetRef:
  kind: Dataplane
  sectionName: test
to:
  - targetRef:
      kind: Mesh
""", [("spec.targetRef.sectionName", "can only be used with inbound policies")]),
    "invalid-rules-and-from": ("""
targetRef:
  kind: Dataplane
  labels:
    app: demo
from:
  - targetRef:
      kind: Mesh""" + _BAD_INLINE + """
rules:
  - """ + _BAD_INLINE.strip().replace("\n", "\n  ") + "\n",
        [("spec", "field 'from' must be empty when 'rules' is defined"),
         ("spec.rules[0].default.tlsCiphers", "tlsCiphers can only be defined with top level targetRef kind: Mesh"),
         ("spec.rules[0].default.tlsVersion", "tlsVersion can only be defined with top level targetRef kind: Mesh"),
         *ONLY_MESH]),
    "min above max": ("""
from: [{targetRef: {kind: Mesh}, default: {tlsVersion: {min: TLS13, max: TLS12}}}]
""", [("spec.from[0].default.tlsVersion.min", "min version must be lower than max")]),
    "top-level kind Kuma does not take": ("""
targetRef: {kind: MeshService, name: backend}
rules: [{default: {mode: Strict}}]
""", [("spec.targetRef.kind", "value 'MeshService' is not supported")]),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid(text, expected):
    assert mtls.validate(yaml.safe_load(text)) == expected


def test_from_is_deprecated_in_favour_of_rules():
    assert mtls.deprecations(yaml.safe_load(VALID["full-valid"])) == ["'from' field is deprecated, use 'rules' instead"]
    assert mtls.deprecations({"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}}, "rules": [{"default": {}}]}) \
        == ["MeshSubset value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"]
