"""MeshProxyPatch on a sidecar: the `appendModifications` of every policy that selects the proxy, in
precedence order (Kuma concatenates `append*` lists when it merges confs), applied one after the other
on all of the proxy's resources, after every other plugin (pkg/plugins/policies/meshproxypatch/plugin).

- cluster / listener: Add (a new resource), Remove, Patch (proto merge of `value`, or `jsonPatches` on the
  resource's JSON form), on the resources whose match (name, origin, listener tags) fits;
- networkFilter / httpFilter: AddFirst, AddLast, AddBefore, AddAfter, Remove, Patch, on every filter chain
  of the matched listeners (httpFilter: inside their HTTP connection managers);
- virtualHost: Add, Remove, Patch in the route configurations inline in the listeners' HTTP connection
  managers. Inbound ones go to RDS only afterwards (xds/generate), so they are patched too.

Origins, as Kuma names them, are read from our generator's resources: a listener with INBOUND traffic
direction and a local application's cluster (`localhost:<port>`) are "inbound", the other listeners and
clusters "outbound"; what a patch adds is "mesh-proxy-patch" (listeners) and
"proxy-template-modifications" (clusters), as in Kuma.

All or nothing: a modification that cannot apply (a JSON patch on a path that is not there, a filter
config of another type) leaves the proxy's resources as they were and raises GenerationError, so the
proxy keeps its last good config, as Kuma's failed generation does.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from appliance.model import names
from appliance.model.proxy import GenerationError, MeshGateway, MeshSnapshot, Policy, Proxy
from appliance.policies import _envoy, _gateway, _merge, _rules
from appliance.policies._common import as_dict, as_list
from appliance.policies.meshproxypatch import _jsonpatch, _values
from appliance.policies.meshproxypatch.schema import (
    ADD, ADD_AFTER, ADD_BEFORE, ADD_FIRST, ADD_LAST, KINDS, PATCH, REMOVE,
)

KIND = "MeshProxyPatch"
INBOUND, OUTBOUND = "inbound", "outbound"
ADDED_LISTENER = "mesh-proxy-patch"                   # metadata.OriginMeshProxyPatch
ADDED_CLUSTER = "proxy-template-modifications"        # metadata.OriginProxyTemplateModifications
ORIGIN_GATEWAY = "gateway"                            # metadata.OriginGateway: a builtin gateway's own
# The legacy and the unified names of the transparent proxy's listeners match each other (listenerNameMatches).
_EQUIVALENT_LISTENERS = (("outbound:passthrough:ipv4", "self_transparentproxy_passthrough_outbound_ipv4"),
                         ("outbound:passthrough:ipv6", "self_transparentproxy_passthrough_outbound_ipv6"),
                         ("inbound:passthrough:ipv4", "self_transparentproxy_passthrough_inbound_ipv4"),
                         ("inbound:passthrough:ipv6", "self_transparentproxy_passthrough_inbound_ipv6"))

Mod = dict[str, Any]


class PatchFailed(GenerationError):
    pass


@dataclass(frozen=True)
class Matched:
    modifications: tuple[tuple[str, str, Mod], ...]   # (policy name, kind, modification) in order
    to_key: tuple[str, ...] = ()   # outbound units are not touched by `apply`: nothing to share them by


def edits_own_resources(matched: Matched) -> bool:
    """Any modification may edit the proxy's inbound listeners and their inline routes (policies/__init__.py)."""
    return bool(matched.modifications)


def match(snapshot: MeshSnapshot, proxy: Proxy) -> Matched:
    return _matched(_rules.select(snapshot.policies.get(KIND, ()), proxy).proxy)


def _matched(selected: Sequence[Policy]) -> Matched:
    """The modifications of the selecting policies (in precedence order), merged as Kuma's SingleItemRules."""
    modifications = as_list(_merge.single_item_conf(selected).get("appendModifications"))
    # which policy each came from, for the message when one cannot apply
    origins = [p.name for p in selected
               for _ in as_list(as_dict(p.spec.get("default")).get("appendModifications"))]
    mods = []
    for policy, modification in zip(origins, modifications):
        for kind in KINDS:
            if as_dict(modification).get(kind) is not None:
                mods.append((policy, kind, modification[kind]))
    return Matched(tuple(mods))


