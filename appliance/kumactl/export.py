"""`kumactl export [--profile P] [--format universal] [-a]`: a control plane's resources as YAML that
`kumactl apply -f` restores on another one.

As Kuma 2.14 (app/kumactl/cmd/export): the types come from the server's `/_resources`, Meshes first (with
`skipCreatingInitialPolicies: ['*']`, so that applying them brings no default policy of their own), then
Secrets, the other types, and GlobalSecrets last, user-token signing keys after everything: once they are
applied, the token kumactl used may no longer be valid. Admin-only types (Secrets) are exported only with
`--include-admin` or a federation profile, and the server answers them to admins only.

Where we differ, it is so that `apply` restores what was exported on this control plane:
- a builtin CA stays builtin (Kuma rewrites it as a `provided` CA, which this control plane refuses); its
  Secrets follow the Mesh and put the same CA back, so the proxies' certificates stay valid;
- read-only types (insights) are left out: the control plane keeps them itself and refuses writes;
- `--format kubernetes` is refused: a Universal control plane has no Kubernetes objects to export.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from appliance.kumactl import printers
from appliance.kumactl.client import CliError
from appliance.kumactl.resources import BY_NAME, KumactlType

if TYPE_CHECKING:
    from appliance.kumactl.client import ApiClient
    from appliance.kumactl.context import Context

FEDERATION, FEDERATION_WITH_POLICIES, ALL, NO_DATAPLANES = (
    "federation", "federation-with-policies", "all", "no-dataplanes")
PROFILES = (ALL, FEDERATION, FEDERATION_WITH_POLICIES, NO_DATAPLANES)
MIGRATION_PROFILES = (FEDERATION, FEDERATION_WITH_POLICIES)
ORIGIN_LABEL = "kuma.io/origin"
# the control plane's own CAs: never moved to another control plane
_NOT_EXPORTED_GLOBAL_SECRETS = ("envoy-admin-ca", "inter-cp-ca")
USER_TOKEN_SIGNING_KEY_PREFIX = "user-token-signing-key"
_PRIORITY = {"Mesh": 0, "Secret": 1, "GlobalSecret": 99}


def types_to_export(described: list[dict[str, Any]], profile: str, include_admin: bool,
                    ) -> tuple[list[KumactlType], list[str]]:
    """resourcesTypesToDump: the types of `/_resources` the profile takes, Meshes first, GlobalSecrets last;
    and the names of the types kumactl does not know."""
    chosen: list[KumactlType] = []
    unknown: list[str] = []
    for item in described:
        if item.get("readOnly"):
            continue
        rtype = BY_NAME.get(item.get("name", ""))
        if rtype is None:
            unknown.append(item.get("name", ""))
            continue
        admin_only = rtype.name in ("Secret", "GlobalSecret")
        if admin_only and profile not in MIGRATION_PROFILES and not include_admin:
            continue
        policy = item.get("policy") or {}
        if profile == FEDERATION and (not item.get("includeInFederation") or policy.get("isTargetRef")
                                      or rtype.name == "MeshGateway"):
            continue
        if profile == FEDERATION_WITH_POLICIES and not item.get("includeInFederation"):
            continue
        if profile == NO_DATAPLANES and rtype.name == "Dataplane":
            continue
        chosen.append(rtype)
    chosen.sort(key=lambda t: _PRIORITY.get(t.name, 50))
    return chosen, unknown


def prepare_mesh(mesh: dict[str, Any]) -> dict[str, Any]:
    """A Mesh as exported: applying it creates no default policies (they are exported themselves)."""
    return {**mesh, "skipCreatingInitialPolicies": ["*"]}


def collect(client: ApiClient, types: list[KumactlType]) -> list[dict[str, Any]]:
    """Every resource of `types`, in the order `apply` must create them."""
    meshes = [m.get("name", "") for m in client.list_all("/meshes")]
    first, middle, last = [], [], []
    for rtype in types:
        if not rtype.mesh_scoped:
            for res in client.list_all(rtype.list_path("")):
                if rtype.name == "Mesh":
                    first.append(prepare_mesh(res))
                elif rtype.name == "GlobalSecret" and res.get("name") in _NOT_EXPORTED_GLOBAL_SECRETS:
                    continue
                elif rtype.name == "GlobalSecret" and res.get("name", "").startswith(USER_TOKEN_SIGNING_KEY_PREFIX):
                    last.append(res)
                else:
                    middle.append(res)
            continue
        for mesh in meshes:
            middle += list(client.list_all(rtype.list_path(mesh)))
    return first + middle + last


def _without_labels(resource: dict[str, Any], excluded: tuple[str, ...]) -> dict[str, Any]:
    if not excluded or not resource.get("labels"):
        return resource
    labels = {k: v for k, v in resource["labels"].items() if k not in excluded}
    out = {k: v for k, v in resource.items() if k != "labels"}
    if labels:
        out["labels"] = labels
    return out


def _run(ctx: Context) -> None:
    a = ctx.args
    client = ctx.connected_client()
    index = ctx.server_index()
    ctx.out.write(f"# Product: {index.get('product', '')}, Version: {index.get('version', '')}, Hostname: "
                  f"{index.get('hostname', '')}, ClusterId: {index.get('clusterId', '')}, InstanceId: "
                  f"{index.get('instanceId', '')}\n")
    if a.profile not in PROFILES:
        raise CliError(f'invalid profile: "{a.profile}"')
    if a.format not in ("universal", "kubernetes"):
        raise CliError(f'invalid format: "{a.format}"')
    if a.format == "kubernetes":
        raise CliError('invalid format: "kubernetes": this control plane runs on Universal and has no '
                       'Kubernetes objects to export; use --format universal')
    types, unknown = types_to_export(client.get_json("/_resources").get("resources") or [], a.profile,
                                     a.include_admin)
    if unknown:
        message = ("The following types won't be exported because they are unknown to kumactl: "
                   + ",".join(unknown))
        ctx.out.write(f"# {message}\n")
        ctx.err.write(f"WARNING: {message}. Are you using a compatible version of kumactl?\n")
    excluded = (ORIGIN_LABEL,) if a.profile in MIGRATION_PROFILES else ()
    for resource in collect(client, types):
        rtype = BY_NAME[resource.get("type", "")]
        ctx.out.write("---\n" + printers.resource_to_yaml(_without_labels(resource, excluded), rtype.wrapped))


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="Export Kuma resources", description="Export Kuma resources.",
                       epilog="Example: kumactl export --profile all --include-admin > backup.yaml")
    p.add_argument("-p", "--profile", default=FEDERATION, help=f"Profile. Available values: {','.join(PROFILES)}")
    p.add_argument("-f", "--format", default="universal",
                   help='Policy format output. Available values: "universal", "kubernetes"')
    p.add_argument("-n", "--system-namespace", default="kuma-system",
                   help="Define namespace in which control-plane was installed")
    p.add_argument("-a", "--include-admin", action="store_true",
                   help="Include admin resource types (like secrets), this flag is ignored on migration profiles "
                        "like federation as these entities are required")
    p.set_defaults(run=_run)
