"""Go's parsers and printers where Kuma leans on them, so that we accept and say exactly what Kuma does.

One home for: durations (time.ParseDuration, time.Duration.String), quoting (strconv.Quote, `%q`),
IP addresses (net.ParseIP) and DNS names (govalidator.IsDNSName). A leaf: it imports nothing of ours.
"""
from __future__ import annotations

import ipaddress
import re

# --- durations --------------------------------------------------------------------------------

_UNIT_NS = {b"ns": 1, b"us": 1_000, "µs".encode(): 1_000, "μs".encode(): 1_000, b"ms": 1_000_000,
            b"s": 10**9, b"m": 60 * 10**9, b"h": 3600 * 10**9}
_MAX = 1 << 63  # Go's uint64 accumulator may reach 1<<63 only for the most negative duration


def _time_quote(text: str) -> str:
    """The time package's own quote(): non-ASCII and control bytes as \\xNN, unlike strconv.Quote."""
    out = ['"']
    for ch in text:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append("\\" + ch if ch in '"\\' else ch)
    out.append('"')
    return "".join(out)


def parse_duration(text: str) -> int:
    """Nanoseconds, as Go's time.ParseDuration reads `text`; ValueError carrying Go's own message.

    Go's grammar is `[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+` or a bare "0"; units ns, us, µs, ms, s, m, h;
    the result must fit an int64 of nanoseconds. Fractions are scaled in float64, as Go does, so
    that "0.3333333333333333333h" gives the same nanosecond count here and there.
    """
    invalid = ValueError("time: invalid duration " + _time_quote(text))
    s = text.encode("utf-8", "surrogatepass")
    neg = False
    if s[:1] in (b"-", b"+"):
        neg = s[:1] == b"-"
        s = s[1:]
    if s == b"0":
        return 0
    if not s:
        raise invalid
    total, pos, end = 0, 0, len(s)
    while pos < end:
        if not (s[pos] == 0x2E or 0x30 <= s[pos] <= 0x39):
            raise invalid
        start = pos
        whole = 0
        while pos < end and 0x30 <= s[pos] <= 0x39:
            if whole > _MAX // 10:
                raise invalid
            whole = whole * 10 + s[pos] - 0x30
            if whole > _MAX:
                raise invalid
            pos += 1
        has_whole = pos != start
        frac, scale, has_frac = 0, 1.0, False
        if pos < end and s[pos] == 0x2E:
            pos += 1
            frac_start = pos
            overflow = False
            while pos < end and 0x30 <= s[pos] <= 0x39:
                if not overflow:
                    if frac > (_MAX - 1) // 10:
                        overflow = True
                    else:
                        nxt = frac * 10 + s[pos] - 0x30
                        if nxt > _MAX:
                            overflow = True
                        else:
                            frac, scale = nxt, scale * 10
                pos += 1
            has_frac = pos != frac_start
        if not has_whole and not has_frac:
            raise invalid
        unit_start = pos
        while pos < end and not (s[pos] == 0x2E or 0x30 <= s[pos] <= 0x39):
            pos += 1
        if pos == unit_start:
            raise ValueError("time: missing unit in duration " + _time_quote(text))
        unit_text = s[unit_start:pos]
        unit = _UNIT_NS.get(unit_text)
        if unit is None:
            raise ValueError("time: unknown unit " + _time_quote(unit_text.decode("utf-8", "replace"))
                             + " in duration " + _time_quote(text))
        if whole > _MAX // unit:
            raise invalid
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > _MAX:
                raise invalid
        total += value
        if total > _MAX:
            raise invalid
    if neg:
        return -total
    if total > _MAX - 1:
        raise invalid
    return total


def parse_seconds(text: str) -> float:
    """parse_duration in seconds, for settings and flags that sleep or time out."""
    return parse_duration(text) / 1e9


