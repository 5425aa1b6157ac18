"""Go's time.Duration as text: parsed from flags (`--valid-for 24h`), written for the API (`24h0m0s`)."""
from __future__ import annotations

import argparse
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse(text: str) -> float:
    """Seconds in a Go duration ("1h30m", "-5s", "0"); ValueError with Go's message otherwise."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return -total if text.startswith("-") else total


def flag(text: str) -> float:
    """argparse type for duration flags."""
    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": {e}') from e


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def format(seconds: float) -> str:  # noqa: A001 - mirrors Go's Duration.String
    """Go's Duration.String(): 24h0m0s, 1m30s, 1.5s, 300ms, 0s."""
    nanos = round(seconds * 1e9)
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos == 0:
        return "0s"
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _trim(f"{nanos / size:.9f}") + unit
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(f"{rest / 1e9:.9f}") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs
