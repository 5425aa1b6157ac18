"""The resource store: one interface, three drivers (sqlite, memory, postgres)."""
from appliance.store.base import (AlreadyExists, Conflict, ListPage, ListQuery, NotFound, Store, StoreError,
                                  WriteOp)

__all__ = ["AlreadyExists", "Conflict", "ListPage", "ListQuery", "NotFound", "Store", "StoreError", "WriteOp"]
