"""Change events: what the store committed, delivered to subscribers after the commit."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Literal

log = logging.getLogger(__name__)

Op = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Change:
    revision: int
    op: Op
    type: str
    mesh: str
    name: str
    version: int


Subscriber = Callable[[list[Change]], None]


class ChangeHub:
    """Fan-out of committed changes. Subscribers must be quick (hand work to their own loop/queue)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def publish(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(changes)
            except Exception:  # one broken subscriber must not stop the others or the writer
                log.exception("change subscriber failed")
