"""Long-running operations (operations.py): which finished ones are forgotten, and listing pages in name order."""

from __future__ import annotations

import pytest
from google.cloud import run_v2
from google.longrunning import operations_pb2

from tgi_operator.emulator import operations
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.state import State

PARENT = "projects/p/locations/us-central1"


def _book(monkeypatch: pytest.MonkeyPatch, kept: int) -> tuple[OperationBook, State]:
    monkeypatch.setattr(operations, "MAX_DONE_KEPT", kept)
    state = State()
    return OperationBook(state, lambda: None), state


def test_the_oldest_created_finished_operations_are_forgotten_first(monkeypatch: pytest.MonkeyPatch) -> None:
    book, state = _book(monkeypatch, kept=2)
    service = run_v2.Service(name=f"{PARENT}/services/s")
    first, second, third = (book.start(PARENT, service).name for _ in range(3))
    book.finish(third, service)
    book.finish(first, service)  # finished last, created first
    book.finish(second, service)
    book.start(PARENT, service)  # each start keeps at most MAX_DONE_KEPT finished ones
    assert first not in state.operations and {second, third} <= set(state.operations)
    pending = book.start(PARENT, service).name
    assert len(state.operations) == 4 and not state.operations[pending].done  # running ones are never forgotten


async def test_deleted_operations_no_longer_count(monkeypatch: pytest.MonkeyPatch) -> None:
    book, state = _book(monkeypatch, kept=1)
    service = run_v2.Service(name=f"{PARENT}/services/s")
    a = book.done_now(PARENT, service).name
    await book.delete_operation(operations_pb2.DeleteOperationRequest(name=a), None)
    b = book.done_now(PARENT, service).name
    c = book.done_now(PARENT, service).name
    assert set(state.operations) == {b, c}  # forgetting happens as an operation starts, before it is added
    d = book.start(PARENT, service).name  # two finished, one kept: b goes (a, deleted, is not counted)
    assert set(state.operations) == {c, d}


async def test_list_pages_in_name_order_with_the_done_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    book, state = _book(monkeypatch, kept=100)
    service = run_v2.Service(name=f"{PARENT}/services/s")
    done = sorted(book.done_now(PARENT, service).name for _ in range(5))
    running = book.start(PARENT, service).name
    book.start("projects/other/locations/us-central1", service)
    request = operations_pb2.ListOperationsRequest(name=PARENT, filter="done=true", page_size=2)
    seen: list[str] = []
    while True:
        page = await book.list_operations(request, None)
        seen += [op.name for op in page.operations]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == done
    every = await book.list_operations(operations_pb2.ListOperationsRequest(name=PARENT), None)
    assert [op.name for op in every.operations] == sorted([*done, running])
