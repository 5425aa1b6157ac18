"""Routing policies through real Envoys: two versions of a service, each behind its own kuma-dp.

`web` calls `backend` (HTTP) and `echo` (TCP) through its outbounds; `backend` and `echo` each run as
`version: v1` and `version: v2`. What a user sees: the share of requests each version answers, what the
backend application receives, what the caller gets back. Every step happens without restarting anything.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.e2e.harness import ALLOW_ALL, MTLS, VERSIONED_DATAPLANE, Mesh, tcp_exchange, tcp_version_app, version_app
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow



class Routing:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.http_port, self.tcp_port = free_port(), free_port()
        self.mirrored: list[dict] = []

    def proxy(self, name: str, service: str, protocol: str, version: str, app: int) -> None:
        self.mesh.kuma_dp(name, self.mesh.token(name), template=VERSIONED_DATAPLANE, port=free_port(), servicePort=app,
                          service=service, protocol=protocol, version=version,
                          httpPort=free_port(), tcpPort=free_port())

    def start(self) -> None:
        for version in ("v1", "v2"):
            self.proxy(f"backend-{version}", "backend", "http", version, version_app(version))
            self.proxy(f"echo-{version}", "echo", "tcp", version, tcp_version_app(version))
        self.proxy("mirror-1", "mirror", "http", "v1", version_app("mirror", self.mirrored))
        self.mesh.kuma_dp("web-1", self.mesh.token("web-1"), template=VERSIONED_DATAPLANE, port=free_port(),
                          servicePort=free_port(), service="web", protocol="http", version="v1",
                          httpPort=self.http_port, tcpPort=self.tcp_port)

    def get(self, path: str = "/", **headers: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.http_port}{path}", headers=headers, timeout=5,
                            allow_redirects=False)

    def started_versions(self, count: int = 20) -> set[str]:
        """The versions answering `count` requests while the proxies start: until a backend's Envoy has its
        inbound listener, its endpoint refuses the connection (a 503, as in Kuma without a service probe)."""
        answers = [self.get() for _ in range(count)]
        return {r.json()["version"] for r in answers if r.status_code == 200}

    def version(self, **headers: str) -> str:
        response = self.get(**headers)
        assert response.status_code == 200, response.text
        return response.json()["version"]

    def put(self, kind_path: str, name: str, kind: str, spec: dict) -> None:
        r = requests.put(f"{self.mesh.cp.url}/meshes/default/{kind_path}/{name}",
                         json={"type": kind, "mesh": "default", "name": name, "spec": spec})
        assert r.status_code in (200, 201), r.text
        assert "warnings" not in r.json(), r.json()   # applied, not merely stored

    def all_acked(self) -> bool:
        items = requests.get(f"{self.mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        totals = [s["status"]["total"] for i in items for s in i["dataplaneInsight"]["subscriptions"]]
        return len(items) == 6 and all(t.get("responsesRejected", "0") == "0" for t in totals)

    def acks(self) -> str:
        """What all_acked saw, and the control plane's NACK lines: for a failure message."""
        items = requests.get(f"{self.mesh.cp.url}/meshes/default/dataplanes/_overview").json()["items"]
        seen = {i["name"]: [s["status"]["total"] for s in i["dataplaneInsight"]["subscriptions"]] for i in items}
        nacks = [line for line in self.mesh.cp.read_log().splitlines() if "NACK" in line]
        return f"{len(items)} proxies: {seen}; NACKs: {nacks[-5:]}"


@pytest.fixture(params=["sotw", "delta"])
def routing(request, tmp_path: Path):
    mesh = Mesh(tmp_path, {"KUMA_EXPERIMENTAL_DELTA_XDS": "true"} if request.param == "delta" else None)
    mesh.cp.start()
    r = requests.put(f"{mesh.cp.url}/meshes/default", json={"type": "Mesh", "name": "default", "mtls": MTLS})
    assert r.status_code == 200, r.text
    assert requests.put(f"{mesh.cp.url}/meshes/default/meshtrafficpermissions/allow-all", json=ALLOW_ALL).ok
    routing = Routing(mesh)
    routing.start()
    yield routing
    mesh.close()


def subset(service: str, version: str, weight: int) -> dict:
    return {"kind": "MeshServiceSubset", "name": service, "tags": {"version": version}, "weight": weight}


def canary(*extra_rules: dict) -> dict:
    return {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        # The path makes the header rule sort before `PathPrefix /` (Kuma orders a match without a path after it).
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                      "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}]}],
         "default": {"backendRefs": [subset("backend", "v2", 1)]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "default": {"backendRefs": [subset("backend", "v1", 90), subset("backend", "v2", 10)]}},
        *extra_rules]}]}


