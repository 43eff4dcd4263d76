"""Parsing and validating an order request, exactly and strictly.

Amounts must stay exact, so the body is parsed with every JSON number as a `Decimal` (orjson
would turn 0.1 into a binary float and a 30-digit integer into 1e30). Unknown fields are
refused, so a typo such as `slipageBps` never silently means "use the default".

Text is refused unless it is UTF-8 without NUL: a JSON `\\ud800` escape, or header bytes that
are not UTF-8, arrive as lone surrogates no database can encode, and PostgreSQL refuses NUL
where SQLite would store it. Both are turned away here, where the field can be named, rather
than failing in the store's batch of other clients' writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from order_engine.api.errors import ApiError, bad_request, shown
from order_engine.engine import OrderRequest
from order_engine.venues.tokens import AmountError, TokenRegistry, UnknownToken

U64_MAX = 2**64 - 1  # SPL token amounts are u64
MAX_CLIENT_ORDER_ID = 64
MAX_IDEMPOTENCY_KEY = 255
_DECIMAL_STRING = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_FIELDS = {"tokenIn", "tokenOut", "amount", "slippageBps", "clientOrderId"}


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


def parse_json(raw: bytes | str) -> Any:
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except UnicodeDecodeError:
        raise bad_request("invalid_json", "body is not valid UTF-8") from None
    except RecursionError:
        raise bad_request("invalid_json", "body is nested too deeply") from None
    except ValueError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None


class OrderParser:
    def __init__(
        self, registry: TokenRegistry, *, default_slippage_bps: int, max_slippage_bps: int
    ):
        self._registry = registry
        self._default_slippage = default_slippage_bps
        self._max_slippage = max_slippage_bps

    def parse(
        self, body: Any, idempotency_key: str | None = None, *, client_id: str | None = None
    ) -> OrderRequest:
        """`client_id`: the authenticated client; its idempotency keys and clientOrderIds
        are its own (two clients may use the same)."""
        if not isinstance(body, dict):
            raise bad_request("invalid_body", "body must be a JSON object")
        for name in body:
            if name not in _FIELDS:
                raise bad_request("unknown_field", f"unknown field {name!r}", name)
        token_in = self._token(body, "tokenIn")
        token_out = self._token(body, "tokenOut")
        if self._registry.pool_token(token_in) == self._registry.pool_token(token_out):
            raise bad_request(
                "same_token", "tokenIn and tokenOut must be different tokens", "tokenOut"
            )
        amount = self._amount(body, token_in)
        slippage = self._slippage(body)
        client_order_id = body.get("clientOrderId")
        if isinstance(client_order_id, str):
            check_text(client_order_id, "clientOrderId")
        if client_order_id is not None and (
            not isinstance(client_order_id, str)
            or not 0 < len(client_order_id) <= MAX_CLIENT_ORDER_ID
        ):
            raise bad_request(
                "invalid_client_order_id",
                f"clientOrderId must be a string of 1 to {MAX_CLIENT_ORDER_ID} characters",
                "clientOrderId",
            )
        request = OrderRequest(
            token_in, token_out, amount, slippage, client_order_id, client_id=client_id
        )
        if idempotency_key is None:
            return request
        check_text(idempotency_key, "Idempotency-Key")
        if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY or not idempotency_key.isprintable():
            raise bad_request(
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                "Idempotency-Key",
            )
        return OrderRequest(
            token_in,
            token_out,
            amount,
            slippage,
            client_order_id,
            idempotency_key=idempotency_key
            if client_id is None
            else f"{client_id}:{idempotency_key}",
            request_hash=request_hash(request),
            client_id=client_id,
        )

    def _token(self, body: dict[str, Any], name: str) -> Any:
        value = body.get(name)
        if value is None:
            raise bad_request("missing_field", f"{name} is required", name)
        if not isinstance(value, str):
            raise bad_request("invalid_type", f"{name} must be a string", name)
        check_text(value, name)
        try:
            return self._registry.resolve(value.strip())
        except UnknownToken:
            known = ", ".join(t.symbol for t in self._registry)
            shown = value if len(value) <= 64 else value[:64] + "…"
            raise bad_request(
                "unknown_token", f"unknown token {shown!r} (known: {known})", name
            ) from None

    def _amount(self, body: dict[str, Any], token: Any) -> int:
        value = body.get("amount")
        if value is None:
            raise bad_request("missing_field", "amount is required", "amount")
        if isinstance(value, str):
            text = check_text(value, "amount").strip()
            if len(text) > 100 or not _DECIMAL_STRING.match(text):
                raise bad_request(
                    "invalid_amount", "amount must be a positive decimal number", "amount"
                )
            value = Decimal(text)
        if not isinstance(value, Decimal):
            raise bad_request(
                "invalid_type", "amount must be a number or a decimal string", "amount"
            )
        if value.is_finite() and value.adjusted() > 30:
            raise bad_request("amount_too_large", "amount is too large", "amount")
        try:
            base = token.to_base(value)
        except AmountError as exc:
            raise bad_request(exc.code, exc.message, "amount") from None
        if base > U64_MAX:
            raise bad_request(
                "amount_too_large", f"amount exceeds the largest {token.symbol} amount", "amount"
            )
        return int(base)

    def _slippage(self, body: dict[str, Any]) -> int:
        value = body.get("slippageBps")
        if value is None:
            return self._default_slippage
        try:
            ok = isinstance(value, Decimal) and value == value.to_integral_value()
        except InvalidOperation:
            ok = False
        if not ok or not 0 <= value <= self._max_slippage:
            raise bad_request(
                "invalid_slippage",
                f"slippageBps must be an integer from 0 to {self._max_slippage}",
                "slippageBps",
            )
        return int(value)


def request_hash(request: OrderRequest) -> str:
    """What makes two requests 'the same' for an Idempotency-Key."""
    canonical = "|".join(
        [
            request.token_in.symbol,
            request.token_out.symbol,
            str(request.amount),
            str(request.slippage_bps),
            request.client_order_id or "",
        ]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    "ApiError",
    "OrderParser",
    "check_request_text",
    "check_text",
    "parse_after",
    "parse_json",
    "parse_order_id",
]
