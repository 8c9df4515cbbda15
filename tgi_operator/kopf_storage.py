"""kopf's bookkeeping annotations: none for passes, and read so that whatever a stored object holds can never
block it.

kopf would keep the last handled spec (`tgi-operator.dev/last-handled-configuration`) to detect changes: the
scheduler detects them itself (a new generation), so kopf keeps none (`NoDiffBase`), which saves a metadata patch
per object and change. It keeps each handler's progress (`tgi-operator.dev/<handler>`, only the delete handler's
now) in annotations, and parses them before it runs any handler. Anyone who may edit the object can write garbage
there (`'{not json'`), and kopf would then fail on every event: the object throttled forever, the delete handler
never run, the finalizer kept and even the Abandon annotation ignored. `TolerantProgressStorage` reads a value that
does not parse, or has the wrong shape, as absent: a lost progress record is a fresh handler run.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import kopf

log = logging.getLogger(__name__)

# kopf's ProgressRecord fields and the types each may hold (None is always allowed).
_PROGRESS_FIELDS: dict[str, tuple[type, ...]] = {
    "started": (str,), "stopped": (str,), "delayed": (str,), "purpose": (str,), "retries": (int,),
    "success": (bool,), "failure": (bool,), "message": (str,), "subrefs": (list,),
}  # fmt: skip


def _decoded(raw: Any) -> Any:
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


_TIMESTAMPS = ("started", "stopped", "delayed")  # kopf parses these with datetime.fromisoformat


def _of_type(value: Any, kinds: tuple[type, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # a bool is an int to isinstance(): only where a bool belongs
        return bool in kinds
    return isinstance(value, kinds)


def _timestamp(value: Any) -> bool:
    try:
        datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value is None
    return True


def valid_progress(record: Any) -> bool:
    """A progress record kopf can use: a mapping whose known fields are each of their type (or null). Unknown keys
    are left to kopf (a newer kopf may add fields)."""
    if not isinstance(record, dict) or not record:
        return False
    if any(not _of_type(value, _PROGRESS_FIELDS[key]) for key, value in record.items() if key in _PROGRESS_FIELDS):
        return False
    return all(_timestamp(record.get(key)) for key in _TIMESTAMPS) and all(
        isinstance(ref, str) for ref in record.get("subrefs") or [])


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: every event's own essence reads as the last handled one, so kopf's change detection sees no
    change (the scheduler triggers passes), and nothing is ever stored. An old object's
    last-handled-configuration annotation, garbage or not, is never read."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        """An empty essence: kopf's own (a deep copy of the body, made twice per event) would only be compared
        with itself."""
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


class TolerantProgressStorage(kopf.AnnotationsProgressStorage):
    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        for full_key in self.make_keys(key, body=body):
            raw = body.metadata.annotations.get(full_key)
            if raw is None:
                continue
            decoded = _decoded(raw)
            if valid_progress(decoded):
                return decoded
            log.warning("ignoring the unreadable annotation %s on %s/%s (treated as absent)",
                        full_key, body.metadata.namespace, body.metadata.name)
        return None
