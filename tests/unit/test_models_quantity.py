"""Kubernetes quantities, parsed as Go's resource.ParseQuantity (and so CEL's isQuantity) does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tgi_operator.quantity import gib, is_quantity, parse_quantity

GI = 1024**3


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", 8),
        (8, 8),
        ("8000m", 8),
        ("4500m", Decimal("4.5")),
        ("32Gi", 32 * GI),
        ("16384Mi", 16 * GI),
        ("32G", 32 * 10**9),
        ("1e3", 1000),
        ("1E3", 1000),
        ("2e+1", 20),
        ("5e-1", Decimal("0.5")),
        ("1E", 10**18),  # E alone is exa, not an exponent
        ("1Ki", 1024),
        ("1k", 1000),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("8.", 8),
        ("+8", 8),
        ("-8", -8),
        ("007", 7),
        ("+", 0),  # Go's parser reads a lone sign or dot as zero
        (".", 0),
        ("100n", Decimal("1E-7")),
        ("100u", Decimal("1E-4")),
    ],
)
def test_parses_like_the_api_server(text: int | str, value: int | Decimal) -> None:
    assert parse_quantity(text) == value
    assert is_quantity(text)


@pytest.mark.parametrize(
    "text",
    ["", "eight", "1K", "1ki", "1mi", "32GB", "32 Gi", " 8", "8 ", "1_000", "NaN", "Infinity", "1e", "1.2.3", "--1",
     "0x10", "1Gi1"],
)
def test_refuses_what_the_api_server_refuses(text: str) -> None:
    assert not is_quantity(text)
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize("value", [True, False, 8.0, None, ["8"]])
def test_only_ints_and_strings_are_quantities(value: object) -> None:
    assert not is_quantity(value)


def test_gib() -> None:
    assert gib("32Gi") == 32
    assert gib(16 * GI) == 16
