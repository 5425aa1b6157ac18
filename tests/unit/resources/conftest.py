"""Run a legacy resource body through its SHAPE and validate(), the way the API does."""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import pytest
import yaml

from appliance.core.validation import Violations, check_schema

META = ("type", "name", "mesh", "labels", "creationTime", "modificationTime")

Check = Callable[[ModuleType, str], list[tuple[str, str]]]


def violations_of(module: ModuleType, body: str | dict) -> list[tuple[str, str]]:
    """(field, reason) pairs validate() reports; the body must pass SHAPE first."""
    content = yaml.safe_load(body) if isinstance(body, str) else dict(body)
    for name in META:
        content.pop(name, None)
    shape_errors: list[str] = []
    check_schema(module.SHAPE, content, "", shape_errors)
    assert shape_errors == [], f"SHAPE rejected the body: {shape_errors}"
    out = Violations()
    module.validate(content, out)
    return [(v.field, v.reason) for v in out]


@pytest.fixture
def check() -> Check:
    return violations_of
