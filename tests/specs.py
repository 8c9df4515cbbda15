"""Helpers shared by unit and integration tests that build TGIService specs (on sys.path via pytest's pythonpath)."""

from __future__ import annotations

import copy
from typing import Any


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` deep-merged in; a value of None removes the key."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_changes(merged[key], value)
        else:
            merged[key] = value
    return merged