def apply(matched: Matched, resources: _envoy.Resources) -> None:
    """Nothing per outbound or before the others: `apply_to_proxy` works on the whole proxy."""


def patch_gateway(snapshot: MeshSnapshot, proxy: Proxy, gateway: MeshGateway, generated: set[tuple[str, str]],
                  resources: _envoy.Resources) -> None:
    """On a builtin gateway: the modifications of the policies that select any of its MeshGateway's listeners
    (policies/_gateway.py), on all of its resources, last (xds/generate/gateway.py). `generated`: the
    (type URL, name) of what the gateway generator made, whose origin is "gateway" as in Kuma."""
    selected = _gateway.gateway_policies(snapshot.policies.get(KIND, ()), proxy, gateway)
    apply_to_proxy(_matched(selected), resources, dict.fromkeys(generated, ORIGIN_GATEWAY))


def apply_to_proxy(matched: Matched, resources: _envoy.Resources,
                   origins: dict[tuple[str, str], str] | None = None) -> None:
    """`origins`: what some resources' origin is, by (type URL, name), where it is not told by their direction."""
    if not matched.modifications:
        return
    work = _Work(resources, origins or {})
    for i, (policy, kind, mod) in enumerate(matched.modifications):
        try:
            _APPLY[kind](work, mod)
        except (json_format.ParseError, TypeError, ValueError, RecursionError) as e:   # PatchError, InvalidValue
            raise PatchFailed(f"MeshProxyPatch {policy!r}: could not apply the {kind} modification "
                              f"(appendModifications of the proxy, item {i}): {e}") from None
    for type_url, by_name in work.resources.items():
        resources[type_url].clear()
        resources[type_url].update(by_name)


class _Work:
    """The proxy's resources during the modifications: its own dicts, and a private copy of every message
    it changes (generated messages may be shared with other proxies)."""

    def __init__(self, resources: _envoy.Resources, origins: dict[tuple[str, str], str]) -> None:
        self.resources = {type_url: dict(by_name) for type_url, by_name in resources.items()}
        self.added: dict[tuple[str, str], str] = dict(origins)   # the origins told, then what the patches add
        self._own: dict[int, Message] = {}   # by id(), holding each so that no id is reused meanwhile

    def origin(self, type_url: str, name: str, message: Message) -> str:
        if (type_url, name) in self.added:
            return self.added[(type_url, name)]
        if isinstance(message, listener_pb2.Listener):
            return INBOUND if message.traffic_direction == base_pb2.INBOUND else OUTBOUND
        return INBOUND if names.is_local_cluster(name) else OUTBOUND

    def items(self, type_url: str) -> list[tuple[str, Message]]:
        return list(self.resources[type_url].items())

    def own(self, type_url: str, name: str) -> Message:
        message = self.resources[type_url][name]
        if id(message) not in self._own:
            fresh = type(message)()
            fresh.CopyFrom(message)
            self.resources[type_url][name] = message = fresh
            self._own[id(message)] = message
        return message

    def add(self, type_url: str, name: str, message: Message, origin: str) -> None:
        self.resources[type_url][name] = message
        self._own[id(message)] = message
        self.added[(type_url, name)] = origin


# --- merging and JSON patches (util_proto.Merge, jsonpatch.MergeJsonPatch) -------------------------------

def merge(dst: Message, src: Message) -> None:
    """proto.Merge as Kuma's util_proto.Merge: lists append, map entries replace, messages merge field by
    field, except a Duration, which replaces the one there."""
    for field, value in src.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(dst, field.name)
            for key in value:
                if field.message_type.fields_by_name["value"].message_type is not None:
                    target[key].CopyFrom(value[key])
                else:
                    target[key] = value[key]
        elif field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            if field.message_type.full_name == duration_pb2.Duration.DESCRIPTOR.full_name:
                getattr(dst, field.name).CopyFrom(value)
            else:
                merge(getattr(dst, field.name), value)
        else:
            setattr(dst, field.name, value)


def json_patch(message: Message, patches: list[Any]) -> None:
    """The resource in its JSON form (jsonpb's: lowerCamelCase, enums by name), patched, read back."""
    document = json_format.MessageToDict(message)
    patched = _jsonpatch.apply(document, patches)
    fresh = type(message)()
    json_format.ParseDict(patched, fresh, ignore_unknown_fields=True)
    message.CopyFrom(fresh)


