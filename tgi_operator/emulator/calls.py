"""Call accounting, an audit log of writes, and fault injection around every gRPC method.

Counts are kept per full method name (`google.cloud.run.v2.Services/CreateService`) and status
code name (`OK`, `NOT_FOUND`, ...). A fault is matched by full method name or by bare method name
(`CreateService`), fires before the handler runs and is counted under the code it injects. A gate
(the disabled-API check, access.py) runs next, also before the handler.

The audit log plays Cloud Audit Logs' Admin Activity log: each write (Create, Update, Delete, Set..., attempted or
done) with its time and `callerSuppliedUserAgent`, the gRPC user agent the caller sent. Source: "Admin Activity
audit logs contain log entries for API calls or other actions that modify the configuration or metadata of
resources" and AuditLog.requestMetadata.callerSuppliedUserAgent (cloud.google.com/logging/docs/audit,
cloud.google.com/logging/docs/reference/audit/auditlog/rest/Shared.Types/AuditLog). Tests read it to tell which
operator replica wrote what.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_status import rpc_status

from tgi_operator.emulator.errors import ApiError

log = logging.getLogger(__name__)


@dataclass
class Fault:
    method: str
    code: grpc.StatusCode
    count: int | None = None  # fail the next `count` calls ...
    rate: float | None = None  # ... or each call with this probability
    message: str = "Injected fault (emulator)."

    def matches(self, method: str) -> bool:
        return self.method in (method, method.rsplit("/", 1)[-1])

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "code": self.code.name, "count": self.count, "rate": self.rate, "message": self.message}


WRITE_VERBS = ("Create", "Update", "Delete", "Undelete", "Set", "Patch")
AUDIT_ENTRIES = 100_000  # the newest entries are kept


def is_write(method: str) -> bool:
    return method.rsplit("/", 1)[-1].startswith(WRITE_VERBS)


@dataclass
class CallLog:
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    faults: list[Fault] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    audit: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=AUDIT_ENTRIES))

    def record(self, method: str, code: grpc.StatusCode, user_agent: str = "", request: Any = None) -> None:
        self.counts[method][code.name] += 1
        if is_write(method):
            self.audit.append({"time": time.time(), "method": method, "code": code.name,
                               "resourceName": resource_of(request), "callerSuppliedUserAgent": user_agent})

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {m: dict(codes) for m, codes in sorted(self.counts.items())}

    def reset(self) -> None:
        self.counts.clear()
        self.audit.clear()

    def next_fault(self, method: str) -> Fault | None:
        """The fault that fires on this call, consuming one use of a counted fault."""
        for fault in list(self.faults):
            if not fault.matches(method):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
            if fault.rate is not None and self.rng.random() < fault.rate:
                return fault
        return None


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Gate = Callable[[str, Any], None]  # (full method name, request): raises ApiError to refuse the call


def accounted(calls: CallLog, method: str, handler: Handler, gate: Gate | None = None) -> Handler:
    """Wrap `handler`: inject a due fault, apply the gate, translate ApiError to a rich status, count the outcome."""

    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        user_agent = _user_agent(context)
        try:
            fault = calls.next_fault(method)
            if fault is not None:
                raise ApiError(fault.code, fault.message)
            if gate is not None:
                gate(method, request)
            response = await handler(request, context)
        except ApiError as error:
            calls.record(method, error.code, user_agent, request)
            await context.abort_with_status(rpc_status.to_status(error.to_status()))
            raise  # unreachable: abort_with_status raises
        except Exception as unexpected:  # a bug in the emulator: answer INTERNAL, like Google's 500s
            log.exception("emulator handler %s failed", method)
            calls.record(method, grpc.StatusCode.INTERNAL, user_agent, request)
            error = ApiError(grpc.StatusCode.INTERNAL, f"Internal error in the emulator ({type(unexpected).__name__}).")
            await context.abort_with_status(rpc_status.to_status(error.to_status()))
            raise
        calls.record(method, grpc.StatusCode.OK, user_agent, request)
        return response

    return run


def resource_of(request: Any) -> str:
    """The audit entry's resourceName: the resource a write request names (or creates)."""
    name = getattr(request, "name", "") or getattr(request, "resource", "")
    if getattr(request, "account_id", ""):
        return f"{name}/serviceAccounts/{request.account_id}"
    if getattr(request, "service_id", ""):
        return f"{request.parent}/services/{request.service_id}"
    service = getattr(request, "service", None)
    return name or (service.name if service is not None and hasattr(service, "name") else "")


def _user_agent(context: grpc.aio.ServicerContext) -> str:
    return next((str(v) for k, v in (context.invocation_metadata() or ()) if k == "user-agent"), "")
