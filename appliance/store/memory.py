"""In-memory driver: the same semantics as SQLite, gone when the process ends (KUMA_STORE_TYPE=memory)."""
from __future__ import annotations

import copy
import threading

from appliance.core.events import Change, ChangeHub
from appliance.core.resources.model import Resource
from appliance.store.base import ListPage, ListQuery, Store, WriteOp, stamp


class MemoryStore(Store):
    def __init__(self, hub: ChangeHub | None = None) -> None:
        super().__init__(hub)
        self._items: dict[tuple[str, str, str], Resource] = {}
        self._changes: list[Change] = []
        self._lock = threading.Lock()

    def get(self, type: str, mesh: str, name: str) -> Resource | None:
        with self._lock:
            found = self._items.get((type, mesh, name))
            return copy.deepcopy(found) if found else None

    def list(self, query: ListQuery) -> ListPage:
        with self._lock:
            items = [copy.deepcopy(r) for (t, m, _), r in self._items.items()
                     if t == query.type and (query.mesh is None or m == query.mesh)]
        items = [r for r in items
                 if query.name_contains in r.name
                 and all(r.labels.get(k) == v for k, v in query.labels.items())
                 and (query.predicate is None or query.predicate(r))]
        items.sort(key=lambda r: (r.name, r.mesh))
        total = len(items)
        if query.size == 0:
            return ListPage([], total, None)
        end = None if query.size is None else query.offset + query.size
        page = items[query.offset:end]
        end_offset = query.offset + len(page)
        return ListPage(page, total, end_offset if query.size and end_offset < total else None)

    def revision(self) -> int:
        with self._lock:
            return self._changes[-1].revision if self._changes else 0

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        with self._lock:
            return [c for c in self._changes if c.revision > revision][:limit]

    def _commit(self, ops: list[WriteOp]) -> list[Change]:
        with self._lock:
            staged = dict(self._items)
            changes = []
            revision = self._changes[-1].revision if self._changes else 0
            for op in ops:
                res = op.resource
                stamp(op, staged.get(res.key))
                if op.op == "delete":
                    staged.pop(res.key, None)
                else:
                    staged[res.key] = copy.deepcopy(res)
                revision += 1
                changes.append(Change(revision, op.op, res.type, res.mesh, res.name, res.version))
            self._items = staged
            self._changes.extend(changes)
            return changes
