"""The module contract every policy keeps, checked against Kuma 2.14.3's GET /_resources."""
from __future__ import annotations

import pytest

from appliance import policies
from appliance.core.validation import check_schema

# name: (path, short name, to, from, rules, fromAsRules), from Kuma's _resources golden file.
KUMA_RESOURCES = {
    "MeshAccessLog": ("meshaccesslogs", "mal", True, True, True, True),
    "MeshCircuitBreaker": ("meshcircuitbreakers", "mcb", True, True, True, True),
    "MeshFaultInjection": ("meshfaultinjections", "mfi", True, True, True, False),
    "MeshHTTPRoute": ("meshhttproutes", "mhttpr", True, False, False, False),
    "MeshHealthCheck": ("meshhealthchecks", "mhc", True, False, False, False),
    "MeshLoadBalancingStrategy": ("meshloadbalancingstrategies", "mlbs", True, False, False, False),
    "MeshRateLimit": ("meshratelimits", "mrl", True, True, True, True),
    "MeshRetry": ("meshretries", "mr", True, False, False, False),
    "MeshTCPRoute": ("meshtcproutes", "mtcpr", True, False, False, False),
    "MeshTimeout": ("meshtimeouts", "mt", True, True, True, True),
    "MeshTrafficPermission": ("meshtrafficpermissions", "mtp", False, True, True, False),
}


def test_every_policy_is_registered_once():
    assert sorted(m.KIND for m in policies.ALL) == sorted(KUMA_RESOURCES)


@pytest.mark.parametrize("module", policies.ALL, ids=lambda m: m.KIND)
def test_descriptor_matches_kuma(module):
    path, short, to, from_, rules, from_as_rules = KUMA_RESOURCES[module.KIND]
    assert (module.PATH, module.SHORT_NAME) == (path, short)
    assert module.TARGETS == {"is_target_ref": True, "has_to": to, "has_from": from_, "has_rules": rules,
                              "is_from_as_rules": from_as_rules}


@pytest.mark.parametrize("module", policies.ALL, ids=lambda m: m.KIND)
def test_defaults_pass_their_own_checks(module):
    for name, spec in module.mesh_defaults("demo"):
        assert name.endswith("-demo")
        problems: list[str] = []
        check_schema(module.SPEC_SCHEMA, spec, "spec", problems)
        assert problems == [] and module.validate(spec) == []


JUNK = [{}, {"targetRef": 5, "to": "x", "from": [None, 3], "rules": [{"default": []}]},
        {"targetRef": {"kind": 7, "tags": [1]}, "to": [{"targetRef": None, "default": 1, "rules": [2]}],
         "from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": 3, "local": []}}]}]


@pytest.mark.parametrize("module", policies.ALL, ids=lambda m: m.KIND)
def test_validator_survives_specs_the_schema_refused(module):
    for spec in JUNK:
        assert isinstance(module.validate(spec), list)
        assert isinstance(module.deprecations(spec), list)
