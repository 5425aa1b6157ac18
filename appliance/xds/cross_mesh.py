"""Cross-mesh gateways (Kuma 2.14's `crossMesh: true` MeshGateway listeners), as one zone has them.

A mesh exposes services to the other meshes through a MeshGateway listener marked `crossMesh` (HTTP only).
Its gateway proxies then accept, on that listener, mTLS from the proxies of every mesh with mTLS, each with
its own mesh's identity (Kuma's all-in-one CA, `mesh_ca:secret:all`, no SPIFFE id check). A sidecar of any
mesh (the gateway's own included) reaches it through an outbound whose tags carry the gateway's
`kuma.io/service` and `kuma.io/mesh: <the gateway's mesh>`, listed in its Dataplane or, for a transparent
proxy, the virtual IP of the listener's hostname (model/vips.py): a cluster `<service>-<hash>_<mesh>` to
the gateway proxies' crossMesh listener ports, whose certificate it checks against that mesh's CA
(`spiffe://<mesh>/<service>`).

This module reads what the snapshot of one mesh needs of all meshes; which meshes a change concerns
(`dependent_meshes`), as a snapshot of one mesh now depends on others.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from appliance.core.events import Change
from appliance.core.resources.model import Resource
from appliance.model import names
from appliance.model.proxy import CrossMeshGateway, Endpoint, MeshGateway, MeshSnapshot
from appliance.model.vips import VipOutbound
from appliance.policies._gateway import select_gateway
from appliance.store import ListQuery, Store


def _has_cross_mesh_listener(gateway: Resource) -> bool:
    return any(isinstance(l, dict) and l.get("crossMesh")
               for l in (gateway.content.get("conf") or {}).get("listeners") or [])


def serves_cross_mesh(gateways: Iterable[MeshGateway]) -> bool:
    return any(l.cross_mesh for g in gateways for l in g.listeners)


def _endpoints(store: Store, mesh: str, gateways: tuple[MeshGateway, ...]) -> dict[str, list[Endpoint]]:
    """Kuma's fillLocalCrossMeshOutbounds: per BUILTIN gateway proxy of `mesh` and crossMesh listener of the
    MeshGateway that configures it, an endpoint at the proxy's address and the listener's port, tagged with the
    proxy's gateway tags, over them the MeshGateway's, over those the listener's; by the proxy's service."""
    out: dict[str, list[Endpoint]] = {}
    for dp in sorted(store.list(ListQuery(type="Dataplane", mesh=mesh)).items, key=lambda r: r.name):
        networking = dp.content.get("networking") or {}
        spec = networking.get("gateway") or {}
        if spec.get("type") != "BUILTIN":
            continue
        tags = {k: str(v) for k, v in (spec.get("tags") or {}).items()}
        gateway = select_gateway(gateways, tags)
        if gateway is None or not tags.get(names.SERVICE_TAG):
            continue
        for listener in gateway.listeners:
            if listener.cross_mesh:
                out.setdefault(tags[names.SERVICE_TAG], []).append(Endpoint(
                    str(networking.get("address") or ""), listener.port,
                    {**tags, **gateway.tags, **listener.tags}, dp.name))
    return out


def _clusters(mesh: str, service: str, endpoints: list[Endpoint], ca: bytes,
              vip_outbounds: tuple[VipOutbound, ...]) -> Iterator[tuple[str, CrossMeshGateway]]:
    """The clusters of one gateway service: by service and mesh (all its crossMesh listeners), and per set of
    tags the virtual IPs of its listeners carry (only the endpoints with those tags: that listener)."""
    yield names.cross_mesh_cluster(service, mesh), CrossMeshGateway(mesh, service, tuple(endpoints), ca)
    for vip in vip_outbounds:
        tags = dict(vip.tags)
        if tags.pop(names.MESH_TAG, None) != mesh or vip.service != service:
            continue
        chosen = tuple(e for e in endpoints if all(e.tags.get(k) == v for k, v in tags.items()))
        yield names.cross_mesh_cluster(service, mesh, tags), CrossMeshGateway(mesh, service, chosen, ca)


def snapshot_fields(store: Store, mesh: str, own_gateways: tuple[MeshGateway, ...],
                    gateways_of: Callable[[str], tuple[MeshGateway, ...]],
                    trusted_ca: Callable[[Resource], bytes | None],
                    vip_outbounds: tuple[VipOutbound, ...]) -> dict[str, Any]:
    """The MeshSnapshot fields of `mesh` that come from all meshes: `cross_mesh` (the clusters of the crossMesh
    gateways its sidecars may call, its own included) and, when one of its own MeshGateways has a crossMesh
    listener, `all_mesh_ca_pem` (the CAs of every mesh with usable mTLS, by mesh name); `cross_mesh_sources`.
    `trusted_ca` gives a Mesh's CAs (None without usable mTLS)."""
    others = sorted({g.mesh for g in store.list(ListQuery(type="MeshGateway")).items if _has_cross_mesh_listener(g)})
    meshes = {m.name: m for m in store.list(ListQuery(type="Mesh")).items}
    cross_mesh: dict[str, CrossMeshGateway] = {}
    for other in others:
        if other not in meshes:
            continue
        ca = trusted_ca(meshes[other]) or b""
        gateways = own_gateways if other == mesh else gateways_of(other)
        for service, endpoints in sorted(_endpoints(store, other, gateways).items()):
            cross_mesh.update(_clusters(other, service, endpoints, ca, vip_outbounds))
    all_ca = b""
    if serves_cross_mesh(own_gateways):
        all_ca = b"".join(ca for name in sorted(meshes) if (ca := trusted_ca(meshes[name])))
    return {"cross_mesh": cross_mesh, "all_mesh_ca_pem": all_ca, "cross_mesh_sources": tuple(others)}


def dependent_meshes(changes: list[Change], snapshots: dict[str, MeshSnapshot | None]) -> set[str] | None:
    """The meshes whose snapshots a change concerns beyond its own mesh (None: every mesh): every mesh when a
    MeshGateway changes (it may have become crossMesh) or when a mesh serving a crossMesh gateway changes (its
    CA, its gateway proxies, their Secrets); the meshes serving one when another Mesh or a Secret changes (a
    CA they trust)."""
    # any snapshot knows them all, even those whose gateway proxies have not connected yet
    sources = {m for s in list(snapshots.values()) if s is not None for m in s.cross_mesh_sources}
    if any(c.type == "MeshGateway" or (c.mesh or (c.name if c.type == "Mesh" else "")) in sources
           for c in changes):
        return None
    if sources and any(c.type in ("Mesh", "Secret") for c in changes):
        return sources
    return set()
