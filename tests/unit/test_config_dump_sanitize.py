"""What the config dump view takes out of Envoy's answer (api/envoy_admin.sanitize)."""
from __future__ import annotations

import orjson

from appliance.api.envoy_admin import sanitize

KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJOYW1lIjoid2ViLTEifQ.c2lnbmF0dXJl"


def _dump() -> bytes:
    bootstrap = {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {
        "dynamic_resources": {"ads_config": {"grpc_services": [{"envoy_grpc": {"cluster_name": "ads_cluster"},
                                                                "initial_metadata": [{"key": "authorization",
                                                                                      "value": TOKEN}]}]}},
        "node": {"metadata": {"echo": f"token {TOKEN} again"}}}}
    secrets = {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": [
        {"name": "identity", "secret": {"tls_certificate": {
            "certificate_chain": {"inline_bytes": "Y2VydA=="},
            "private_key": {"inline_bytes": "c2VjcmV0LWtleQ=="}}}}]}
    listeners = {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                 "note": f"a stray key: {KEY}"}
    return orjson.dumps({"configs": [bootstrap, secrets, listeners]})


def test_tokens_and_private_keys_are_masked_and_the_rest_stays() -> None:
    text = sanitize(_dump()).decode()
    assert TOKEN not in text and "PRIVATE KEY" not in text and "c2VjcmV0LWtleQ==" not in text
    out = orjson.loads(text)
    bootstrap, secrets, listeners = out["configs"]
    service = bootstrap["bootstrap"]["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert service["initial_metadata"] == [{"key": "authorization", "value": "[redacted]"}]
    assert bootstrap["bootstrap"]["node"]["metadata"]["echo"] == "token [redacted] again"
    tls = secrets["dynamic_active_secrets"][0]["secret"]["tls_certificate"]
    assert tls == {"certificate_chain": {"inline_bytes": "Y2VydA=="}, "private_key": {"inline_string": "[redacted]"}}
    assert listeners["note"] == "a stray key: [redacted]\n"
