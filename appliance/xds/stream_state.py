"""What an ADS stream remembers per resource type: names asked for, versions and nonces sent, what the proxy
accepted, and the make-before-break checks built on that (xds/server.py delivers; this is its bookkeeping)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from appliance import telemetry
from appliance.xds.resources import LISTENER, ROUTE, Packed, type_version

__all__ = ["USERS_OF_CLUSTERS", "TypeState", "confirmed", "delta_in_place", "nonce", "sent", "sotw_in_place",
           "sotw_version"]


@dataclass
class TypeState:
    names: frozenset[str] | None = None          # None = wildcard (LDS/CDS) or not yet known
    subscribed: bool = False
    sent_version: str = ""
    nonce: str = ""
    acked_version: str = ""
    ack_seen: bool = False    # the current response was ACKed already: the same request again asks anew
    answered: bool = True     # SotW: the proxy ACKed or NACKed the last response (False while in flight)
    accepted: bool = True     # the proxy ACKed the last response (False while in flight, and after a NACK)
    sent: dict[str, str] = field(default_factory=dict)   # delta: name -> version the proxy has
    # delta CDS: clusters sent on this stream before the proxy subscribed to EDS (see _delta_request)
    sent_before_eds: set[str] = field(default_factory=set)
    # SotW: the items and names `version_of` was computed for (the cache's memo dicts change on regeneration)
    versioned: tuple[object, frozenset[str] | None] | None = None
    version_of: str = ""
    last_items: dict[str, Packed] | None = None           # SotW: what the last response held (CDS)
    sent_at: dict[str, float] = field(default_factory=dict)   # nonce -> when that response left (xds_delivery)


UNANSWERED_MAX = 64   # responses a proxy never answered are forgotten past this many


def confirmed(t: str, state: TypeState, nonce: str, error: str | None) -> None:
    """Kuma's xds_requests_received, and xds_delivery (response to its ACK/NACK, in milliseconds): every
    answer counts, also one to a response that a newer one has replaced since, as Kuma counts by version."""
    if error is None:
        telemetry.XDS_REQUESTS_RECEIVED.inc(t, "ACK", "no_error")
    else:
        telemetry.XDS_REQUESTS_RECEIVED.inc(t, "NACK", "user" if "failed calling webhook" in error else "other")
    sent_at = state.sent_at.pop(nonce, None)
    if sent_at is not None:
        telemetry.XDS_DELIVERY.observe((time.monotonic() - sent_at) * 1000)


def sent(t: str, state: TypeState) -> None:
    telemetry.XDS_RESPONSES_SENT.inc(t)
    if len(state.sent_at) >= UNANSWERED_MAX:
        state.sent_at.pop(next(iter(state.sent_at)))
    state.sent_at[state.nonce] = time.monotonic()


NONCES = itertools.count(1)


def nonce() -> str:
    # only needs to differ from this stream's earlier nonces; a counter spares a getrandom() per response
    return format(next(NONCES), "x")




# what names clusters: a cluster they stop using stays until the proxy accepted them without it
USERS_OF_CLUSTERS = (LISTENER, ROUTE)


def sotw_in_place(state: TypeState | None, items: dict[str, Packed]) -> bool:
    """Whether a SotW proxy runs what it would get now of one type (or does not ask for that type)."""
    if state is None or not state.subscribed:
        return True
    return state.accepted and sotw_version(state, items) == state.sent_version


def sotw_version(state: TypeState, items: dict[str, Packed]) -> str:
    """The SotW version of what `items` would send, memoized on the stream (the cache's memo dicts are
    replaced on regeneration, so identity tells a new set)."""
    if state.versioned is None or state.versioned[0] is not items or state.versioned[1] != state.names:
        state.versioned, state.version_of = (items, state.names), type_version(items, state.names)
    return state.version_of


def delta_in_place(state: TypeState | None, items: dict[str, Packed]) -> bool:
    """Whether a delta proxy runs what it would get now of one type (or does not ask for that type)."""
    if state is None or not state.subscribed:
        return True
    wanted = {n: p for n, p in items.items() if state.names is None or n in state.names}
    return state.accepted and wanted.keys() == state.sent.keys() and all(
        state.sent[n] == p.version for n, p in wanted.items())
