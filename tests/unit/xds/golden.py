"""Golden files of generated Envoy resources, in the layout of Kuma's own goldens (sorted by type, then name).

Rewrite them with `UPDATE_GOLDEN=1 pytest tests/unit/xds` and review the diff like code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def to_dict(message: Message) -> dict:
    return json.loads(json_format.MessageToJson(message))


def resources_yaml(resources: dict[str, dict[str, Message]]) -> str:
    items = [{"name": name, "resource": {"@type": type_url, **to_dict(resources[type_url][name])}}
             for type_url in sorted(resources) for name in sorted(resources[type_url])]
    return yaml.safe_dump({"resources": items}, sort_keys=True, width=120)


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            raise AssertionError(f"{path} did not exist and was written: review it and run again")
        return
    assert text == path.read_text(), f"{name} differs from its golden file; UPDATE_GOLDEN=1 rewrites it"
