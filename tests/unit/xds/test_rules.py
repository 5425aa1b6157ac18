"""The policy rules engine against the cases of Kuma's pkg/plugins/policies/core/rules tests."""
from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.policies import _rules
from appliance.model.proxy import Policy
from tests.unit.xds.scenarios import db_proxy, web_proxy

MTP = "MeshTrafficPermission"
DEMO_APP = {"kind": "MeshSubset", "tags": {"k8s.kuma.io/service-name": "demo-app"}}


def _from(action: str, kind: str = "Mesh", **ref: object) -> dict:
    return {"targetRef": {"kind": kind, **ref}, "default": {"action": action}}


def _app(name: str) -> dict:
    return _from("Allow", "MeshSubset", tags={"app.kubernetes.io/name": name})


def _summary(rules: list[_rules.Rule]) -> list[tuple[str, str]]:
    return [(",".join(("!" if n else "") + v for _, v, n in r.subset), r.conf["action"]) for r in rules]


EXPECTED_OVERRIDES = [("service-payment", "Allow"), ("service-order", "Allow"), ("ui", "Allow"),
                      ("!service-payment", "Deny"), ("!service-order", "Deny"), ("!ui", "Deny")]


def test_later_from_entries_override_earlier_ones() -> None:
    """rules/from/single-mtp-from-overiding-one-another: a Mesh Deny, then three Allows by app."""
    policy = Policy(MTP, "default-demo-app", {"targetRef": DEMO_APP, "from": [
        _from("Deny"), _app("ui"), _app("service-order"), _app("service-payment")]})
    assert _summary(_rules.from_rules([policy])) == EXPECTED_OVERRIDES


def test_entries_of_later_policies_override_earlier_ones() -> None:
    """rules/from/mtp-overrides, in the order Kuma's test passes the two policies."""
    deny = Policy(MTP, "default-demo-app", {"targetRef": DEMO_APP, "from": [_from("Deny")]})
    allow = Policy(MTP, "default-demo-app-a", {"targetRef": DEMO_APP, "from": [
        _app("ui"), _app("service-order"), _app("service-payment")]})
    assert _summary(_rules.from_rules([deny, allow])) == EXPECTED_OVERRIDES


def test_policies_sort_by_kind_then_by_name_descending() -> None:
    """SortByTargetRef: the smallest name of the most specific kind is merged last, so it wins."""
    def p(name: str, ref: dict) -> Policy:
        return Policy(MTP, name, {"targetRef": ref})
    policies = [p("b-service", {"kind": "MeshService", "name": "x"}), p("a-mesh", {"kind": "Mesh"}),
                p("z-mesh", {}), p("dp-labels", {"kind": "Dataplane", "labels": {"a": "b"}}),
                p("dp-name", {"kind": "Dataplane", "name": "x"}), p("subset", {"kind": "MeshSubset"}),
                p("a-service", {"kind": "MeshService", "name": "x"})]
    assert [x.name for x in _rules.sort_policies(policies)] == [
        "z-mesh", "a-mesh", "dp-labels", "dp-name", "subset", "b-service", "a-service"]


