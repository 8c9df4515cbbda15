"""Copies whose strings are interned, for what is kept per object between events and passes.

A thousand objects repeat the same keys, conditions, messages, images and arguments; interned, each string is
stored once (sys.intern: it goes when nothing holds it any more). Used for the object snapshots (handlers.py) and
the owned fields a resync compares with (desired.py: 5.1 -> 3.2 KiB per cache entry for a thousand copies of one
spec, measured).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def shared(value: Any) -> Any:
    """A copy of a tree of dicts, lists and tuples with every string interned (other values as they are)."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, Mapping):
        return {shared(k): shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shared(v) for v in value]
    if isinstance(value, tuple):
        return tuple(shared(v) for v in value)
    return value
