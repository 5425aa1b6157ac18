"""MeshHealthCheck over the API: applied (no "not applied" warning), and its eventLogPath, which makes
every selected proxy's Envoy write a file on its host, is for admins only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import LiveApi, live_api

PATH = "/meshes/default/meshhealthchecks/hc"


def _health_check(**conf: Any) -> dict[str, Any]:
    return {"type": "MeshHealthCheck", "name": "hc", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"},
                     "to": [{"targetRef": {"kind": "Mesh"}, "default": {"interval": "10s", "tcp": {}, **conf}}]}}


def _user(api: LiveApi, name: str) -> dict[str, str]:
    r = api.post("/tokens/user", {"name": name, "groups": ["team-a"], "validFor": "1h"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.text}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path, defaults=True) as a:
        yield a


def test_a_health_check_is_applied_without_a_warning(api: LiveApi) -> None:
    created = api.put(PATH, _health_check())
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()


def test_only_admins_may_make_proxies_write_a_health_check_event_log(api: LiveApi) -> None:
    alice, remote = _user(api, "alice"), api.remote()
    logging = _health_check(eventLogPath="/home/kuma-dp/.bashrc")
    r = remote.put(PATH, logging, headers=alice)
    assert r.status_code == 403, r.text
    assert r.json()["title"] == "Access Denied"
    assert r.json()["detail"] == ('user "alice/team-a,mesh-system:authenticated" cannot set '
                                  'spec.to[0].default.eventLogPath: only admins may make proxies write a file on '
                                  'their hosts')
    assert api.get(PATH).status_code == 404                      # nothing stored
    assert remote.put(PATH, _health_check(), headers=alice).status_code == 201   # without it: fine
    assert api.put(PATH, logging).status_code == 200             # the local admin may
    # and while the policy holds one, a user may not rewrite the policy with it
    assert remote.put(PATH, logging, headers=alice).status_code == 403
    assert remote.delete(PATH, headers=alice).status_code == 200