def _unpack(packed: any_pb2.Any) -> Message:
    full_name = packed.type_url.rsplit("/", 1)[-1]
    message = _values.new_message(full_name)
    packed.Unpack(message)
    return message


def _merge_any(dst: any_pb2.Any, src: any_pb2.Any | None, patches: list[Any]) -> None:
    """MergeAnys / MergeJsonPatchAny: a filter's typed config merged with the patch's, or JSON-patched."""
    if patches:
        config = _unpack(dst)
        json_patch(config, patches)
        dst.CopyFrom(_envoy.pack(config))
        return
    if src is None or not src.type_url:
        return
    if not dst.type_url:
        dst.CopyFrom(src)
        return
    if src.type_url != dst.type_url:
        raise ValueError(f'type URL of dst "{dst.type_url}" is different than src "{src.type_url}"')
    config, extra = _unpack(dst), _unpack(src)
    merge(config, extra)
    dst.CopyFrom(_envoy.pack(config))


@lru_cache(maxsize=256)
def _parsed(kind: str, text: str) -> Message:
    # Every proxy a patch selects applies the same few values: read each once.
    return _values.parse(kind, text)


def _value(kind: str, mod: Mod) -> Message:
    """The modification's value as a message of its own (it may be added to the resources and changed)."""
    message = _values.MESSAGES[kind]()
    if mod.get("value") is not None:
        message.CopyFrom(_parsed(kind, str(mod["value"])))
    return message


def _patch(message: Message, mod: Mod, value: Message) -> None:
    patches = as_list(mod.get("jsonPatches"))
    if patches:
        json_patch(message, patches)
    else:
        merge(message, value)


# --- matching ----------------------------------------------------------------------------------------------

def listener_name_matches(wanted: str, actual: str) -> bool:
    return wanted == actual or any((wanted, actual) in (pair, pair[::-1]) for pair in _EQUIVALENT_LISTENERS)


def _listener_tags(listener: Message) -> dict[str, str]:
    """envoy_metadata.ExtractTags: Listener.metadata.filter_metadata["io.kuma.tags"] as strings."""
    if not isinstance(listener, listener_pb2.Listener):
        return {}
    fields = listener.metadata.filter_metadata[names.TAGS_METADATA_KEY].fields \
        if names.TAGS_METADATA_KEY in listener.metadata.filter_metadata else {}
    return {key: value.string_value for key, value in fields.items()}


def _listener_matches(work: _Work, name: str, listener: Message, match: Any, name_key: str, tags_key: str) -> bool:
    if match is None:
        return True
    match = as_dict(match)
    if match.get(name_key) is not None and not listener_name_matches(match[name_key], name):
        return False
    if match.get("origin") is not None and match["origin"] != work.origin(names.LISTENER, name, listener):
        return False
    selector = as_dict(match.get(tags_key))
    return not selector or _rules.tags_match(selector, _listener_tags(listener))   # TagSelector.Matches


# --- the five kinds ----------------------------------------------------------------------------------------

def _cluster(work: _Work, mod: Mod) -> None:
    value, operation, match = _value("cluster", mod), mod.get("operation"), mod.get("match")

    def matches(name: str, cluster: Message) -> bool:
        if match is None:
            return True
        m = as_dict(match)
        return (m.get("name") is None or m["name"] == name) and \
            (m.get("origin") is None or m["origin"] == work.origin(names.CLUSTER, name, cluster))

    if operation == ADD:
        work.add(names.CLUSTER, value.name, value, ADDED_CLUSTER)
    for name, cluster in work.items(names.CLUSTER):
        if operation == ADD or not matches(name, cluster):
            continue
        if operation == REMOVE:
            del work.resources[names.CLUSTER][name]
        elif operation == PATCH:
            _patch(work.own(names.CLUSTER, name), mod, value)


def _listener(work: _Work, mod: Mod) -> None:
    value, operation, match = _value("listener", mod), mod.get("operation"), mod.get("match")
    if operation == ADD:
        work.add(names.LISTENER, value.name, value, ADDED_LISTENER)
        return
    for name, listener in work.items(names.LISTENER):
        if not _listener_matches(work, name, listener, match, "name", "tags"):
            continue
        if operation == REMOVE:
            del work.resources[names.LISTENER][name]
        elif operation == PATCH:
            _patch(work.own(names.LISTENER, name), mod, value)