def duration_or_none(text: object) -> int | None:
    """parse_duration, or None for anything Go would refuse (including a value that is not a string)."""
    if not isinstance(text, str):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _fraction(value: int, digits: int) -> tuple[str, int]:
    """Go's fmtFrac: `value`'s last `digits` digits as ".ddd" without trailing zeros, and the rest."""
    whole, frac = divmod(value, 10**digits)
    text = f"{frac:0{digits}d}".rstrip("0") if digits else ""
    return ("." + text if text else ""), whole


def format_duration(nanos: int) -> str:
    """Go's time.Duration.String(): 24h0m0s, 1m30s, 1.5s, 300ms, 1.5µs, 10ns, 0s."""
    sign = "-" if nanos < 0 else ""
    u = abs(nanos)
    if u == 0:
        return "0s"
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        frac, whole = _fraction(u, 3)
        return f"{sign}{whole}{frac}µs"
    if u < 1_000_000_000:
        frac, whole = _fraction(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, secs = _fraction(u, 9)
    minutes, secs = divmod(secs, 60)
    if not minutes:
        return f"{sign}{secs}{frac}s"
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{sign}{minutes}m{secs}{frac}s"
    return f"{sign}{hours}h{minutes}m{secs}{frac}s"


def format_seconds(seconds: float) -> str:
    """format_duration for a number of seconds (rounded to the nanosecond)."""
    return format_duration(round(seconds * 1e9))


# --- integers ---------------------------------------------------------------------------------

INT64_MAX = (1 << 63) - 1
_ATOI = re.compile(r"[+-]?[0-9]+", re.ASCII)


def atoi(text: str) -> int:
    """strconv.Atoi on a 64-bit platform; ValueError carrying Go's message ("invalid syntax",
    "value out of range"). Checked on the digits' count first, so a 5,000-digit string costs nothing."""
    if not _ATOI.fullmatch(text):
        raise ValueError(f"strconv.Atoi: parsing {go_quote(text)}: invalid syntax")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19 or not -INT64_MAX - 1 <= int(text) <= INT64_MAX:
        raise ValueError(f"strconv.Atoi: parsing {go_quote(text)}: value out of range")
    return int(text)


# --- quoting ----------------------------------------------------------------------------------

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """strconv.Quote (Go's `%q`), which Kuma uses for names in messages and map keys in field paths.

    Python's isprintable() and Go's unicode.IsPrint agree: letters, marks, numbers, punctuation,
    symbols and the ASCII space.
    """
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) < 0xE000:  # a lone surrogate is invalid UTF-8: Go prints U+FFFD
            out.append("\\ufffd")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return f'"{"".join(out)}"'


# --- addresses --------------------------------------------------------------------------------


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's net.ParseIP: dotted IPv4 (no leading zeros) or IPv6, no zone; None when Go says nil."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_ip(text: str) -> bool:
    return parse_ip(text) is not None


_DNS_NAME = re.compile(r"([a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*[._]?")


def is_dns_name(text: str) -> bool:
    """govalidator.IsDNSName, which Kuma uses for addresses and server names: not an IP, labels of
    at most 63 characters, at most 255 characters without the dots."""
    if not text or len(text.replace(".", "")) > 255:
        return False
    return parse_ip(text) is None and _DNS_NAME.fullmatch(text) is not None


# --- TLS settings -------------------------------------------------------------------------------

# The TLS versions Kuma's settings accept (pkg/config/types/tls.go); "" means Go's default.
GO_TLS_VERSIONS: tuple[str, ...] = ("TLSv1_2", "TLSv1_3")

# Go's crypto/tls cipher suite names (tls.CipherSuites() and tls.InsecureCipherSuites(), which
# Kuma's tlsCipherSuites settings accept) and their IANA code points.
GO_TLS_CIPHER_SUITES: dict[str, int] = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
    "TLS_RSA_WITH_RC4_128_SHA": 0x0005,
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": 0x000A,
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F,
    "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_AES_128_CBC_SHA256": 0x003C,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": 0xC007,
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": 0xC011,
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": 0xC012,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": 0xC023,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": 0xC027,
}
