"""Tables that keep their own indexes, so a call is answered by lookups instead of a walk over every entry.

A `Table` is a mapping (name -> message) that tells each of its indexes about every insert, replace and removal,
whichever code path makes it (`t[k] = v`, `del t[k]`, `t.pop(k, None)`, ...): the indexes stay exact by
construction. An index sees whole entries only; an entry changed in place must be stored again (`t[k] = t[k]`)
for an index that reads that part of it to notice.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import Any, Generic, Protocol, TypeVar

V = TypeVar("V")


class Index(Protocol):
    def put(self, key: str, old: Any, new: Any) -> None:
        """`key` now holds `new`; `old` is what it held before, or None for a new key."""

    def drop(self, key: str, old: Any) -> None:
        """`key` (which held `old`) is gone."""


class Table(MutableMapping[str, V], Generic[V]):
    def __init__(self, entries: Mapping[str, V] | None = None, *indexes: Index) -> None:
        self._entries: dict[str, V] = {}
        self._indexes = indexes
        for key, value in (entries or {}).items():
            self[key] = value

    def __getitem__(self, key: str) -> V:
        return self._entries[key]

    def get(self, key: str, default: Any = None) -> Any:  # the hot path: no exception round trip
        return self._entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __setitem__(self, key: str, value: V) -> None:
        old = self._entries.get(key)
        self._entries[key] = value
        for index in self._indexes:
            index.put(key, old, value)

    def __delitem__(self, key: str) -> None:
        old = self._entries.pop(key)
        for index in self._indexes:
            index.drop(key, old)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> KeysView[str]:  # the dict's own (read-only) views: no per-entry lookups
        return self._entries.keys()

    def values(self) -> ValuesView[V]:
        return self._entries.values()

    def items(self) -> ItemsView[str, V]:
        return self._entries.items()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Table({self._entries!r})"


class SortedKeys:
    """The table's keys in sorted order, for listings in name order that read one page, not every name.
    (Inserting into the sorted list moves pointers in C: negligible next to a call, at any size the emulator holds.)"""

    def __init__(self) -> None:
        self._keys: list[str] = []

    def put(self, key: str, old: Any, new: Any) -> None:
        if old is None:
            bisect.insort(self._keys, key)

    def drop(self, key: str, old: Any) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def starting_with(self, prefix: str, after: str = "") -> Iterator[str]:
        """The keys that start with `prefix` and sort after `after`, in order (they are contiguous in the list)."""
        i = bisect.bisect_right(self._keys, after) if after >= prefix else bisect.bisect_left(self._keys, prefix)
        while i < len(self._keys) and self._keys[i].startswith(prefix):
            yield self._keys[i]
            i += 1


class Grouped:
    """Keys grouped by a property of their entry (`group_of(entry)`), each group's keys sorted."""

    def __init__(self, group_of: Any) -> None:
        self._group_of = group_of
        self._groups: dict[Any, SortedKeys] = {}

    def put(self, key: str, old: Any, new: Any) -> None:
        if old is not None:
            self.drop(key, old)
        self._groups.setdefault(self._group_of(new), SortedKeys()).put(key, None, new)

    def drop(self, key: str, old: Any) -> None:
        group = self._groups.get(self._group_of(old))
        if group is not None:
            group.drop(key, old)

    def keys_in(self, group: Any) -> Iterator[str]:
        return self._groups.get(group, SortedKeys()).starting_with("")


class SecondaryKey:
    """Another key of each entry (`key_of(entry)`) -> the table's key, for lookups by either."""

    def __init__(self, key_of: Any) -> None:
        self._key_of = key_of
        self._keys: dict[Any, str] = {}

    def put(self, key: str, old: Any, new: Any) -> None:
        if old is not None:
            self.drop(key, old)
        self._keys[self._key_of(new)] = key

    def drop(self, key: str, old: Any) -> None:
        if self._keys.get(self._key_of(old)) == key:
            del self._keys[self._key_of(old)]

    def get(self, secondary: Any) -> str | None:
        return self._keys.get(secondary)


class Referrers:
    """Which entries name each item (`items_of(entry)`, e.g. the members a policy binds): item -> keys."""

    def __init__(self, items_of: Any) -> None:
        self._items_of = items_of
        self._held: dict[str, frozenset[str]] = {}  # what each key named when stored (entries may change in place)
        self._keys: dict[str, set[str]] = {}

    def put(self, key: str, old: Any, new: Any) -> None:
        self.drop(key, old)
        items = frozenset(self._items_of(new))
        self._held[key] = items
        for item in items:
            self._keys.setdefault(item, set()).add(key)

    def drop(self, key: str, old: Any) -> None:
        for item in self._held.pop(key, frozenset()):
            keys = self._keys[item]
            keys.discard(key)
            if not keys:
                del self._keys[item]

    def keys_naming(self, item: str) -> list[str]:
        return sorted(self._keys.get(item, ()))


def offset_page(items: Iterable[V], start: int, size: int) -> tuple[list[V], bool]:
    """`items[start:start + size]` and whether more items follow, reading no further than that; negative bounds
    (which no client sends) are taken as a list slice takes them."""
    if start < 0 or size < 0:
        listed = list(items)
        return listed[start : start + size], start + size < len(listed)
    page = list(itertools.islice(items, start, start + size + 1))  # one more tells whether a page follows
    return page[:size], len(page) > size
