"""kumactl's output against Kuma 2.14.3's own golden files.

Each directory under kumactl_fixtures/ holds what a Kuma control plane answered in one of Kuma's
kumactl tests (`server.json`, Kuma's golden JSON), the command line, the clock, and Kuma's
expected output, copied from `app/kumactl/cmd/{get,inspect,config,apply}/testdata` at v2.14.3
(each `case.yaml` names its source). kumactl runs in-process against that canned answer. The
config-file goldens run in test_kumactl_units.py, the apply goldens (they need a control plane)
in tests/e2e/test_kumactl.py.

Not replayed, because this control plane does not serve those types or endpoints: the legacy
policies (get circuit-breakers, fault-injections, healthchecks, proxytemplates, rate-limits,
retries, traffic-logs/-permissions/-routes/-traces; inspect health-check, timeout,
traffic-permission, traffic-trace), zone ingresses and zones (get and inspect),
`export --format kubernetes` and `completion`. The `inspect <policy> NAME` goldens of legacy policies run as the same
command on a new policy type (inspect-policy-*): kumactl prints every type with one template.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance import __version__
from appliance.kumactl import main
from appliance.kumactl.client import ApiClient, ApiServer
from appliance.kumactl.context import Context

FIXTURES = Path(__file__).parent / "kumactl_fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.yaml").exists())
NOT_FOUND = json.dumps({"type": "/std-errors", "status": 404, "title": "Not Found", "detail": "Not found"}).encode()


class CannedClient(ApiClient):
    """An API client answering from files instead of a control plane."""

    def __init__(self, routes: dict[str, bytes]) -> None:
        super().__init__(ApiServer(url="http://localhost:5681"))
        self.routes = {"/": json.dumps({"product": "Kuma", "version": __version__}).encode(), **routes}
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
                body: Any = None) -> tuple[int, bytes]:
        self.requests.append((method, path, query))
        if path in self.routes:
            return 200, self.routes[path]
        return 404, NOT_FOUND


def canned_context(routes: dict[str, bytes], now: datetime) -> Any:
    client = CannedClient(routes)

    class CannedContext(Context):
        def client(self) -> ApiClient:
            return client

        def now(self) -> datetime:
            return now
    return CannedContext


def _runs() -> list[tuple[str, int]]:
    return [(name, i) for name in CASES
            for i, _ in enumerate(yaml.safe_load((FIXTURES / name / "case.yaml").read_text())["runs"])]


@pytest.mark.parametrize("name,run", _runs(), ids=lambda v: str(v))
def test_kuma_golden(name: str, run: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = FIXTURES / name
    case = yaml.safe_load((folder / "case.yaml").read_text())
    now = datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    routes = {path: (folder / file).read_bytes() for path, file in case["routes"].items() if not path.startswith("@")}
    args = [str(folder / case["routes"][a]) if a.startswith("@") else a for a in case["runs"][run]["args"]]
    config = case["routes"].get("@config")
    flags = ["--config-file", str(folder / config)] if config else ["--no-config"]
    assert main([*flags, *args], make_context=canned_context(routes, now)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out == (folder / case["runs"][run]["stdout"]).read_text()
