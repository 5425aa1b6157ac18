"""Kuma's store metrics (pkg/metrics/store): how long each operation on each resource type takes, and how
often an update loses a race (a version conflict). Instruments one store object in place."""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

from appliance import telemetry
from appliance.store.base import Conflict, ListQuery, Store, WriteOp


def _read(operation: str, call: Callable[..., Any], resource_type: Callable[..., str]) -> Callable[..., Any]:
    @functools.wraps(call)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            telemetry.STORE.observe(time.perf_counter() - started, operation, resource_type(*args, **kwargs))
    return timed


def _write(call: Callable[[list[WriteOp]], Any]) -> Callable[[list[WriteOp]], Any]:
    """Every write (create, update, delete; one transaction may hold several) goes through `write`."""
    @functools.wraps(call)
    def timed(ops: list[WriteOp]) -> Any:
        started = time.perf_counter()
        try:
            return call(ops)
        except Conflict:
            for kind in {op.resource.type for op in ops if op.op == "update"}:
                telemetry.STORE_CONFLICTS.inc(kind)
            raise
        finally:
            elapsed = time.perf_counter() - started
            for operation, kind in {(op.op, op.resource.type) for op in ops}:
                telemetry.STORE.observe(elapsed, operation, kind)
    return timed


def instrument(store: Store) -> Store:
    """`store` with its reads and writes timed (Kuma's `store{operation,resource_type}` summary)."""
    def by_type(type: str, *args: Any, **kwargs: Any) -> str:
        return type

    def by_query(query: ListQuery, *args: Any, **kwargs: Any) -> str:
        return query.type

    store.get = _read("get", store.get, by_type)  # type: ignore[method-assign]
    store.list = _read("list", store.list, by_query)  # type: ignore[method-assign]
    store.write = _write(store.write)  # type: ignore[method-assign]
    return store
