"""Secret: Kuma has no validator for it; only `data` must decode as standard, padded base64."""
from __future__ import annotations

import pytest

from appliance.core.resources import secret


@pytest.mark.parametrize("body", ["{data: dGVzdAo=}", "{data: ''}", "{}", "{data: null}", '{data: "dGVz\\ndA=="}'],
                         ids=["base64", "empty", "absent", "null", "with a newline"])
def test_accepts(check, body: str) -> None:
    assert check(secret, body) == []


@pytest.mark.parametrize("data, byte", [("dGVzdAo", 4), ("dGVzdA=", 7), ("dGV!dAo=", 3), ("d", 0),
                                        ("dGVzdA==x", 8), ("dGVzdAo=\n\n", None)])
def test_reports_bad_base64_like_go(check, data: str, byte: int | None) -> None:
    expected = [] if byte is None else [("data", f"illegal base64 data at input byte {byte}")]
    assert check(secret, {"data": data}) == expected
