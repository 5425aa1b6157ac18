"""The resource store: one interface, three drivers (sqlite, memory, postgres)."""
from appliance.store.base import (AlreadyExists, Conflict, ListPage, ListQuery, NotFound, Store, StoreError,
                                  StoreUnavailable, WriteOp)

__all__ = ["AlreadyExists", "Conflict", "ListPage", "ListQuery", "NotFound", "Store", "StoreError",
           "StoreUnavailable", "WriteOp"]
