"""MeshTrace validation, cases taken from Kuma's validator tests (v2.14.3): meshtrace_cases.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.policies.meshtrace import schema as mtr

CASES = yaml.safe_load((Path(__file__).parent / "meshtrace_cases.yaml").read_text())


@pytest.mark.parametrize("name", sorted(CASES["valid"]))
def test_kumas_valid_specs_pass(name: str, check) -> None:
    assert check(mtr, CASES["valid"][name]) == []


@pytest.mark.parametrize("name", sorted(CASES["invalid"]))
def test_kumas_invalid_specs_fail_as_in_kuma(name: str) -> None:
    """validate() alone, as Kuma's validator test runs it (without the structural schema)."""
    case = CASES["invalid"][name]
    assert mtr.validate(yaml.safe_load(case["spec"])) == [(v["field"], v["message"]) for v in case["violations"]]


def test_more_than_one_backend_is_refused_by_the_schema_first(check) -> None:
    problems = check(mtr, CASES["invalid"]["multiple backends"]["spec"])
    assert problems and all(isinstance(p, str) and "backends" in p for p in problems)
