"""What the proxies of one mesh share at one snapshot revision, generated and packed once for all of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Iterator

from google.protobuf.message import Message

from appliance.model.proxy import ALL_KINDS
from appliance.xds.generate import MATCHED, OUTBOUND, OWN, PLUGINS, PREVIOUS, TO_KEYS
from appliance.xds.resources import Packed, pack


def _entry_messages(key: tuple, value: object) -> Iterator[Message]:
    """The messages a cache entry of xds/generate holds: a load assignment or the CA secret, an outbound's
    resources, a proxy's own resources, or the outbounds' resources of the previous revision."""
    kind = key[0]
    if kind in ("cla", "ca"):
        yield value  # type: ignore[misc]
        return
    if kind == OUTBOUND:
        units = (value[0],)  # type: ignore[index]
    elif kind == OWN:
        units = (value[2],)  # type: ignore[index]
    elif kind == PREVIOUS:
        units = tuple(entry[0] for entry in value)  # type: ignore[union-attr]
    else:
        return
    for unit in units:
        for items in unit.values():
            yield from items.values()


@dataclass
class Shared:
    """What the proxies of one mesh share at one snapshot revision: generated messages (clusters, load
    assignments, outbound listeners, the CA secret) by the generator's cache keys, those messages packed
    (serialized once for all proxies), and packed load assignments by service."""
    revision: int
    messages: dict = field(default_factory=dict)
    load_assignments: dict[str, Packed] = field(default_factory=dict)
    # (id of a message in `messages`, resource name) -> (the message, packed); `messages` keeps the ids valid
    packed: dict[tuple[int, str], tuple[Message, Packed]] = field(default_factory=dict)
    _ids: set[int] = field(default_factory=set)
    _counted: int = 0

    def pack(self, type_url: str, name: str, message: Message) -> Packed:
        hit = self.packed.get((id(message), name))
        if hit is not None and hit[0] is message:
            return hit[1]
        packed = pack(type_url, name, message)
        if len(self.messages) != self._counted:
            # entries are only ever added (carry() starts over): look at the new ones, the last in the dict
            if self._counted == 0:
                self._ids = set()
            for key, value in islice(reversed(self.messages.items()), len(self.messages) - self._counted):
                self._ids.update(map(id, _entry_messages(key, value)))
            self._counted = len(self.messages)
        if id(message) in self._ids:
            self.packed[(id(message), name)] = (message, packed)
        return packed

    def successor(self, revision: int, kinds: set[str], proxies: set[int]) -> Shared:
        """What the next revision keeps when only the policies of `kinds` changed, packed as it is:
        - the match of each plugin that read none of them, for the proxies (ids) still watched, with their own
          resources (the generator uses them again while the new matches are equivalent);
        - the load assignments and the CA secret, which no policy changes;
        - the outbounds' resources: as they are when every plugin that read those kinds edits inbound listeners
          or the proxy's own resources only (a MeshTrafficPermission or MeshMetric change), else as candidates
          the generator takes again for an outbound alike whose matches are equivalent (xds/generate
          `_outbound_unit`).
        Everything else is generated anew."""
        kept, changed = {}, set()
        for k, v in self.messages.items():
            if k[0] == MATCHED:
                if ALL_KINDS in v[2] or not v[2].isdisjoint(kinds):
                    changed.add(k[1])
                elif k[2] in proxies:
                    kept[k] = v
            elif k[0] == OWN and k[1] in proxies:
                kept[k] = v
            elif k[0] in ("cla", "ca"):
                kept[k] = v
        # a plugin with no match here read unknown kinds
        matched = {k[1] for k in self.messages if k[0] == MATCHED}
        changed |= set(range(len(PLUGINS))) - matched
        as_they_are = all(getattr(PLUGINS[i], "INBOUND_ONLY", False) or getattr(PLUGINS[i], "OWN_ONLY", False)
                          for i in changed)
        for k, v in self.messages.items():
            if k[0] == OUTBOUND:
                if as_they_are:
                    kept[k] = v
                else:
                    kept.setdefault((PREVIOUS, *k[1:TO_KEYS], *k[TO_KEYS + 1:]), []).append(v)
        for k, v in self.messages.items():
            if k[0] == PREVIOUS and k not in kept:
                # no proxy asked for such an outbound in this revision: the candidates stay
                kept[k] = v
        successor = Shared(revision, kept)
        ids = {id(m) for k, v in kept.items() for m in _entry_messages(k, v)}
        successor.packed = {k: v for k, v in self.packed.items() if k[0] in ids}
        successor.load_assignments = dict(self.load_assignments)
        return successor

    def carry(self, revision: int, changed: set[str]) -> None:
        """After an endpoints-only change, what proxies share stays valid but for those services' load assignments."""
        self.revision = revision
        self.messages = {k: v for k, v in self.messages.items() if not (k[0] == "cla" and k[1] in changed)}
        self.load_assignments = {k: v for k, v in self.load_assignments.items() if k not in changed}
        kept = {id(m) for key, value in self.messages.items() for m in _entry_messages(key, value)}
        self.packed = {k: v for k, v in self.packed.items() if k[0] in kept}
        self._counted = 0
