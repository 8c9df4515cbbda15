"""Kubernetes resource quantities ("8", "8000m", "32Gi", "1e3"), parsed exactly as the API server does.

The CRD checks CPU and memory with CEL's `isQuantity()`/`quantity()`, which call Go's
`resource.ParseQuantity`; the pydantic models and the renderer must accept and compare the very
same values, so this follows Go's grammar (including its quirks such as "+" or "." meaning zero)
rather than the looser `kubernetes.utils.parse_quantity` (which takes "1K", "NaN" or "1_000").
"""

from __future__ import annotations

import re
from decimal import Decimal

# <sign>? <digits>? ("." <digits>?)? <suffix>?  (Go: apimachinery/pkg/api/resource/quantity.go)
_QUANTITY = re.compile(
    r"(?P<number>[+-]?[0-9]*(?:\.[0-9]*)?)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MAX_EXPONENT_DIGITS = 18  # Go parses the exponent as int64


def parse_quantity(value: int | str) -> Decimal:
    """The exact value of a Kubernetes quantity; ValueError when the API server would refuse it."""
    if isinstance(value, bool):  # bool is an int in Python, never a quantity
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY.fullmatch(value) if value else None
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (for example 8, 8000m, 32Gi)")
    number, suffix = match["number"], match["suffix"] or ""
    digits = number.lstrip("+-")
    magnitude = Decimal(digits) if digits not in ("", ".") else Decimal(0)  # Go reads "" and "." as 0
    if number.startswith("-"):
        magnitude = -magnitude
    if suffix in _BINARY:
        return magnitude * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return magnitude.scaleb(_DECIMAL[suffix])
    exponent = suffix[1:]
    if len(exponent.lstrip("+-")) > _MAX_EXPONENT_DIGITS:
        raise ValueError(f"{value!r} has an exponent out of range")
    return magnitude.scaleb(int(exponent))


def is_quantity(value: object) -> bool:
    """True when `value` (an int or a string) is a quantity the API server accepts."""
    if not isinstance(value, (int, str)):
        return False
    try:
        parse_quantity(value)
    except ValueError:
        return False
    return True


def gib(value: int | str) -> Decimal:
    """A memory quantity in GiB (for messages and comparisons with the GPU table)."""
    return parse_quantity(value) / (Decimal(1024) ** 3)
