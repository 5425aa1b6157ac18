"""MeshProxyPatch validation: Kuma's validator cases (meshproxypatch_cases.yaml), and what our structural
schema answers first for an operation the OpenAPI enum does not list."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.policies.meshproxypatch import schema as mpp

CASES = yaml.safe_load((Path(__file__).parent / "meshproxypatch_cases.yaml").read_text())


@pytest.mark.parametrize("name", CASES["valid"])
def test_valid(check, name):
    assert check(mpp, yaml.safe_dump(CASES["valid"][name])) == []


@pytest.mark.parametrize("name", CASES["invalid"])
def test_invalid_as_kuma_says(name):
    """Kuma's validator on its own (its test skips kube-openapi), message for message."""
    case = CASES["invalid"][name]
    assert [list(v) for v in mpp.validate(case["spec"])] == case["violations"]


def test_the_schema_refuses_an_operation_of_another_kind(check):
    text = "default: {appendModifications: [{cluster: {operation: AddFirst}}]}"
    assert check(mpp, text) == [
        "spec.default.appendModifications[0].cluster.operation in body should be one of [Add Remove Patch]"]


def test_a_virtual_host_modification_needs_a_match(check):
    text = "default: {appendModifications: [{virtualHost: {operation: Remove}}]}"
    assert check(mpp, text) == ["spec.default.appendModifications[0].virtualHost.match in body is required"]


@pytest.mark.parametrize("value, message", [
    ("name: ''\ndomains: ['*']", "invalid VirtualHost.Name: value length must be at least 1 runes"),
    ("name: vh", "invalid VirtualHost.Domains: value must contain at least 1 item(s)"),
    ("name: vh\ndomains: ['*']\nroutes: [{match: {prefix: /}}]",
     "invalid VirtualHost.Routes[0]: embedded message failed validation | caused by: "
     "invalid Route.Action: value is required"),
])
def test_an_added_resource_must_pass_envoys_rules(check, value, message):
    spec = {"default": {"appendModifications": [{"virtualHost": {"operation": "Add", "match": {}, "value": value}}]}}
    assert check(mpp, yaml.safe_dump(spec)) == [
        ("spec.default.appendModifications[0].virtualHost.value", f"native Envoy resource is not valid: {message}")]


@pytest.mark.parametrize("type_name", ["os.system", "builtins.object", "envoy.nope.v3.Nothing"])
def test_a_typed_config_of_no_envoy_type_is_refused_without_importing_it(check, type_name):
    value = f"name: f\ntypedConfig:\n  '@type': type.googleapis.com/{type_name}\n"
    spec = {"default": {"appendModifications": [{"httpFilter": {"operation": "AddFirst", "value": value}}]}}
    assert check(mpp, yaml.safe_dump(spec)) == [
        ("spec.default.appendModifications[0].httpFilter.value",
         f'native Envoy resource is not valid: unable to resolve "type.googleapis.com/{type_name}": "not found"')]


def test_a_json_patch_block_is_checked():
    spec = {"default": {"appendModifications": [{"cluster": {"operation": "Patch", "jsonPatches": [
        {"op": "remove", "path": "/", "value": 1}, {"op": "move", "path": "/a"}]}}]}}
    path = "spec.default.appendModifications[0].cluster.jsonPatches"
    assert mpp.validate(spec) == [
        (f"{path}[0].value", '"value" is allowed only when "op" is one of ["add", "replace"]'),
        (f"{path}[0].path", "root path cannot be removed"),
        (f"{path}[1].from", '"from" must not be empty when "op" is one of ["move", "copy"]')]


LAUGHS = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef"))


@pytest.mark.parametrize("value, message", [
    ("[" * 5000 + "]" * 5000, "nested deeper than 100 levels"),
    ("a: &a [*a]", "nested deeper than 100 levels"),
    (LAUGHS, "more than 100000 values"),
])
def test_a_value_that_would_take_unbounded_work_is_refused(value, message):
    spec = {"default": {"appendModifications": [{"cluster": {"operation": "Patch", "value": value}}]}}
    assert mpp.validate(spec) == [("spec.default.appendModifications[0].cluster.value",
                                   f"native Envoy resource is not valid: {message}")]


def test_a_field_envoy_does_not_have_is_accepted_as_kuma_does_with_a_warning(check):
    lua = ("name: envoy.filters.http.lua\ntypedConfig:\n"
           "  '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n  inlinCode: x\n")
    spec = {"targetRef": {"kind": "Mesh"}, "default": {"appendModifications": [
        {"cluster": {"operation": "Patch", "value": "conectTimeout: 1s\n"}},
        {"cluster": {"operation": "Patch", "value": "connectTimeout: 1s\n"}},
        {"httpFilter": {"operation": "AddFirst", "value": lua}}]}}
    assert check(mpp, yaml.safe_dump(spec)) == []
    assert mpp.deprecations(spec) == [
        "'spec.default.appendModifications[0].cluster.value' sets a field Envoy does not have, which is ignored: "
        'no field named "conectTimeout" at "Cluster"',
        "'spec.default.appendModifications[2].httpFilter.value' sets a field Envoy does not have, which is "
        'ignored: no field named "inlinCode" at "HttpFilter.typedConfig"']


TLS_CLUSTER = """name: payments
connectTimeout: 5s
transportSocket:
  name: envoy.transport_sockets.tls
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    commonTlsContext:
      tlsCertificates:
      - certificateChain: {filename: /etc/client.crt}
        privateKey: %s
"""


@pytest.mark.parametrize("modification, field", [
    ({"cluster": {"operation": "Add", "value": TLS_CLUSTER % "{inlineString: 'a key'}"}}, "cluster.value"),
    ({"cluster": {"operation": "Add", "value": TLS_CLUSTER % "{inlineBytes: YSBrZXk=}"}}, "cluster.value"),
    ({"cluster": {"operation": "Patch", "value": "name: x\nmetadata: {filterMetadata: {a: {k: '-----BEGIN "
                                                 "PRIVATE KEY-----'}}}\n"}}, "cluster.value"),
    ({"cluster": {"operation": "Patch", "jsonPatches": [
        {"op": "add", "path": "/transportSocket/typedConfig/commonTlsContext/tlsCertificates/0/privateKey",
         "value": {"inlineString": "a key"}}]}}, "cluster.jsonPatches[0].value"),
    ({"listener": {"operation": "Patch", "jsonPatches": [
        {"op": "add", "path": "/x", "value": "-----BEGIN RSA PRIVATE KEY-----\nMII"}]}}, "listener.jsonPatches[0].value"),
])
def test_a_private_key_inline_is_refused(modification, field):
    spec = {"default": {"appendModifications": [modification]}}
    assert mpp.validate(spec) == [(f"spec.default.appendModifications[0].{field}", mpp._NO_PRIVATE_KEY)]


def test_a_private_key_in_a_file_on_the_proxys_host_is_fine():
    spec = {"default": {"appendModifications": [
        {"cluster": {"operation": "Add", "value": TLS_CLUSTER % "{filename: /etc/client.key}"}}]}}
    assert mpp.validate(spec) == []


def test_kumactl_knows_the_type_by_kumas_names():
    from appliance.kumactl.resources import BY_ARG, BY_LIST_ARG
    assert BY_LIST_ARG["meshproxypatches"].path == "meshproxypatches"
    assert BY_ARG["meshproxypatch"].item_path("default", "mpp") == "/meshes/default/meshproxypatches/mpp"
