"""Policy specs go through the structural schema first and Kuma's validator second, as in the API."""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import pytest
import yaml

from appliance.core.validation import check_schema

Check = Callable[[ModuleType, str], list[Any]]


def run_checks(module: ModuleType, text: str) -> list[Any]:
    """Schema messages (strings) when the schema rejects the spec, else the validator's (field, reason)s."""
    spec = yaml.safe_load(text) or {}
    problems: list[str] = []
    check_schema(module.SPEC_SCHEMA, spec, "spec", problems)
    if problems:
        return problems
    return module.validate(spec)


@pytest.fixture
def check() -> Check:
    return run_checks
