"""`kumactl export` then `kumactl apply` on a fresh control plane gives back the same resources.

Two real `kuma-cp` processes (SQLite), kumactl as a subprocess. Secrets travel only with `--include-admin`
and only for an admin: a user token without the admin group is refused them by the server.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.e2e.harness import Kumactl, kumactl_for
from tests.support import CpProcess

pytestmark = pytest.mark.slow

RESOURCES = """\
type: Mesh
name: demo
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
type: MeshTimeout
mesh: demo
name: slow-backend
labels: {team: payments}
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: MeshService, name: backend}
    default: {http: {requestTimeout: 7s}}
---
type: MeshTrafficPermission
mesh: demo
name: web-to-backend
spec:
  targetRef: {kind: MeshService, name: backend}
  from:
  - targetRef: {kind: MeshService, name: web}
    default: {action: Allow}
---
type: Dataplane
mesh: demo
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
  - port: 8080
    servicePort: 18080
    tags: {kuma.io/service: backend, kuma.io/protocol: http}
---
type: ExternalService
mesh: demo
name: httpbin
networking: {address: httpbin.org:443}
tags: {kuma.io/service: httpbin}
---
type: Secret
mesh: demo
name: api-key
data: c2VjcmV0LWtleQ==
"""

# what a control plane keeps of its own and stamps on each resource
_VOLATILE = ("creationTime", "modificationTime")
_TYPES = ("meshes", "dataplanes", "meshtimeouts", "meshtrafficpermissions", "meshretries", "meshcircuitbreakers",
          "external-services", "secrets", "globalsecrets")


def _state(url: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for path in _TYPES:
        for item in requests.get(f"{url}/{path}?size=1000", timeout=10).json()["items"]:
            out[(item["type"], item.get("mesh", ""), item["name"])] = {
                k: v for k, v in item.items() if k not in _VOLATILE}
    return out


@pytest.fixture
def control_planes(tmp_path: Path) -> Iterator[tuple[CpProcess, CpProcess]]:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = CpProcess(tmp_path / "first").start()
    try:
        second = CpProcess(tmp_path / "second").start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_export_then_apply_restores_every_resource(control_planes, tmp_path: Path) -> None:
    first, second = control_planes
    source = kumactl_for(tmp_path / "home-first", first.url)
    source.ok("apply", "-f", "-", stdin=RESOURCES)
    exported = source.ok("export", "--profile", "all", "--include-admin")
    assert exported.startswith("# Product: Kuma, Version: ")
    assert "\ntype: Secret\n" in exported and "name: demo.ca-builtin-cert-ca-1" in exported
    assert exported.index("type: Mesh\n") < exported.index("type: Secret\n") < exported.index("type: MeshTimeout\n")
    (tmp_path / "backup.yaml").write_text(exported)

    target = kumactl_for(tmp_path / "home-second", second.url)
    target.ok("apply", "-f", str(tmp_path / "backup.yaml"))
    before, after = _state(first.url), _state(second.url)
    # each control plane keeps its own Envoy admin CA (Kuma's export leaves it out)
    assert "name: envoy-admin-ca" not in exported
    assert before.pop(("GlobalSecret", "", "envoy-admin-ca")) != after.pop(("GlobalSecret", "", "envoy-admin-ca"))
    # as Kuma: an exported Mesh says to create no default policies (they come from the export themselves)
    for key in [k for k in after if k[0] == "Mesh"]:
        assert after[key].pop("skipCreatingInitialPolicies") == ["*"]
    assert after == before
    assert len(before) > 15 and ("MeshTimeout", "demo", "slow-backend") in after
    # the same CA: certificates the first control plane issued stay valid with the second
    key = ("Secret", "demo", "demo.ca-builtin-cert-ca-1")
    assert after[key]["data"] == before[key]["data"]


def test_export_without_admin_leaves_secrets_out(control_planes, tmp_path: Path) -> None:
    first, _ = control_planes
    admin = kumactl_for(tmp_path / "home-admin", first.url)
    admin.ok("apply", "-f", "-", stdin=RESOURCES)
    plain = admin.ok("export", "--profile", "all")
    assert "type: Secret" not in plain and "type: GlobalSecret" not in plain and "c2VjcmV0LWtleQ==" not in plain
    assert "name: slow-backend" in plain and "skipCreatingInitialPolicies:\n- '*'" in plain

    token = admin.ok("generate", "user-token", "--name", "alice", "--group", "team-a", "--valid-for", "1h").strip()
    alice = kumactl_for(tmp_path / "home-alice", first.url, "--auth-type", "tokens",
                                "--auth-conf", f"token={token}")
    refused = alice("export", "--profile", "all", "--include-admin")
    assert "Access Denied" in refused.error_line() and "c2VjcmV0LWtleQ==" not in refused.out
    assert "name: slow-backend" in alice.ok("export", "--profile", "all")


def test_export_rejects_bad_flags(control_planes, tmp_path: Path) -> None:
    first, _ = control_planes
    kumactl: Kumactl = kumactl_for(tmp_path / "home", first.url)
    assert kumactl("export", "--profile", "something").error_line() == 'Error: invalid profile: "something"'
    assert kumactl("export", "--format", "something").error_line() == 'Error: invalid format: "something"'
    assert kumactl("export", "--format", "kubernetes").error_line().startswith('Error: invalid format: "kubernetes"')