def _filter_list(filters: Any, mod: Mod, value: Message, patch_typed: Callable[[Message], None]) -> None:
    """The list operations networkFilter and httpFilter share, on one chain's or one HCM's filters."""
    operation, wanted = mod.get("operation"), as_dict(mod.get("match")).get("name")

    def matches(item: Message) -> bool:
        return wanted is None or item.name == wanted

    if operation == ADD_FIRST:
        filters.insert(0, value)
    elif operation == ADD_LAST:
        filters.append(value)
    elif operation in (ADD_BEFORE, ADD_AFTER):
        found = next((i for i, item in enumerate(filters) if wanted is not None and item.name == wanted), -1)
        if found != -1:
            filters.insert(found if operation == ADD_BEFORE else found + 1, value)
    elif operation == REMOVE:
        keep = [item for item in filters if not matches(item)]
        if len(keep) != len(filters):
            del filters[:]
            filters.extend(keep)
    elif operation == PATCH:
        for item in filters:
            if matches(item):
                patch_typed(item)


def _network_filter(work: _Work, mod: Mod) -> None:
    value = _value("networkFilter", mod)
    patches = as_list(mod.get("jsonPatches"))

    def patch_typed(item: Message) -> None:
        _merge_any(item.typed_config, value.typed_config if value.HasField("typed_config") else None, patches)

    for name, listener in work.items(names.LISTENER):
        if not _listener_matches(work, name, listener, mod.get("match"), "listenerName", "listenerTags"):
            continue
        for chain in work.own(names.LISTENER, name).filter_chains:
            _filter_list(chain.filters, mod, value, patch_typed)


def _each_hcm(work: _Work, name: str, edit: Callable[[hcm_pb2.HttpConnectionManager], None]) -> None:
    for chain in work.own(names.LISTENER, name).filter_chains:
        for network_filter in chain.filters:
            if network_filter.name != names.HCM_FILTER:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            edit(hcm)
            network_filter.typed_config.CopyFrom(_envoy.pack(hcm))


def _http_filter(work: _Work, mod: Mod) -> None:
    value = _value("httpFilter", mod)
    patches = as_list(mod.get("jsonPatches"))

    def patch_typed(item: Message) -> None:
        _merge_any(item.typed_config, value.typed_config if value.HasField("typed_config") else None, patches)

    for name, listener in work.items(names.LISTENER):
        if _listener_matches(work, name, listener, mod.get("match"), "listenerName", "listenerTags"):
            _each_hcm(work, name, lambda hcm: _filter_list(hcm.http_filters, mod, value, patch_typed))


def _virtual_host(work: _Work, mod: Mod) -> None:
    value, operation, match = _value("virtualHost", mod), mod.get("operation"), as_dict(mod.get("match"))
    wanted, config_name = match.get("name"), match.get("routeConfigurationName")

    def edit(hcm: hcm_pb2.HttpConnectionManager) -> None:
        if not hcm.HasField("route_config"):
            return   # routes by RDS from elsewhere: Kuma patches only inline route configurations
        config: route_pb2.RouteConfiguration = hcm.route_config
        if config_name is not None and config.name != config_name:
            return
        hosts = config.virtual_hosts
        if operation == ADD:
            hosts.add().CopyFrom(value)
        elif operation == REMOVE:
            keep = [h for h in hosts if wanted is not None and h.name != wanted]
            del hosts[:]
            hosts.extend(keep)
        elif operation == PATCH:
            for host in hosts:
                if wanted is None or host.name == wanted:
                    _patch(host, mod, value)

    for name, listener in work.items(names.LISTENER):
        if match.get("origin") is not None and match["origin"] != work.origin(names.LISTENER, name, listener):
            continue
        if any(f.name == names.HCM_FILTER for chain in listener.filter_chains for f in chain.filters):
            _each_hcm(work, name, edit)


_APPLY: dict[str, Callable[[_Work, Mod], None]] = {
    "cluster": _cluster, "listener": _listener, "networkFilter": _network_filter,
    "httpFilter": _http_filter, "virtualHost": _virtual_host,
}
