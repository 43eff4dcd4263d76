"""The order history: filters, newest first, cursor pages that stay stable under inserts."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import datetime

import orjson

from order_engine.api.errors import bad_request
from order_engine.orders import Order, Status
from order_engine.store import OrderQuery
from order_engine.venues.tokens import TokenRegistry, UnknownToken

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
_PARAMS = {"status", "tokenIn", "tokenOut", "from", "to", "limit", "cursor"}
# 9999-12-31T23:59:59Z: the latest time PostgreSQL's timestamptz and Python's datetime share.
LATEST = 253_402_300_799.0


def encode_cursor(order: Order) -> str:
    raw = orjson.dumps([order.created_at, order.order_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        at, order_id = orjson.loads(raw)
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(order_id, str):
            raise ValueError(value)
        # Only cursors this API made are valid: a time an order can have, an id of text
        # every store can compare (PostgreSQL refuses NUL where SQLite would not).
        if not 0 <= at <= LATEST or "\x00" in order_id or not _encodable(order_id):
            raise ValueError(value)
        return round(float(at), 6), order_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad_request(
            "invalid_cursor", "cursor must be a nextCursor from a previous page", "cursor"
        ) from None


def _time(value: str, field: str) -> float:
    """Epoch seconds, or an ISO 8601 date-time with a timezone."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise bad_request(
                "invalid_time",
                f"{field} must be epoch seconds or an ISO 8601 time with a timezone",
                field,
            ) from None
        seconds = moment.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise bad_request("invalid_time", f"{field} must be a time after 1970", field)
    # No order is created after the last second the stores can represent (9999-12-31):
    # a bound beyond it means the same as that second, in every store. Orders' times are
    # kept to the microsecond (PostgreSQL keeps no more): so are the bounds, in both stores.
    return round(min(seconds, LATEST), 6)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_history_query(
    params: Mapping[str, str], registry: TokenRegistry, client_id: str | None
) -> OrderQuery:
    for name in params:
        if name not in _PARAMS:
            raise bad_request("unknown_parameter", f"unknown query parameter {name!r}", name)
    statuses: tuple[Status, ...] = ()
    if "status" in params:
        try:
            statuses = tuple(Status(s) for s in params["status"].split(","))
        except ValueError:
            names = ", ".join(s.value for s in Status)
            raise bad_request(
                "invalid_status", f"status must be one or more of {names}", "status"
            ) from None
    tokens: dict[str, str | None] = {}
    for field in ("tokenIn", "tokenOut"):
        value = params.get(field)
        if value is None:
            tokens[field] = None
            continue
        try:
            # Upcoming tokens too: sniper orders name them before they trade.
            tokens[field] = registry.resolve(value, upcoming=True).symbol
        except UnknownToken:
            raise bad_request("unknown_token", f"unknown token {value!r}", field) from None
    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
            raise bad_request(
                "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}", "limit"
            )
        limit = int(text)
    return OrderQuery(
        statuses=statuses,
        token_in=tokens["tokenIn"],
        token_out=tokens["tokenOut"],
        created_from=_time(params["from"], "from") if "from" in params else None,
        created_to=_time(params["to"], "to") if "to" in params else None,
        client_id=client_id,
        before=_decode_cursor(params["cursor"]) if "cursor" in params else None,
        limit=limit,
    )
