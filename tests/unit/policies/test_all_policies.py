"""The module contract every policy keeps, checked against Kuma 2.14.3's GET /_resources."""
from __future__ import annotations

from pathlib import Path

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
    "MeshMetric": ("meshmetrics", "mm", False, False, False, False),
    "MeshPassthrough": ("meshpassthroughs", "mp", False, False, False, False),
    "MeshProxyPatch": ("meshproxypatches", "mpp", False, False, False, False),
    "MeshRateLimit": ("meshratelimits", "mrl", True, True, True, True),
    "MeshRetry": ("meshretries", "mr", True, False, False, False),
    "MeshTCPRoute": ("meshtcproutes", "mtcpr", True, False, False, False),
    "MeshTimeout": ("meshtimeouts", "mt", True, True, True, True),
    "MeshTLS": ("meshtlses", "mtls", False, True, True, True),
    "MeshTrace": ("meshtraces", "mtr", False, False, False, False),
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


# Kuma 2.14.3's `+kuma:policy:order` of each policy (zz_generated.resource.go).
KUMA_ORDER = {"MeshHTTPRoute": 100, "MeshTCPRoute": 200, "MeshTLS": 300, "MeshLoadBalancingStrategy": 400,
              "MeshPassthrough": 500,
              "MeshAccessLog": 600, "MeshTrace": 700, "MeshFaultInjection": 800, "MeshRateLimit": 900, "MeshTimeout": 1000,
              "MeshTrafficPermission": 1100, "MeshHealthCheck": 1200, "MeshCircuitBreaker": 1300, "MeshRetry": 1400,
              "MeshMetric": 1500,
              "MeshProxyPatch": 9999}


def test_plugins_run_in_kumas_order_and_come_from_the_policy_folders():
    assert {m.KIND: m.ORDER for m in policies.ALL} == KUMA_ORDER
    plugins = policies.plugins()
    kinds = [p.KIND for p in plugins]
    assert kinds == sorted((m.KIND for m in policies.ALL if m.HAS_PLUGIN), key=KUMA_ORDER.__getitem__)
    for plugin in plugins:
        assert callable(plugin.match) and callable(plugin.apply)


def test_policies_import_neither_core_nor_xds():
    """A policy reads the neutral types of appliance.model; importing xds/ or core/ would close a cycle."""
    root = Path(policies.__file__).parent
    offenders = [f"{path.relative_to(root)}: {line.strip()}" for path in sorted(root.rglob("*.py"))
                 for line in path.read_text().splitlines()
                 if line.lstrip().startswith(("from appliance.xds", "import appliance.xds",
                                              "from appliance.core", "import appliance.core"))]
    assert offenders == []
