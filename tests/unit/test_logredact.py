"""The log filter that keeps object contents (env values, annotations, invokers) out of the operator's log."""

from __future__ import annotations

import io
import json
import logging

import pytest
from kopf._core.actions.loggers import LogFormat, ObjectLogger, make_formatter
from kopf._cogs.configs.configuration import OperatorSettings

from tgi_operator.logredact import RedactDumps, redact

SECRET = "s3cr3t-value"
BODY = {"apiVersion": "tgi-operator.dev/v1alpha1", "metadata": {"annotations": {"team": SECRET}},
        "spec": {"env": [{"name": "API_KEY", "value": SECRET}]}}
DIFF = (("change", ("spec", "env"), [{"name": "API_KEY", "value": "old"}], [{"name": "API_KEY", "value": SECRET}]),
        ("change", ("metadata", "annotations", "team"), "old", SECRET))

# (message as logged, text after redaction): kopf's f-strings, %-style args, JSON, and prose that must survive.
CASES = [
    (f"Creation is in progress: {BODY!r}", "Creation is in progress: <redacted: 3 keys>"),
    (f"Updating diff: {DIFF!r}", "Updating diff: <redacted: 2 items>"),
    (f"Merge-patching the status with: {{'status': {{'invokers': ['user:{SECRET}@x.com']}}}}",
     "Merge-patching the status with: <redacted: 1 key>"),
    (f"JSON-patching the resource with: {[{'op': 'test', 'path': '/x', 'value': SECRET}, {'op': 'remove'}]!r}",
     "JSON-patching the resource with: <redacted: 2 items>"),
    (f"Merge-patching the resource with: {json.dumps(BODY)}", "Merge-patching the resource with: <redacted: 3 keys>"),
    (f"Remaining: Patch({{'metadata': {{'annotations': {{'a': '{SECRET}'}}}}}}, fns=[])",
     "Remaining: Patch(<redacted: 1 key>, fns=[])"),
    (f"value with brackets in a string: {{'v': '{SECRET} }} ] )'}} tail", "value with brackets in a string: <redacted: 1 key> tail"),
    (f"unbalanced: {{'v': '{SECRET}'", "unbalanced: <redacted: 1 key>"),
    (f"a tuple ('{SECRET}',) and a scalar tuple ('a', 1)", "a tuple <redacted: 1 item> and a scalar tuple <redacted: 2 items>"),
    # Prose keeps its brackets: field paths, object names, parenthesised remarks, empty containers.
    ("updating Cloud Run service x: template.containers[0].env", "updating Cloud Run service x: template.containers[0].env"),
    ("[team-a/llama] Handler 'apply' succeeded.", "[team-a/llama] Handler 'apply' succeeded."),
    ("Sleeping for 1.5 (capped 60) seconds; {exc}", "Sleeping for 1.5 (capped 60) seconds; {exc}"),
    ("Merge-patching the status with: {}", "Merge-patching the status with: {}"),
    ('127.0.0.1 [01/Dec/2026:12:53:30 +0000] "GET /healthz HTTP/1.1" 200', '127.0.0.1 [01/Dec/2026:12:53:30 +0000] "GET /healthz HTTP/1.1" 200'),
    ("unquoted mapping {a: 1}", "unquoted mapping <redacted: 1 key>"),
]


@pytest.mark.parametrize(("message", "expected"), CASES, ids=[c[1][:40] for c in CASES])
def test_redact(message: str, expected: str) -> None:
    assert redact(message) == expected


def test_redaction_is_idempotent() -> None:
    for message, expected in CASES:
        assert redact(expected) == expected, message


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("kopf.objects", logging.DEBUG, __file__, 1, msg, args or None, exc_info)


def test_the_filter_redacts_percent_args_and_tracebacks_and_drops_nothing() -> None:
    record = _record("Merge-patching the status with: %r (%d)", {"env": SECRET}, 3)
    assert RedactDumps().filter(record) is True
    assert record.getMessage() == "Merge-patching the status with: <redacted: 1 key> (3)"

    try:
        raise ValueError(f"bad body {BODY!r}")
    except ValueError as exc:
        record = _record("Handler 'apply' failed with an exception.", exc=exc)
    RedactDumps().filter(record)
    text = logging.Formatter().format(record)
    assert "ValueError: bad body <redacted: 3 keys>" in text
    assert SECRET not in text


@pytest.mark.parametrize("log_format", [LogFormat.FULL, LogFormat.JSON])
def test_kopf_object_logger_output_is_redacted_in_both_formats(log_format: LogFormat) -> None:
    """Through kopf's own object logger and formatters: nothing of the body reaches the stream, the JSON extras
    included (kopf adds the object's reference, which names it, never its content)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format=log_format, log_prefix=True))
    handler.addFilter(RedactDumps())
    logger = logging.getLogger("kopf.objects")
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.DEBUG
    try:
        body = {**BODY, "metadata": {**BODY["metadata"], "name": "llama", "namespace": "team-a"}}
        ObjectLogger(body=body, settings=OperatorSettings()).debug(f"Creation is in progress: {body!r}")
    finally:
        logger.removeHandler(handler)
        logger.level = old_level
    line = stream.getvalue().strip()
    assert SECRET not in line
    if log_format is LogFormat.JSON:
        entry = json.loads(line)
        assert entry["message"] == "[team-a/llama] Creation is in progress: <redacted: 3 keys>"
        assert entry["object"]["name"] == "llama"
    else:
        assert line.endswith("[team-a/llama] Creation is in progress: <redacted: 3 keys>")