def test_to_rules_merge_in_policy_order() -> None:
    """rules/to/meshtimeout: a Mesh-wide default and a per-service override."""
    default = Policy("MeshTimeout", "default", {"targetRef": {"kind": "Mesh"}, "to": [
        {"targetRef": {"kind": "Mesh"},
         "default": {"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "10s"}}}]})
    override = Policy("MeshTimeout", "override", {"targetRef": {"kind": "MeshService", "name": "web"}, "to": [
        {"targetRef": {"kind": "MeshService", "name": "foo"}, "default": {"http": {"requestTimeout": "15s"}}},
        {"targetRef": {"kind": "MeshService", "name": "bar"}, "default": {"http": {"requestTimeout": "20s"}}}]})
    rules = _rules.to_rules(_rules.select([override, default], web_proxy()))
    foo = _rules.compute(rules, {"kuma.io/service": "foo"})
    other = _rules.compute(rules, {"kuma.io/service": "other"})
    assert foo is not None and other is not None
    assert foo.conf == {"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "15s"}}
    assert foo.origins == ("default", "override")
    assert other.conf["http"] == {"requestTimeout": "10s"}


@pytest.mark.parametrize(("ref", "selected"), [
    ({"kind": "Mesh"}, True),
    ({"kind": "Mesh", "proxyTypes": ["Gateway"]}, False),
    ({"kind": "Mesh", "proxyTypes": ["Sidecar"]}, True),
    ({"kind": "MeshSubset", "tags": {"team": "frontend"}}, True),
    ({"kind": "MeshSubset", "tags": {"team": "*"}}, True),
    ({"kind": "MeshSubset", "tags": {"team": "backend"}}, False),
    ({"kind": "MeshService", "name": "web"}, True),
    ({"kind": "MeshService", "name": "db"}, False),
    ({"kind": "MeshServiceSubset", "name": "web", "tags": {"team": "frontend"}}, True),
    ({"kind": "Dataplane"}, True),
    ({"kind": "Dataplane", "name": "web-1"}, True),
    ({"kind": "Dataplane", "name": "web-2"}, False),
    ({"kind": "Dataplane", "labels": {"env": "prod"}}, True),
    ({"kind": "Dataplane", "labels": {"env": "dev"}}, False),
    ({"kind": "Dataplane", "name": "web-1", "sectionName": "8080"}, False),  # a named inbound's section is its name
    ({"kind": "Dataplane", "name": "web-1", "sectionName": "main"}, True),
    ({"kind": "Dataplane", "name": "web-1", "sectionName": "admin"}, False),
    ({"kind": "MeshGateway", "name": "gw"}, False),
])
def test_top_level_target_ref_selects_inbounds(ref: dict, selected: bool) -> None:
    proxy = web_proxy(labels={"env": "prod"}, inbounds=(replace(web_proxy().inbounds[0], name="main"),))
    assert bool(_rules.selected_inbounds(ref, proxy)) is selected


def test_selection_is_per_inbound() -> None:
    both = replace(web_proxy(), inbounds=web_proxy().inbounds + db_proxy().inbounds)
    only_db = Policy(MTP, "db", {"targetRef": {"kind": "MeshService", "name": "db"}})
    selection = _rules.select([only_db], both)
    assert selection.key == ("db",)
    assert list(selection.by_inbound) == [("10.0.0.4", 5432)]


def test_merge_patch_merges_objects_and_replaces_everything_else() -> None:
    merged = _rules.merge([{"http": {"a": 1, "list": [1, 2]}, "x": 1}, {"http": {"b": 2, "list": [3]}, "x": None}])
    assert merged == {"http": {"a": 1, "b": 2, "list": [3]}}


def test_contains_element_with_negations() -> None:
    not_web = (("kuma.io/service", "web", True),)
    assert _rules.contains_element(not_web, {"kuma.io/service": "db"})
    assert not _rules.contains_element(not_web, {"kuma.io/service": "web"})
    assert _rules.contains_element(not_web, {"team": "x"})
    assert not _rules.contains_element((("team", "a", False),), {"kuma.io/service": "db"})


def test_inbound_rules_put_identity_matches_first() -> None:
    policy = Policy("MeshTimeout", "t", {"rules": [
        {"default": {"idleTimeout": "1s"}},
        {"matches": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}], "default": {"idleTimeout": "2s"}},
        {"matches": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
         "default": {"idleTimeout": "3s"}}]})
    rules = _rules.inbound_rules([policy], from_as_rules=True)
    assert [r.conf["idleTimeout"] for r in rules] == ["3s", "2s", "1s"]
    assert _rules.catch_all_conf(rules) == {"idleTimeout": "1s"}


def test_selection_keeps_precedence_order_for_each_snapshots_policies() -> None:
    """The sequence is sorted once and the selected ones keep its order; another sequence is sorted anew."""
    def p(name: str, ref: dict) -> Policy:
        return Policy(MTP, name, {"targetRef": ref})
    first = (p("a-web", {"kind": "MeshService", "name": "web"}), p("b-mesh", {"kind": "Mesh"}),
             p("c-db", {"kind": "MeshService", "name": "db"}), p("d-frontend", {"kind": "MeshSubset",
                                                                               "tags": {"team": "frontend"}}),
             p("e-mesh", {"kind": "Mesh"}))
    selection = _rules.select(first, web_proxy())
    assert selection.key == ("e-mesh", "b-mesh", "d-frontend", "a-web")
    assert [x.name for x in selection.by_inbound[("10.0.0.1", 8080)]] == ["e-mesh", "b-mesh", "d-frontend", "a-web"]
    second = (p("a-web", {"kind": "Mesh"}), p("b-mesh", {"kind": "MeshService", "name": "web"}))
    assert _rules.select(second, web_proxy()).key == ("a-web", "b-mesh")
    assert _rules.select(list(second), web_proxy()).key == ("a-web", "b-mesh")
