"""memory.release_free_memory: the heap's free pages go back to the system (glibc)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tgi_operator.memory import _malloc_trim, release_free_memory

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")


def anonymous_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_memory_freed_below_the_top_of_the_heap_is_returned() -> None:
    # Objects over 512 bytes come from glibc's malloc, not Python's small-object arenas. Freeing all but the last one
    # leaves the freed pages below the top of the heap, where glibc keeps them until malloc_trim.
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(40_000)]  # about 80 MiB
    keep = blocks[-1]
    del blocks
    gc.collect()
    before = anonymous_kib()
    assert release_free_memory()
    assert before - anonymous_kib() > 40 * 1024, "at least half of the freed 80 MiB goes back"
    assert len(keep) == 2001  # still alive: it held the top of the heap
