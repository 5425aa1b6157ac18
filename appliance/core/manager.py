"""Rules for creating, updating and deleting resources, above the store.

Computed labels, mesh existence, what a new Mesh brings with it (signing key, default policies)
and what deleting one takes with it, all written in one store transaction.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

from appliance.ca import builtin
from appliance.core.resources import registry
from appliance.core.resources import dataplane as dataplane_resource
from appliance.core.resources import mesh as mesh_resource
from appliance.core.resources.meta import is_dns1035_label, validate_labels, validate_meta
from appliance.core.resources.model import Resource, ResourceType
from appliance.core.validation import BadRequest, ValidationError, Violation, Violations, key
from appliance.gocompat import go_quote
from appliance.store import ListPage, ListQuery, NotFound, Store, WriteOp
from appliance.tokens import signing


class MeshNotFound(Exception):
    def __init__(self, mesh: str) -> None:
        super().__init__(f"mesh of name {mesh} is not found")
        self.mesh = mesh


@dataclass(frozen=True)
class Labelling:
    zone: str = "default"
    environment: str = "universal"


class ResourceManager:
    def __init__(self, store: Store, labelling: Labelling | None = None) -> None:
        self.store = store
        self.labelling = labelling or Labelling()

    # --- reads -------------------------------------------------------------------------------
    def get(self, type: str, mesh: str, name: str) -> Resource | None:
        return self.store.get(type, mesh, name)

    def list(self, query: ListQuery) -> ListPage:
        return self.store.list(query)

    def mesh_exists(self, mesh: str) -> bool:
        return self.store.get("Mesh", "", mesh) is not None

    # --- what a client may write ---------------------------------------------------------------
    def check_write(self, rtype: ResourceType, res: Resource, current: Resource | None,
                    found: Violations | None = None) -> None:
        """The rules a resource a client writes must pass, whoever the client is (a PUT on the API,
        kuma-dp registering its proxy): its name, mesh and labels, then Kuma's create rules
        (`current` is None) or update rules. `found`: what the caller's own checks found already
        (the API's URL against body), reported together with these, as Kuma does.

        `rtype` is the type written (`res.type` may be wrong: the caller reports that).
        Raises ValidationError (title "Could not update a resource" for the update rules) or BadRequest."""
        found = found if found is not None else Violations()
        origin = res.labels.get("kuma.io/origin")
        if origin is not None and origin not in ("zone", "global"):
            found.add(key("labels", "kuma.io/origin"), f"unknown resource origin {origin!r}")
        if origin != "global":
            zone = res.labels.get("kuma.io/zone")
            if zone is not None and zone != self.labelling.zone:
                found.add(key("labels", "kuma.io/zone"), f"kuma.io/zone label should have {self.labelling.zone} value")
            mesh_label = res.labels.get("kuma.io/mesh")
            if mesh_label is not None and mesh_label != res.mesh:
                found.add(key("labels", "kuma.io/mesh"), "kuma.io/mesh label must not differ from mesh set on resource")
        validate_labels(res.labels, found)
        validate_meta(res.name, res.mesh, rtype.scope == "Mesh", found)
        found.raise_if_any()
        if current is None:
            _check_workload_label(rtype, res)
        else:
            self._check_immutable_labels(rtype, current, res)

    def _check_immutable_labels(self, rtype: ResourceType, current: Resource, res: Resource) -> None:
        before, after = self.compute_labels(rtype, current), self.compute_labels(rtype, res)
        found = Violations()
        for label in _IMMUTABLE_LABELS:
            if label in before and label not in after:
                found.add(key("labels", label), f"is immutable, cannot be removed (was \"{before[label]}\")")
            elif label in before and before[label] != after[label]:
                found.add(key("labels", label),
                          f"is immutable, cannot be changed from \"{before[label]}\" to \"{after[label]}\"")
        found.raise_if_any("Could not update a resource")

    # --- labels ------------------------------------------------------------------------------
    def compute_labels(self, rtype: ResourceType, res: Resource) -> dict[str, str]:
        """Kuma's computed labels for a zone CP on Universal (pkg/core/resources/labels)."""
        labels = dict(res.labels)
        if rtype.scope == "Mesh":
            labels.setdefault("kuma.io/mesh", res.mesh or "default")
        if rtype.provided_by_zone:
            labels.setdefault("kuma.io/origin", "zone")
            if labels["kuma.io/origin"] != "global":
                labels.setdefault("kuma.io/zone", self.labelling.zone)
                labels.setdefault("kuma.io/env", self.labelling.environment)
        if rtype.is_proxy:
            labels["kuma.io/proxy-type"] = _proxy_type(res)
        return labels

    # --- writes ------------------------------------------------------------------------------
    def create(self, res: Resource) -> Resource:
        rtype = registry.get(res.type)
        if rtype.scope == "Mesh" and not self.mesh_exists(res.mesh):
            raise MeshNotFound(res.mesh)
        res.labels = self.compute_labels(rtype, res)
        if res.type == "Dataplane":
            res.content = dataplane_resource.not_ready_until_probed(res.content)
        ops = [WriteOp("create", res)]
        if res.type == "Mesh":
            self._check_ca_backends(res)
            ops.extend(WriteOp("create", r) for r in self._mesh_companions(res))
            ops.extend(WriteOp("create", r) for r in self._missing_cas(res))
        self.store.write(ops)
        return res

    def update(self, res: Resource, expected_version: int) -> Resource:
        rtype = registry.get(res.type)
        res.labels = self.compute_labels(rtype, res)
        ops = [WriteOp("update", res, expected_version)]
        if res.type == "Mesh":
            _check_ca_switch(self.store.get("Mesh", "", res.name), res)
            self._check_ca_backends(res)
            ops.extend(WriteOp("create", r) for r in self._missing_cas(res))
        self.store.write(ops)
        return res

    def _check_ca_backends(self, mesh: Resource) -> None:
        """Kuma's mesh manager: a provided CA's Secrets exist and hold a CA with its key (400 otherwise)."""
        found = Violations()

        def secret_data(name: str) -> str | None:
            secret = self.store.get("Secret", mesh.name, name)
            return None if secret is None else str(secret.content.get("data") or "")
        mesh_resource.ca_backend_errors(mesh.name, mesh.content, secret_data, found)
        found.raise_if_any()

    def _missing_cas(self, mesh: Resource) -> list[Resource]:
        """Kuma creates a builtin backend's CA (two Secrets) when the backend appears in the Mesh."""
        out = []
        for backend in (mesh.content.get("mtls") or {}).get("backends") or []:
            if backend.get("type") != "builtin":
                continue
            cert_name, key_name = builtin.ca_secret_names(mesh.name, backend["name"])
            if self.store.get("Secret", mesh.name, cert_name) is not None:
                continue
            # validation has checked both (mesh._check_builtin_ca_cert)
            ca_cert = (backend.get("conf") or {}).get("caCert") or {}
            cert, key = builtin.new_root_ca(
                mesh.name, backend["name"], int(ca_cert.get("RSAbits") or builtin.DEFAULT_RSA_BITS),
                validity_s=builtin.kuma_duration_s(str(ca_cert.get("expiration") or "")) or builtin.CA_VALIDITY_S)
            for name, pem in ((cert_name, cert), (key_name, key)):
                secret = Resource("Secret", mesh.name, name, {"data": base64.b64encode(pem).decode()})
                secret.labels = self.compute_labels(registry.get("Secret"), secret)
                out.append(secret)
        return out

    def delete(self, type: str, mesh: str, name: str) -> None:
        current = self.store.get(type, mesh, name)
        if current is None:
            raise NotFound(f"{type} {name} not found")
        if type == "Secret":
            self._check_secret_unused(mesh, name)
        ops = [WriteOp("delete", current, current.version)]
        if type in registry.INSIGHTS:
            insight = self.store.get(registry.INSIGHTS[type], mesh, name)
            if insight is not None:
                ops.append(WriteOp("delete", insight))
        if type == "Mesh":
            if self.store.count("Dataplane", name):
                raise ValidationError([Violation("mesh", "unable to delete mesh, there are still some "
                                                         "dataplanes attached")])
            for rtype in registry.ALL_TYPES:
                if rtype.scope != "Mesh":
                    continue
                for owned in self.store.list(ListQuery(type=rtype.name, mesh=name)).items:
                    ops.append(WriteOp("delete", owned))
        self.store.write(ops)

    def _check_secret_unused(self, mesh: str, name: str) -> None:
        """Kuma's secret validator: a CA backend's Secret stays while the Mesh names the backend.
        Without its CA a mesh with mTLS enabled would have no identity to serve: never plaintext."""
        owner = self.store.get("Mesh", "", mesh)
        found = Violations()
        for backend in ((owner.content.get("mtls") or {}).get("backends") or []) if owner else []:
            if name in _used_secrets(mesh, backend):
                found.add("name", f"The secret {go_quote(name)} that you are trying to remove is currently in use in "
                                  f"Mesh {go_quote(mesh)} in mTLS backend {go_quote(backend['name'])}. Please remove "
                                  f"the reference from the {go_quote(backend['name'])} backend before removing the "
                                  f"secret.")
        found.raise_if_any()

    def ensure_mesh(self, name: str) -> bool:
        """Create Mesh `name` with its companions unless it exists; True if created."""
        if self.mesh_exists(name):
            return False
        self.create(Resource("Mesh", "", name, {}))
        return True

    def _mesh_companions(self, mesh: Resource) -> list[Resource]:
        """What Kuma creates with every Mesh: its dataplane-token signing key and default policies."""
        key = Resource("Secret", mesh.name, signing.signing_key_name(
            signing.DATAPLANE_TOKEN_SIGNING_KEY_PREFIX + mesh.name),
            {"data": signing.signing_key_secret_data(signing.new_signing_key_pem())})
        out = [key]
        skipped = mesh.content.get("skipCreatingInitialPolicies") or []
        if "*" not in skipped:
            for kind, module in registry.POLICY_MODULES.items():
                if kind in skipped:
                    continue
                for name, spec in module.mesh_defaults(mesh.name):
                    out.append(Resource(kind, mesh.name, name, {"spec": spec}))
        for res in out:
            res.labels = self.compute_labels(registry.get(res.type), res)
        return out


def _check_ca_switch(previous: Resource | None, mesh: Resource) -> None:
    """Kuma forbids changing the enabled CA while mTLS is on (disable mTLS first: plaintext meanwhile). We allow
    the rotation Kuma's docs describe, which never stops trusting a CA still in use: the new backend is already
    in the mesh (every proxy trusts it) and the old one stays during the switch (its certificates still circulate)."""
    before = (previous.content.get("mtls") or {}) if previous else {}
    after = mesh.content.get("mtls") or {}
    old, new = before.get("enabledBackend"), after.get("enabledBackend")
    if not old or not new or old == new:
        return
    old_names = {b.get("name") for b in before.get("backends") or []}
    new_names = {b.get("name") for b in after.get("backends") or []}
    if new not in old_names or old not in new_names:
        raise ValidationError([Violation(
            "mtls.enabledBackend", "Changing CA when mTLS is enabled is forbidden, except as a rotation: add the new "
            "backend to mtls.backends first (proxies then trust both CAs), then enable it while the old one is "
            "still listed, then remove the old one")])


def _used_secrets(mesh: str, backend: dict) -> tuple[str, ...]:
    """The Secrets a CA backend reads (Kuma's UsedSecrets): a builtin CA's own two, a provided CA's named ones."""
    if backend.get("type") == "builtin":
        return builtin.ca_secret_names(mesh, backend.get("name", ""))
    conf = backend.get("conf") if isinstance(backend.get("conf"), dict) else {}
    return tuple(str(source["secret"]) for source in (conf.get("cert"), conf.get("key"))
                 if isinstance(source, dict) and source.get("secret"))


_IMMUTABLE_LABELS = ("kuma.io/origin", "kuma.io/zone", "kuma.io/display-name")


def _check_workload_label(rtype: ResourceType, res: Resource) -> None:
    """Kuma checks a new Universal Dataplane's workload label (it names the proxy's identity)."""
    workload = res.labels.get("kuma.io/workload") if rtype.name == "Dataplane" else None
    if workload and not is_dns1035_label(workload):
        raise BadRequest(
            "labels[\"kuma.io/workload\"]: must be a valid DNS-1035 label (at most 63 characters, matching regex "
            "[a-z]([-a-z0-9]*[a-z0-9])?): a DNS-1035 label must consist of lower case alphanumeric characters or "
            "'-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def _proxy_type(res: Resource) -> str:
    if res.type == "ZoneEgress":
        return "zoneegress"
    gateway = (res.content.get("networking") or {}).get("gateway")
    return "gateway" if gateway else "sidecar"
