"""A mesh's mTLS as its proxies get it: the enabled CA backend, read and checked, and the CAs they trust."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from appliance.ca.builtin import kuma_duration_s
from appliance.core.resources.mesh import CaUnavailable, ca_pair, enabled_backend
from appliance.core.resources.model import Resource
from appliance.model.proxy import Mtls
from appliance.store import Store

log = logging.getLogger("appliance.xds")


def mesh_mtls(store: Store, mesh: str, backend: dict[str, Any]) -> Mtls:
    """A CA backend of `mesh`, read and checked; CaUnavailable says why it cannot be used."""
    def secret_data(name: str) -> str | None:
        found = store.get("Secret", mesh, name)
        return None if found is None else str(found.content.get("data") or "")
    cert_pem, key_pem = ca_pair(mesh, backend, secret_data)
    expiration = str(((backend.get("dpCert") or {}).get("rotation") or {}).get("expiration") or "")
    return Mtls(backend=str(backend.get("name") or ""), mode=str(backend.get("mode") or "STRICT"),
                ca_cert_pem=cert_pem, ca_key_pem=key_pem, workload_validity_s=kuma_duration_s(expiration) or None)


def mesh_mtls_of(store: Store, mesh: Resource) -> tuple[Mtls | None, str | None]:
    """The mesh's mTLS with what its proxies trust, or None without an enabled backend; when the mesh asks
    for mTLS and its CA cannot be used, (None, why)."""
    backend = enabled_backend(mesh.content, "mtls")
    if backend is None:
        return None, None
    try:
        mtls = mesh_mtls(store, mesh.name, backend)
    except CaUnavailable as e:
        return None, str(e)
    return replace(mtls, trusted_ca_pem=b"".join(_trusted(store, mesh, mtls))), None


def _trusted(store: Store, mesh: Resource, enabled: Mtls) -> list[bytes]:
    """The CA certificates proxies trust: the enabled backend's, then every other usable backend's (a CA
    rotation in progress). One that cannot be used is not trusted (and not needed: nothing signs with it)."""
    out = [_with_newline(enabled.ca_cert_pem)]
    for backend in (mesh.content.get("mtls") or {}).get("backends") or []:
        if backend.get("name") == enabled.backend:
            continue
        try:
            out.append(_with_newline(mesh_mtls(store, mesh.name, backend).ca_cert_pem))
        except CaUnavailable as e:
            log.debug("mesh %s: backend %s is not trusted: %s", mesh.name, backend.get("name"), e)
    return out


def trusted_ca_pem(store: Store, mesh: Resource) -> bytes | None:
    """The CAs the proxies of `mesh` trust; None when it has no usable mTLS."""
    mtls, _ = mesh_mtls_of(store, mesh)
    return None if mtls is None else mtls.trusted_ca_pem


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"   # concatenated PEMs must not run together
