"""ClusterLoadAssignments (EDS): where a service's ready endpoints are."""
from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from appliance.model import names
from appliance.xds.generate._proto import string_struct
from appliance.model.proxy import Endpoint, MeshSnapshot

_LB_KEYS = ("envoy.lb", "envoy.transport_socket_match")


def load_assignment_for(snapshot: MeshSnapshot, service: str) -> endpoint_pb2.ClusterLoadAssignment:
    """The CLA of `service` (or of a part of one, `snapshot.subsets`); depends only on (snapshot, service), so
    callers may memoize it per revision.
    (An external service has one only when the mesh reaches it through the zone egress: `has_load_assignment`.)

    A service without endpoints still gets an (empty) CLA: Envoy keeps a cluster warming until one arrives.
    """
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=service)
    subset = snapshot.subsets.get(service)
    if subset is not None:   # part of a service: its endpoints that carry the subset's tags
        owner, tags = subset
        endpoints = tuple(e for e in snapshot.endpoints.get(owner, ()) if all(e.tags.get(k) == v for k, v in tags))
        _add_endpoints(assignment, endpoints)
        return assignment
    cross_mesh = snapshot.cross_mesh.get(service)
    if cross_mesh is not None:   # a crossMesh gateway: its proxies at their crossMesh listeners
        _add_endpoints(assignment, cross_mesh.endpoints)
        return assignment
    external = snapshot.external_services.get(service)
    if external is not None:
        # Through the zone egress: every egress is an endpoint carrying the external service's tags.
        endpoints = tuple(Endpoint(address, port, external.tags, "") for address, port in snapshot.egresses)
    elif service in snapshot.mesh_external_services:
        endpoints = tuple(Endpoint(address, port, {}, "") for address, port in snapshot.egresses)
    else:
        endpoints = snapshot.endpoints.get(service, ())
    _add_endpoints(assignment, endpoints)
    return assignment


def _add_endpoints(assignment: endpoint_pb2.ClusterLoadAssignment, endpoints: tuple[Endpoint, ...]) -> None:
    if not endpoints:
        return
    locality = assignment.endpoints.add()
    # Sorted so that the same set of endpoints always serializes to the same bytes.
    for endpoint in sorted(endpoints, key=_sort_key):
        lb_endpoint = locality.lb_endpoints.add()
        socket = lb_endpoint.endpoint.address.socket_address
        socket.address = endpoint.address
        socket.port_value = endpoint.port
        lb_endpoint.load_balancing_weight.value = 1
        # Kuma puts the endpoint's tags (minus the service, already the cluster name) in LB and
        # transport-socket-match metadata; subset routing and per-tag TLS matching read them.
        tags = {k: v for k, v in endpoint.tags.items() if k != names.SERVICE_TAG}
        if tags:
            struct = string_struct(tags)
            for key in _LB_KEYS:
                lb_endpoint.metadata.filter_metadata[key].CopyFrom(struct)


def _sort_key(endpoint: Endpoint) -> tuple[str, int, str]:
    return endpoint.address, endpoint.port, endpoint.dataplane


def has_load_assignment(snapshot: MeshSnapshot, service: str) -> bool:
    """False for an external service called directly: its cluster holds its one endpoint (a DNS name may
    not travel by EDS)."""
    return service not in snapshot.external_services or snapshot.zone_egress
