"""Keep object contents out of the operator's log, at every verbosity and in both log formats.

kopf logs whole bodies, patches and diffs at DEBUG ("Creation is in progress: {...}", "Merge-patching the
status with: {...}", "Updating diff: ((...),)"), already formatted into f-strings. Those carry spec.env values
and annotation values (secrets) and invoker members. `RedactDumps` rewrites each record's message (and the text
of its traceback) so any dumped dict, list or tuple, Python repr or JSON, becomes "<redacted: 3 keys>"; the rest
of the line keeps its meaning. Brackets that hold no data stay: "[ns/name]", "env[0]", "(capped 10s)", an access log's "[01/Dec/2026:12:53:30 +0000]".
"""

from __future__ import annotations

import logging

_CLOSERS = {"{": "}", "[": "]", "(": ")"}
_TUPLE_STARTS = frozenset("('\"{[")  # "(" only opens data as a repr'd tuple: "(('change', ...),)", "('a', 1)"


def _span(text: str, start: int) -> tuple[int, int, bool]:
    """From the opening bracket at `start`: the index after its closer (the end of `text` when unbalanced: redact
    the rest rather than leak it), its number of top-level items, and whether it holds data."""
    stack, items, data, quote, i = [_CLOSERS[text[start]]], 0, False, "", start + 1
    content = False
    while i < len(text):
        ch = text[i]
        if quote:  # inside a string literal: brackets and commas are text
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote, data, content = ch, True, True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
            data = content = True
        elif ch == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1, items + content, data
        elif ch in ")]}":
            data = True  # a stray closer: not prose we understand; redact
        elif ch == "," and len(stack) == 1:
            items, data, content = items + content, True, False  # "(x,)" counts one item
        elif not ch.isspace():
            # A quote, bracket or comma (above) or ": " makes a span a literal; "[01/Dec/2026:12:53:30 +0000]" is prose.
            data = data or ch == "," or (ch == ":" and text[i + 1 : i + 2] in (" ", ""))
            content = True
        i += 1
    return len(text), items + content, True


def redact(text: str) -> str:
    """`text` with every dumped object replaced by a placeholder that says how big it was."""
    if not any(opener in text for opener in _CLOSERS):
        return text  # the common case, cheaply
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        call = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")  # "Patch({...})": look inside, keep the call
        if ch in "{[" or (ch == "(" and not call and text[i + 1 : i + 2] in _TUPLE_STARTS):
            end, items, data = _span(text, i)
            if data:
                unit = "key" if ch == "{" else "item"
                out.append(f"<redacted: {items} {unit}{'' if items == 1 else 's'}>")
                i = end
                continue
        out.append(ch)
        i += 1
    return "".join(out)


class RedactDumps(logging.Filter):
    """Rewrites the record in place (so every handler after this filter sees the redacted text); drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: let logging report it as it always does
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # Exception messages can quote objects too; both kopf formatters print exc_text when exc_info is gone.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install() -> None:
    """On every root handler (kopf's stream handler: our loggers, kopf's, libraries') and on kopf.objects itself,
    whose records also become Kubernetes Events through kopf's poster, a handler that the root's filters never see."""
    redact_dumps = RedactDumps()
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact_dumps)
    logging.getLogger("kopf.objects").addFilter(redact_dumps)
