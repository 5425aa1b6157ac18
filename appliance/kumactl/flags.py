"""Flag types as pflag (cobra) reads them: `key=value` maps and comma-separated lists."""
from __future__ import annotations

import argparse
import csv
from typing import Any, Sequence

from appliance.gocompat import parse_seconds


def duration(text: str) -> float:
    """pflag's Duration (Go's time.ParseDuration), in seconds: `--valid-for 24h`, `--api-timeout 1m`."""
    try:
        return parse_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": {e}') from e


def key_values(text: str) -> dict[str, str]:
    """pflag's StringToString: `k=v` (the value may hold commas) or `k1=v1,k2=v2`."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text} must be formatted as key=value")
    pairs = [text.strip('"')] if text.count("=") == 1 else next(csv.reader([text]))
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{pair} must be formatted as key=value")
        out[key] = value
    return out


class KeyValues(argparse.Action):
    """A repeatable `key=value` flag (`--tag a=b --tag c=d`), collected into one dict."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, type=key_values, default={}, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **values})


class StringSlice(argparse.Action):
    """pflag's StringSlice: comma-separated values, the flag may repeat (None when never given)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = [v for v in str(values).split(",") if v]
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *given])
