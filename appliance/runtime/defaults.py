"""What a fresh control plane creates once: the default Mesh, the user-token signing key, the admin token,
the Envoy admin CA, the default HostnameGenerators."""
from __future__ import annotations

import base64
import logging

from appliance.ca import envoy_admin
from appliance.model import hostnames
from appliance.core.manager import ResourceManager
from appliance.core.resources.model import Resource
from appliance.store import AlreadyExists
from appliance.tokens import issuer, signing

log = logging.getLogger(__name__)

ADMIN_TOKEN_SECRET = "admin-user-token"
ADMIN_TOKEN_VALIDITY = 10 * 365 * 24 * 3600.0


def ensure_defaults(manager: ResourceManager, skip_mesh_creation: bool, bootstrap_admin_token: bool,
                    skip_hostname_generators: bool = False) -> None:
    store = manager.store
    if not skip_hostname_generators:
        # created when missing, at every leadership term as Kuma's EnsureHostnameGeneratorExists does at start:
        # one a user changed is kept, one a user deleted comes back
        for name, spec in hostnames.DEFAULTS:
            if store.get(hostnames.TYPE, "", name) is None:
                _create_quietly(manager, Resource(hostnames.TYPE, "", name, {"spec": spec},
                                                  dict(hostnames.DEFAULT_LABELS)))
                log.info("hostname generator %r created", name)
    if not issuer.signing_keys(store, issuer.USER_TOKENS):   # none at all: a rotated key 1 stays gone
        name = signing.signing_key_name(signing.USER_TOKEN_SIGNING_KEY_PREFIX)
        data = signing.signing_key_secret_data(signing.new_signing_key_pem())
        _create_quietly(manager, Resource("GlobalSecret", "", name, {"data": data}))
    if bootstrap_admin_token and store.get("GlobalSecret", "", ADMIN_TOKEN_SECRET) is None:
        token = issuer.issue_user_token(store, "mesh-system:admin", ["mesh-system:admin"], ADMIN_TOKEN_VALIDITY)
        _create_quietly(manager, Resource("GlobalSecret", "", ADMIN_TOKEN_SECRET,
                                          {"data": base64.b64encode(token.encode()).decode()}))
        log.info("admin user token stored as GlobalSecret %r", ADMIN_TOKEN_SECRET)
    if store.get("GlobalSecret", "", envoy_admin.SECRET_NAME) is None:
        _create_quietly(manager, Resource("GlobalSecret", "", envoy_admin.SECRET_NAME,
                                          {"data": envoy_admin.secret_data(envoy_admin.new_ca())}))
        log.info("Envoy admin CA stored as GlobalSecret %r", envoy_admin.SECRET_NAME)
    if not skip_mesh_creation:
        try:
            if manager.ensure_mesh("default"):
                log.info("default Mesh created")
        except AlreadyExists:
            pass  # another instance on the same database won the race


def _create_quietly(manager: ResourceManager, res: Resource) -> None:
    try:
        manager.create(res)
    except AlreadyExists:
        pass
