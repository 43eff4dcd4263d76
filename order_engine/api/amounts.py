"""Exact numbers from a request: decimals never rounded, UI amounts in base units.

A request's numbers arrive as `Decimal` (see `validation.parse_json`) or as plain decimal
strings; they stay exact all the way: no binary float, no rounding to the default context's
28 digits.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal
from typing import Any

from order_engine.api.errors import bad_request
from order_engine.api.validation import check_text
from order_engine.venues.tokens import AmountError, Token

U64_MAX = 2**64 - 1  # SPL token amounts are u64
_DECIMAL_STRING = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def exact_decimal(value: Any, field: str, code: str, what: str) -> Decimal:
    """A JSON number (parsed as a Decimal) or a plain decimal string; `code` and `what` for
    a string that is no decimal number."""
    if isinstance(value, str):
        text = check_text(value, field).strip()
        if len(text) > 100 or not _DECIMAL_STRING.match(text):
            raise bad_request(code, f"{field} must be {what}", field)
        return Decimal(text)
    if not isinstance(value, Decimal):
        raise bad_request("invalid_type", f"{field} must be a number or a decimal string", field)
    return value


def base_units(value: Any, token: Token, field: str) -> int:
    """A UI amount of `token` (number or decimal string), exactly, in its base units."""
    value = exact_decimal(value, field, "invalid_amount", "a positive decimal number")
    if value.is_finite() and value.adjusted() > 30:
        raise bad_request("amount_too_large", f"{field} is too large", field)
    if value.is_finite() and value > 0 and fraction_digits(value) > token.decimals:
        # Checked here, exactly: Token.to_base's own check rounds past 28 digits first.
        raise bad_request(
            "too_many_decimals",
            f"{token.symbol} has {token.decimals} decimals; {field} has more",
            field,
        )
    try:
        base = token.to_base(value)
    except AmountError as exc:
        raise bad_request(exc.code, exc.message, field) from None
    if base > U64_MAX:
        raise bad_request(
            "amount_too_large", f"{field} exceeds the largest {token.symbol} amount", field
        )
    return int(base)


def stripped(value: Decimal) -> Decimal:
    """`value` without trailing zeros, never rounded (normalize() in the default context
    would round it to 28 digits)."""
    return value.normalize(Context(prec=max(len(value.as_tuple().digits), 1)))


def fraction_digits(value: Decimal) -> int:
    """Digits after the point that matter (a finite value): 1.50 -> 1, 100 -> 0."""
    exponent = stripped(value).as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return max(-exponent, 0)


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros, exactly: 1E+2 -> 100, 1.50 -> 1.5."""
    text = format(stripped(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
