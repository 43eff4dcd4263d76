"""Validating what a request carries, exactly and strictly: its JSON, its text, its ids.

Amounts must stay exact, so the body is parsed with every JSON number as a `Decimal` (orjson
would turn 0.1 into a binary float and a 30-digit integer into 1e30). The order body itself is
parsed in `order_parser`.

Text is refused unless it is UTF-8 without NUL: a JSON `\\ud800` escape, or header bytes that
are not UTF-8, arrive as lone surrogates no database can encode, and PostgreSQL refuses NUL
where SQLite would store it. Both are turned away here, where the field can be named, rather
than failing in the store's batch of other clients' writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from order_engine.api.errors import bad_request, shown


def check_text(value: str, field: str, what: str | None = None) -> str:
    """`value`, if it is UTF-8 text without NUL; else a 400 naming `field` (`what`: how the
    message calls it, the field by default)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        pass
    else:
        if "\x00" not in value:
            return value
    raise bad_request(
        "invalid_text",
        f"{what or shown(field)} must be UTF-8 text without NUL characters or lone surrogates",
        shown(field),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        # Refused as bad text rather than as an unknown field: such a name is no typo.
        check_text(key, key, f"field name '{shown(key)}'")
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


# One decoder for every request: `json.loads` with hooks builds a decoder and its scanner
# per call. It keeps no state between calls.
_DECODER = json.JSONDecoder(
    parse_float=Decimal,
    parse_int=Decimal,
    parse_constant=_refuse_constant,
    object_pairs_hook=_unique_keys,
)


def parse_json(raw: bytes | str) -> Any:
    try:
        # As `json.loads` takes its argument: bytes in any UTF of JSON's, text without a BOM.
        if isinstance(raw, str):
            if raw.startswith("\ufeff"):
                raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
            text = raw
        else:
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(text)
    except UnicodeDecodeError:
        raise bad_request("invalid_json", "body is not valid UTF-8") from None
    except RecursionError:
        raise bad_request("invalid_json", "body is nested too deeply") from None
    except ValueError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None


def parse_order_id(value: str | None, field: str = "orderId") -> str:
    if not value:
        raise bad_request("missing_field", f"{field} is required", field)
    check_text(value, field)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise bad_request("invalid_order_id", f"{field} must be a UUID", field) from None


def parse_after(value: str | None) -> int:
    if value is None:
        return 0
    check_text(value, "after")
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise bad_request("invalid_after", "after must be a non-negative integer", "after")
    return int(value)


def check_request_text(
    query: Mapping[str, str], headers: Mapping[str, str], *, websocket: bool = False
) -> None:
    """Every query parameter (name and value) and the API key, before the authentication or
    any handler sees them (Idempotency-Key is checked with the order it keys). A WebSocket
    upgrade has only its key checked here, refused before the upgrade as a wrong key is: the
    handler refuses the rest after it, as an Error message then 1008, as it does any
    malformed WebSocket request."""
    for name, value in query.items():
        if websocket and name != "apiKey":
            continue
        check_text(name, name, f"query parameter name '{shown(name)}'")
        check_text(value, name)
    key = headers.get("x-api-key")
    if key is not None:
        check_text(key, "x-api-key")


__all__ = [
    "check_request_text",
    "check_text",
    "parse_after",
    "parse_json",
    "parse_order_id",
]