def test_http_route_canary_filters_and_removal(routing: Routing) -> None:
    # without a route both versions answer, once every proxy is up
    eventually(lambda: routing.started_versions() == {"v1", "v2"}, timeout=40)
    eventually(lambda: {routing.version() for _ in range(20)} == {"v1", "v2"})

    routing.put("meshhttproutes", "backend-canary", "MeshHTTPRoute", canary())
    # the header rule is in place once 30 requests in a row reach v2 (by chance: 2^-30)
    eventually(lambda: all(routing.version(**{"x-version": "v2"}) == "v2" for _ in range(30)))
    # what the proxy gets is what `_config` shows: the routes and a cluster per version
    config = requests.get(f"{routing.mesh.cp.url}/meshes/default/dataplanes/web-1/_config").text
    assert "x-version" in config and "backend-154693772bc47249" in config and "backend-5b73b3f4adf20020" in config
    versions = [routing.version() for _ in range(400)]
    # 90/10 of 400: v2 ~ Binomial(400, 0.1), mean 40, sd 6; [10, 80] is 5 to 6.7 sd out: it cannot flake
    assert 10 <= versions.count("v2") <= 80 and versions.count("v1") == 400 - versions.count("v2")
    assert all(routing.version(**{"x-version": "v2"}) == "v2" for _ in range(50))

    routing.put("meshhttproutes", "backend-canary", "MeshHTTPRoute", canary(
        {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
         "default": {"backendRefs": [subset("backend", "v1", 1)], "filters": [
             # Kuma 2.14 swaps the matched "/old/" for the value as written: "/new/" keeps the slash
             {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                            "replacePrefixMatch": "/new/"}}},
             {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                 "set": [{"name": "x-set", "value": "by-route"}], "remove": ["x-secret"]}},
             {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                 "add": [{"name": "x-answered-by", "value": "route"}]}},
             {"type": "RequestMirror", "requestMirror": {
                 "backendRef": {"kind": "MeshService", "name": "mirror"}, "percentage": 100}}]}},
        {"matches": [{"path": {"type": "Exact", "value": "/moved"}}],
         "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {
             "scheme": "https", "hostname": "example.com", "statusCode": 301,
             "path": {"type": "ReplaceFullPath", "replaceFullPath": "/elsewhere"}}}]}}))
    response = eventually(lambda: (r := routing.get("/old/page?q=1", **{"x-secret": "s"})).ok
                           and r.json()["path"].startswith("/new") and r)
    seen = response.json()
    assert seen["path"] == "/new/page?q=1" and seen["version"] == "v1"
    assert seen["headers"]["x-set"] == "by-route" and "x-secret" not in seen["headers"]
    assert response.headers["x-answered-by"] == "route"
    eventually(lambda: any(m["path"] == "/new/page?q=1" for m in routing.mirrored))
    redirect = routing.get("/moved")
    assert redirect.status_code == 301 and redirect.headers["location"] == "https://example.com/elsewhere"

    assert requests.delete(f"{routing.mesh.cp.url}/meshes/default/meshhttproutes/backend-canary").ok
    # back to the default: the header no longer pins v2, the old path is not rewritten
    eventually(lambda: "v1" in {routing.version(**{"x-version": "v2"}) for _ in range(20)})
    assert routing.get("/old/page").json()["path"] == "/old/page"
    eventually(routing.all_acked, routing.acks)


def test_tcp_route_splits_connections_between_subsets(routing: Routing) -> None:
    eventually(lambda: {tcp_exchange(routing.tcp_port, b"x").split(b":")[0] for _ in range(20)} == {b"v1", b"v2"},
                timeout=40)
    routing.put("meshtcproutes", "echo-split", "MeshTCPRoute", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "echo"},
                "rules": [{"default": {"backendRefs": [subset("echo", "v1", 80), subset("echo", "v2", 20)]}}]}]})
    def counts() -> dict[bytes, int]:
        versions = [tcp_exchange(routing.tcp_port, b"ping").split(b":")[0] for _ in range(200)]
        return {v: versions.count(v) for v in (b"v1", b"v2", b"")}   # b"": closed without an answer

    # in place once v2 is the minority over 200 connections (round robin gives it half)
    eventually(lambda: counts()[b"v2"] < 70)
    # v2 ~ Binomial(200, 0.2): mean 40, sd 5.7; [10, 75] is over 5 sd out on either side; every one answered
    found = counts()
    assert 10 <= found[b"v2"] <= 75 and found[b"v1"] == 200 - found[b"v2"], found

    assert requests.delete(f"{routing.mesh.cp.url}/meshes/default/meshtcproutes/echo-split").ok
    eventually(lambda: counts()[b"v2"] > 70)   # back to round robin over both versions
    eventually(routing.all_acked, routing.acks)


def test_ring_hash_on_a_header_keeps_one_value_on_one_instance(routing: Routing) -> None:
    eventually(lambda: routing.started_versions() == {"v1", "v2"}, timeout=40)
    routing.put("meshloadbalancingstrategies", "sticky-users", "MeshLoadBalancingStrategy", {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 1024}},
                            "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}}]}}]})
    # in place once one user's 20 requests land on one instance (by chance under round robin: 2^-19)
    eventually(lambda: len({routing.version(**{"x-user": "alice"}) for _ in range(20)}) == 1)
    landed = {user: {routing.version(**{"x-user": user}) for _ in range(10)} for user in map(str, range(30))}
    assert all(len(versions) == 1 for versions in landed.values()), landed
    # 30 users all on one of two instances of a 1,024-entry ring: about 2^-29
    assert {v for versions in landed.values() for v in versions} == {"v1", "v2"}
    eventually(routing.all_acked, routing.acks)
