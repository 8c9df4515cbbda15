"""`google.longrunning.Operations`: the long-running operations Cloud Run's writes return.

An operation carries the Service as `metadata` while running and as `response` (or an
`error` status) when done, which is what `ServicesClient.create_service(...).result()` unpacks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import Callable, Iterator

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2

from tgi_operator.emulator.errors import ApiError, not_found
from tgi_operator.emulator.state import State
from tgi_operator.emulator.tables import offset_page

MAX_WAIT_S = 60.0  # WaitOperation without a timeout waits at most this long, then returns the operation
MAX_DONE_KEPT = 1000  # finished operations kept (oldest dropped first), so benchmarks do not grow the state forever


def pack_service(service: run_v2.Service) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(run_v2.Service.pb(service))
    return packed


class OperationBook:
    """Creates, completes and serves operations; `Wait` blocks on an event per operation.

    Finished operations are forgotten oldest (first created) first; a heap of them by creation order makes that a
    pop rather than a walk over every operation on each write."""

    def __init__(self, state: State, on_change: Callable[[], None]) -> None:
        self._state = state
        self._on_change = on_change
        self._done: dict[str, asyncio.Event] = {}
        self._order = itertools.count()
        self._created: dict[str, int] = {}  # operation name -> creation order
        self._finished: list[tuple[int, str]] = []  # heap of (creation order, name) of done operations
        self._done_count = 0
        for name, op in state.operations.items():  # a loaded state: its operations in the order they were kept
            self._created[name] = next(self._order)
            if op.done:
                self._record_done(name)

    def start(self, parent: str, service: run_v2.Service) -> operations_pb2.Operation:
        self._forget_old()
        name = f"{parent}/operations/{uuid.uuid4()}"
        op = operations_pb2.Operation(name=name, metadata=pack_service(service), done=False)
        self._state.operations[name] = op
        self._created[name] = next(self._order)
        self._on_change()
        return op

    def finish(self, name: str, service: run_v2.Service, error: status_pb2.Status | None = None) -> None:
        op = self._state.operations.get(name)
        if op is None or op.done:
            return
        op.metadata.CopyFrom(pack_service(service))
        op.done = True
        self._record_done(name)
        if error is None:
            op.response.CopyFrom(pack_service(service))
        else:
            op.error.CopyFrom(error)
        self._on_change()
        self._event(name).set()

    def done_now(self, parent: str, service: run_v2.Service) -> operations_pb2.Operation:
        """An operation that is complete as soon as it is returned (deletes, validate-only requests)."""
        op = self.start(parent, service)
        self.finish(op.name, service)
        return self._state.operations[op.name]

    def _record_done(self, name: str) -> None:
        heapq.heappush(self._finished, (self._created[name], name))
        self._done_count += 1

    def _forget_old(self) -> None:
        """Keep the newest MAX_DONE_KEPT finished operations (by creation), as a walk over all of them would."""
        while self._done_count > MAX_DONE_KEPT:
            _, name = heapq.heappop(self._finished)
            if name in self._state.operations:  # else deleted through the API meanwhile (and no longer counted)
                self._remove(name)
        if len(self._finished) > 2 * self._done_count + 64:  # entries of deleted operations: drop them now and then
            self._finished = [(order, name) for order, name in self._finished if name in self._state.operations]
            heapq.heapify(self._finished)

    def _remove(self, name: str) -> None:
        if self._state.operations[name].done:
            self._done_count -= 1
        del self._state.operations[name]
        self._done.pop(name, None)
        self._created.pop(name, None)

    def _event(self, name: str) -> asyncio.Event:
        event = self._done.setdefault(name, asyncio.Event())
        if self._state.operations.get(name) is not None and self._state.operations[name].done:
            event.set()
        return event

    def _get(self, name: str) -> operations_pb2.Operation:
        op = self._state.operations.get(name)
        if op is None:
            raise not_found(name)
        return op

    # ------------------------------------------------------------ gRPC handlers

    async def get_operation(self, request: operations_pb2.GetOperationRequest, context: object) -> operations_pb2.Operation:
        return self._get(request.name)

    async def list_operations(
        self, request: operations_pb2.ListOperationsRequest, context: object
    ) -> operations_pb2.ListOperationsResponse:
        prefix = request.name.rstrip("/") + "/operations/" if request.name else ""
        names: Iterator[str] = self._state.operation_names.starting_with(prefix)  # in name order
        if request.filter:
            want_done = {"done=true": True, "done = true": True, "done=false": False, "done = false": False}.get(
                request.filter.strip().lower()
            )
            if want_done is None:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Unsupported filter {request.filter!r}.")
            names = (n for n in names if self._state.operations[n].done == want_done)
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page, more = offset_page(names, start, size)
        next_token = str(start + size) if more else ""
        return operations_pb2.ListOperationsResponse(
            operations=[self._state.operations[n] for n in page], next_page_token=next_token
        )

    async def wait_operation(self, request: operations_pb2.WaitOperationRequest, context: object) -> operations_pb2.Operation:
        self._get(request.name)
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else MAX_WAIT_S
        try:
            await asyncio.wait_for(self._event(request.name).wait(), timeout=min(timeout, MAX_WAIT_S))
        except TimeoutError:
            pass  # like the real API: return the operation as it is when the wait ends
        return self._get(request.name)

    async def delete_operation(self, request: operations_pb2.DeleteOperationRequest, context: object) -> empty_pb2.Empty:
        self._get(request.name)
        self._remove(request.name)
        self._on_change()
        return empty_pb2.Empty()
