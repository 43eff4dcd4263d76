"""The trading session's frames: a request read strictly, and the replies and events written.

A request is one JSON object `{"id", "op", ...}`. Its `id` is any JSON scalar (string,
number, boolean or null) and is echoed back exactly as it arrived: a number is kept as the
`Decimal` the JSON parser made of it, so `1e400` or a 30-digit id comes back unchanged. A
request without a usable id cannot be answered by id: `Unanswerable` says why, and the
session answers it once without an id, then closes.

What a request carries besides its envelope (the order, an order id, `after`) is validated by
the same code as HTTP: the order parser, `parse_order_id`, and the same error codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from order_engine.api.errors import ApiError, bad_request
from order_engine.api.validation import check_text, parse_json, parse_order_id
from order_engine.orders import OrderEvent

# What each op takes besides `id` and `op`.
OP_FIELDS: dict[str, frozenset[str]] = {
    "submit": frozenset({"order", "idempotencyKey"}),
    "cancel": frozenset({"orderId"}),
    "watch": frozenset({"orderId", "after"}),
}
MAX_AFTER_DIGITS = 18  # as the status stream's `after`
# An HTTP header's name as the session spells the same thing in its JSON.
_SESSION_FIELDS = {"Idempotency-Key": "idempotencyKey"}


class Unanswerable(Exception):
    """A frame without a usable id (not JSON, not an object, no id or not a scalar one)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class Request:
    id_json: str  # the id as JSON text, as it is echoed
    op: str
    body: dict[str, Any]


def read_request(data: str | bytes) -> Request:
    """The request in a frame. Raises Unanswerable (no usable id) or, for a request that
    can be answered by its id, ApiError with `id_json` set on it (`answer_to`)."""
    try:
        body = parse_json(data)
    except ApiError as exc:
        raise Unanswerable(exc) from None
    if not isinstance(body, dict):
        raise Unanswerable(bad_request("invalid_request", "a request must be a JSON object"))
    if "id" not in body:
        raise Unanswerable(bad_request("missing_field", "id is required", "id"))
    id_json = _id_json(body["id"])
    op = body.get("op")
    if op is None:
        raise RequestError(id_json, bad_request("missing_field", "op is required", "op"))
    if not isinstance(op, str) or op not in OP_FIELDS:
        ops = ", ".join(OP_FIELDS)
        raise RequestError(id_json, bad_request("invalid_op", f"op must be one of {ops}", "op"))
    unknown = [name for name in body if name not in ("id", "op") and name not in OP_FIELDS[op]]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        message = f"unknown field{plural} {names} for op {op}"
        raise RequestError(id_json, bad_request("unknown_field", message, unknown[0]))
    return Request(id_json, op, body)


class RequestError(Exception):
    """A request refused before its op ran, answered by its id."""

    def __init__(self, id_json: str, error: ApiError) -> None:
        super().__init__(error.message)
        self.id_json = id_json
        self.error = error


def _id_json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        # The parser made it from a JSON number: its text is one again (`1E+2`, `-0`).
        return str(value)
    if isinstance(value, str):
        try:
            check_text(value, "id")
        except ApiError as exc:
            raise Unanswerable(exc) from None
        return orjson.dumps(value).decode()
    raise Unanswerable(
        bad_request("invalid_id", "id must be a string, a number, a boolean or null", "id")
    )


def order_id_of(request: Request) -> str:
    value = request.body.get("orderId")
    if value is not None and not isinstance(value, str):
        raise bad_request("invalid_type", "orderId must be a string", "orderId")
    return parse_order_id(value)


def after_of(request: Request) -> int:
    """`after` of a watch: the last seq the client saw (0, the default: from the first)."""
    value = request.body.get("after")
    if value is None:
        return 0
    message = "after must be a non-negative integer"
    if not isinstance(value, Decimal) or not value.is_finite() or value != value.to_integral():
        raise bad_request("invalid_after", message, "after")
    if value < 0 or value >= 10**MAX_AFTER_DIGITS:
        raise bad_request("invalid_after", message, "after")
    return int(value)


def submitted_order_of(request: Request) -> tuple[Any, str | None]:
    """The order's body (for the order parser) and the idempotency key of a submit."""
    if request.body.get("order") is None:
        raise bad_request("missing_field", "order is required", "order")
    key = request.body.get("idempotencyKey")
    if key is not None and not isinstance(key, str):
        raise bad_request("invalid_type", "idempotencyKey must be a string", "idempotencyKey")
    return request.body["order"], key


def session_error(error: ApiError) -> ApiError:
    """An HTTP refusal as the session words it: a header's name becomes the request's field
    (`Idempotency-Key` -> `idempotencyKey`), a body that is not an object names `order`."""
    field = error.field
    if field in _SESSION_FIELDS:
        error.field = _SESSION_FIELDS[field]
    elif field is None and error.code == "invalid_body":
        error.field = "order"
        error.message = "order must be a JSON object"
    return error


# -- refusals of the session's own ----------------------------------------------------------


def not_found(order_id: str) -> ApiError:
    """As HTTP answers an unknown order, or another client's."""
    return ApiError(404, "order_not_found", f"no order {order_id}", "orderId")


def rate_limited(wait: float) -> ApiError:
    """As the HTTP rate limit refuses a request; `wait`: seconds until a token is back."""
    return ApiError(
        429,
        "rate_limited",
        "too many requests; slow down",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def too_many_orders(most: int) -> ApiError:
    return ApiError(
        429,
        "too_many_orders",
        f"a session follows at most {most} orders at once: wait for some to end, or open "
        "another session",
        headers={"Retry-After": "1"},
    )


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "the request failed on the server")


# -- frames written -------------------------------------------------------------------------


def result_frame(id_json: str, result: dict[str, Any]) -> str:
    return f'{{"id":{id_json},"result":{orjson.dumps(result).decode()}}}'


def error_frame(id_json: str | None, error: ApiError) -> str:
    """`{"id", "error"}`, or `{"error"}` for a request without a usable id. `retryAfter`
    (seconds) when HTTP would have sent Retry-After (rate limited, queue full, ...)."""
    body = error.body()
    retry_after = error.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        body["error"]["retryAfter"] = int(retry_after)
    if id_json is None:
        return orjson.dumps(body).decode()
    return f'{{"id":{id_json},"error":{orjson.dumps(body["error"]).decode()}}}'


def event_frame(event: OrderEvent) -> str:
    return orjson.dumps({"event": event.to_message()}).decode()
