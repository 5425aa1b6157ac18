"""appliance.gocompat against Go's own documented cases (time/time_test.go, strconv/quote_test.go)."""
from __future__ import annotations

import pytest

from appliance import gocompat

NS, US, MS, S, M, H = 1, 1_000, 1_000_000, 10**9, 60 * 10**9, 3600 * 10**9

# time_test.go parseDurationTests
PARSE_OK = [
    ("0", 0), ("5s", 5 * S), ("30s", 30 * S), ("1478s", 1478 * S),
    ("-5s", -5 * S), ("+5s", 5 * S), ("-0", 0), ("+0", 0),
    ("5.0s", 5 * S), ("5.6s", 5 * S + 600 * MS), ("5.s", 5 * S), (".5s", 500 * MS), ("1.0s", S),
    ("1.00s", S), ("1.004s", S + 4 * MS), ("1.0040s", S + 4 * MS), ("100.00100s", 100 * S + MS),
    ("10ns", 10 * NS), ("11us", 11 * US), ("12µs", 12 * US), ("12μs", 12 * US), ("13ms", 13 * MS),
    ("14s", 14 * S), ("15m", 15 * M), ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * M), ("10.5s4m", 4 * M + 10 * S + 500 * MS), ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS), ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000), ("0.3333333333333333333h", 20 * M), ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1), ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1), ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)), ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)), ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
]

# time_test.go parseDurationErrorTests, with the message Go gives
PARSE_ERRORS = [
    ("", 'time: invalid duration ""'), ("3", 'time: missing unit in duration "3"'),
    ("-", 'time: invalid duration "-"'), ("s", 'time: invalid duration "s"'), (".", 'time: invalid duration "."'),
    ("-.", 'time: invalid duration "-."'), (".s", 'time: invalid duration ".s"'), ("+.s", 'time: invalid duration "+.s"'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("\ufffd", 'time: invalid duration "\\xef\\xbf\\xbd"'),
    ("9223372036854775810ns", 'time: invalid duration "9223372036854775810ns"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
    ("-9223372036854775809ns", 'time: invalid duration "-9223372036854775809ns"'),
    ("9223372036854776us", 'time: invalid duration "9223372036854776us"'),
    ("3000000h", 'time: invalid duration "3000000h"'),
    ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
    ("9223372036854ms775us808ns", 'time: invalid duration "9223372036854ms775us808ns"'),
    # what reached our API and was dropped silently before
    ("abc", 'time: invalid duration "abc"'), ("5 s", 'time: unknown unit " s" in duration "5 s"'),
    ("1e308s", 'time: unknown unit "e" in duration "1e308s"'), (" 5s", 'time: invalid duration " 5s"'),
    ("99999999999h", 'time: invalid duration "99999999999h"'),
]


@pytest.mark.parametrize("text,nanos", PARSE_OK)
def test_parse_duration_accepts_what_go_accepts(text: str, nanos: int) -> None:
    assert gocompat.parse_duration(text) == nanos


@pytest.mark.parametrize("text,message", PARSE_ERRORS)
def test_parse_duration_refuses_what_go_refuses_with_gos_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        gocompat.parse_duration(text)
    assert str(err.value) == message
    assert gocompat.duration_or_none(text) is None


def test_a_long_duration_string_is_parsed_in_linear_time() -> None:
    with pytest.raises(ValueError):
        gocompat.parse_duration("1" * 100_000 + "x")
    assert gocompat.parse_duration("1s" * 50_000) == 50_000 * S


# time_test.go durationTests (Duration.String)
FORMAT = [
    (0, "0s"), (1 * NS, "1ns"), (1100 * NS, "1.1µs"), (2200 * US, "2.2ms"), (3300 * MS, "3.3s"),
    (4 * M + 5 * S, "4m5s"), (4 * M + 5001 * MS, "4m5.001s"), (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
    (8 * M + 1 * NS, "8m0.000000001s"), ((1 << 63) - 1, "2562047h47m16.854775807s"),
    (-(1 << 63), "-2562047h47m16.854775808s"), (24 * H, "24h0m0s"), (-5 * S, "-5s"), (300 * MS, "300ms"),
]


@pytest.mark.parametrize("nanos,text", FORMAT)
def test_format_duration_prints_as_go(nanos: int, text: str) -> None:
    assert gocompat.format_duration(nanos) == text
    assert gocompat.parse_duration(text) == nanos


def test_format_seconds_rounds_to_the_nanosecond() -> None:
    assert gocompat.format_seconds(300) == "5m0s"
    assert gocompat.format_seconds(0.25) == "250ms"
    assert gocompat.parse_seconds("1m30s") == 90.0


# strconv quote_test.go quotetests
QUOTES = [
    ("\a\b\f\r\n\t\v", '"\\a\\b\\f\\r\\n\\t\\v"'), ("\\", '"\\\\"'), ("abc\xffdef", '"abc\\u00ffdef"'.replace("\\u00ff", "ÿ")),
    ("\u263a", '"☺"'), ("\U0010ffff", '"\\U0010ffff"'), ("\x04", '"\\x04"'), ('"', '"\\""'),
    ("\u00a0", '"\\u00a0"'), ("kuma.io/service", '"kuma.io/service"'),
]


@pytest.mark.parametrize("text,quoted", QUOTES)
def test_go_quote(text: str, quoted: str) -> None:
    assert gocompat.go_quote(text) == quoted


@pytest.mark.parametrize("text,ok", [
    ("127.0.0.1", True), ("::1", True), ("fe80::1%eth0", False), ("010.0.0.1", False), ("1.2.3", False),
    ("::ffff:1.2.3.4", True), ("example.com", False),
])
def test_parse_ip_as_go_net(text: str, ok: bool) -> None:
    assert gocompat.is_ip(text) is ok


@pytest.mark.parametrize("text,ok", [
    ("example.com", True), ("example.com.", True), ("a_b.local", True), ("-bad.com", False), ("", False),
    ("1.2.3.4", False), ("a" * 63 + ".com", True), ("a" * 64 + ".com", False), ("a.." , False),
    (".".join(["a" * 60] * 5), False),
])
def test_is_dns_name_as_govalidator(text: str, ok: bool) -> None:
    assert gocompat.is_dns_name(text) is ok


# strconv atoi_test.go (64-bit)
@pytest.mark.parametrize("text,value", [("0", 0), ("-0", 0), ("+1", 1), ("12345", 12345), ("-12345", -12345),
                                        ("012345", 12345), ("9223372036854775807", (1 << 63) - 1),
                                        ("-9223372036854775808", -(1 << 63))])
def test_atoi(text: str, value: int) -> None:
    assert gocompat.atoi(text) == value


@pytest.mark.parametrize("text,problem", [("", "invalid syntax"), ("1x", "invalid syntax"), ("- 1", "invalid syntax"),
                                          ("12345x", "invalid syntax"), ("9223372036854775808", "value out of range"),
                                          ("-9223372036854775809", "value out of range"),
                                          ("9" * 5_000, "value out of range")])
def test_atoi_refuses_with_gos_message(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        gocompat.atoi(text)
    assert str(err.value) == f"strconv.Atoi: parsing {gocompat.go_quote(text)}: {problem}"
