"""The state file's text, made without re-encoding what did not change since the last save.

Turning every service, serving revision, policy, operation and account into JSON takes seconds with a thousand
services. So each table entry's JSON text is kept with the wire bytes it was made from and made again only when
those bytes differ (serialising a message is C and a few microseconds; in-place changes are seen too); the file is
assembled from the texts, one entry a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


class EncodedEntries:
    """One table's entries as the members of a JSON object, each re-encoded only when its wire bytes changed."""

    def __init__(self, wire: Callable[[Any], bytes], encode: Callable[[Any], str], depth: int = 1) -> None:
        self._wire = wire
        self._encode = encode
        self._pad = " " * (depth + 1)
        self._kept: dict[str, tuple[bytes, str]] = {}  # key -> (wire bytes, the member's line) as of the last call

    def json_object(self, entries: Mapping[str, Any]) -> str:
        """The entries as a JSON object nested at `depth`: keys sorted, one member a line."""
        kept: dict[str, tuple[bytes, str]] = {}
        for key, value in entries.items():
            wire = self._wire(value)
            before = self._kept.get(key)
            kept[key] = before if before is not None and before[0] == wire else (wire, self._line(key, value))
        self._kept = kept  # entries gone since the last call are forgotten
        return _object([kept[key][1] for key in sorted(kept)], self._pad[:-1])

    def _line(self, key: str, value: Any) -> str:
        return f"{self._pad}{json.dumps(key)}: {self._encode(value)}"


def json_object(members: Mapping[str, str]) -> str:
    """A top-level JSON object from members whose values are JSON texts already: keys sorted, one member a line."""
    return _object([f" {json.dumps(key)}: {text}" for key, text in sorted(members.items())], "")


def _object(lines: list[str], closing_pad: str) -> str:
    return "{\n" + ",\n".join(lines) + "\n" + closing_pad + "}" if lines else "{}"


def plain(value: Any) -> str:
    """A plain value's JSON text (the C encoder: keys sorted, ASCII, on one line)."""
    return json.dumps(value, sort_keys=True)
