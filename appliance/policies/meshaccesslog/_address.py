"""govalidator.IsURL, which Kuma uses to accept a MeshAccessLog TCP backend address.

The library's single regular expression is ambiguous enough to take exponential time in Python's
backtracking engine (Go's RE2 does not backtrack), so it is taken apart here: the scheme, the user
info, the port and the path are split off by hand and only the host goes through a pattern, with
the ambiguous repetitions rewritten into equivalent unambiguous ones.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_ALNUM = "a-zA-Z0-9"
_WORD = "a-zA-Z\u00a1-\uffff0-9"
_IPV4 = (r"([1-9]\d?|1\d\d|2[01]\d|22[0-3]|24\d|25[0-5])(\.(\d{1,2}|1\d\d|2[0-4]\d|25[0-5])){2}"
         r"\.([0-9]\d?|1\d\d|2[0-4]\d|25[0-5])")
# govalidator's IPv6 alternative lists every RFC 4291 shape; the standard library decides those below.
_HOSTNAME_PREFIX = (
    rf"[{_ALNUM}][{_ALNUM}_-]*[{_ALNUM}](?:\.[{_ALNUM}]+(?:[-.][{_ALNUM}]+)*)?"  # A([A_-]+)?A([-.]A+)*
    rf"|www\.|[{_ALNUM}](?:[-_.]?[{_ALNUM}])+\.[{_ALNUM}]+"  # the "subdomain" alternative
)
_HOST = re.compile(
    rf"{_IPV4}|(?:{_HOSTNAME_PREFIX})?[{_WORD}]+(?:--?[{_WORD}]+)*(?:\.[a-zA-Z\u00a1-\uffff]+)?",
    re.ASCII,
)
_SCHEME = re.compile(r"(ftp|tcp|udp|wss?|https?)://")
_TAIL = re.compile(r"(:\d{1,5})?([/?#]\S*)?", re.ASCII)


def is_url(text: str) -> bool:
    if text == "" or len(text) >= 2083 or len(text.encode()) <= 3 or text.startswith("."):
        return False
    if not _parses_like_go(text):
        return False
    rest = text[m.end():] if (m := _SCHEME.match(text)) else text
    candidates = [rest] + [rest[i + 1:] for i, c in enumerate(rest) if c == "@" and not re.search(r"\s", rest[:i])]
    return any(_host_and_tail(candidate) for candidate in candidates if candidate)


def _parses_like_go(text: str) -> bool:
    """The url.Parse step: a bare host:port gets a scheme first; a dotless path is no address."""
    parsed = "http://" + text if ":" in text and "://" not in text else text
    try:
        parts = urlsplit(parsed)
        parts.port  # noqa: B018 - reading it validates it, as Go's parser does
    except ValueError:
        return False
    host = parts.netloc.rpartition("@")[2]
    return not host.startswith(".") and not (host == "" and parts.path and "." not in parts.path)


def _host_and_tail(text: str) -> bool:
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        return bool(bracket) and _is_ipv6(host) and bool(_TAIL.fullmatch(tail.removeprefix(".")))
    end = next((i for i, c in enumerate(text) if c in ":/?#"), len(text))
    host, tail = text[:end], text[end:]
    if host.endswith("."):
        host = host[:-1]
    return bool(_HOST.fullmatch(host)) and bool(_TAIL.fullmatch(tail))


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
