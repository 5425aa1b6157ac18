"""The store interface shared by every driver.

Every write is a batch of operations committed atomically; each operation bumps the resource's
version and appends one row to the change log with the next revision. Updates and deletes may
carry the version the caller read (compare-and-swap): a different stored version is a Conflict.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Literal

from appliance.core.events import Change, ChangeHub
from appliance.core.resources.model import Resource


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, refused, timed out, or the connection was lost)."""


@dataclass
class WriteOp:
    op: Literal["create", "update", "delete"]
    resource: Resource
    # update/delete: the version the caller read; None = unconditional
    expected_version: int | None = None


@dataclass
class ListQuery:
    type: str
    mesh: str | None = None                 # None = every mesh
    name_contains: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # Filters that need the content (e.g. dataplane tags) run in Python before paging.
    predicate: Callable[[Resource], bool] | None = None
    offset: int = 0
    size: int | None = None                 # None = everything


@dataclass
class ListPage:
    items: list[Resource]
    total: int
    next_offset: int | None


def now_rfc3339() -> str:
    """UTC, microsecond precision, as Kuma prints times (e.g. 2024-05-01T10:00:00.123456Z)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store(abc.ABC):
    def __init__(self, hub: ChangeHub | None = None) -> None:
        self.hub = hub or ChangeHub()

    @abc.abstractmethod
    def get(self, type: str, mesh: str, name: str) -> Resource | None: ...

    @abc.abstractmethod
    def list(self, query: ListQuery) -> ListPage: ...

    @abc.abstractmethod
    def _commit(self, ops: list[WriteOp]) -> list[Change]:
        """Apply `ops` atomically and return the change rows written."""

    @abc.abstractmethod
    def revision(self) -> int:
        """The newest revision in the change log (0 when empty)."""

    @abc.abstractmethod
    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]: ...

    def close(self) -> None:
        pass

    def healthy(self) -> bool:
        """Whether the store reaches its database now (`/ready` answers 503 while it does not)."""
        return True

    def write(self, ops: list[WriteOp]) -> list[Change]:
        changes = self._commit(ops)
        self.hub.publish(changes)
        return changes

    def create(self, resource: Resource) -> Resource:
        self.write([WriteOp("create", resource)])
        return resource

    def update(self, resource: Resource, expected_version: int | None = None) -> Resource:
        self.write([WriteOp("update", resource, resource.version if expected_version is None else expected_version)])
        return resource

    def delete(self, type: str, mesh: str, name: str, expected_version: int | None = None) -> None:
        self.write([WriteOp("delete", Resource(type, mesh, name, {}), expected_version)])

    def count(self, type: str, mesh: str | None = None) -> int:
        return self.list(ListQuery(type=type, mesh=mesh, size=0)).total


def stamp(op: WriteOp, current: Resource | None) -> None:
    """Set version and times on `op.resource` for a write over `current` (None when absent).

    Raises the error the operation deserves: AlreadyExists, NotFound or Conflict.
    """
    res = op.resource
    where = f"{res.type} {res.mesh + '/' if res.mesh else ''}{res.name}"
    if op.op == "create":
        if current is not None:
            raise AlreadyExists(f"resource already exists: type=\"{res.type}\" name=\"{res.name}\" mesh=\"{res.mesh}\"")
        res.version = 1
        res.creation_time = res.modification_time = now_rfc3339()
        return
    if current is None:
        raise NotFound(f"{where} not found")
    if op.expected_version is not None and op.expected_version != current.version:
        raise Conflict(f"resource conflict: type=\"{res.type}\" name=\"{res.name}\" mesh=\"{res.mesh}\": "
                       f"version {op.expected_version} is stale (now {current.version})")
    res.version = current.version + 1
    res.creation_time = current.creation_time
    res.modification_time = now_rfc3339()
