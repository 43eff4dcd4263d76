"""Parsing an order request's body into an `OrderRequest`, exactly and strictly.

Unknown fields are refused, so a typo such as `slipageBps` never silently means "use the
default". Amounts stay exact: the body arrives parsed with every JSON number as a `Decimal`
(see `validation.parse_json`).

Limit and sniper orders add their terms (`limitPrice`, an expiry, `minLiquidity`); a field
that exists but does not belong to the order's type is refused as `field_not_allowed`, so a
limit price sent with a market order never silently means nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from order_engine.api.amounts import base_units, exact_decimal, fraction_digits, plain, stripped
from order_engine.api.errors import ApiError, bad_request
from order_engine.api.validation import check_text
from order_engine.engine import OrderRequest
from order_engine.orders import OrderType
from order_engine.venues.tokens import Token, TokenRegistry, UnknownToken

MAX_CLIENT_ORDER_ID = 64
MAX_IDEMPOTENCY_KEY = 255
# A limit price is kept exact: at most this many significant digits, and this many digits
# either side of the point, so its plain decimal form stays short.
MAX_PRICE_DIGITS = 30
_COMMON_FIELDS = frozenset(
    {"tokenIn", "tokenOut", "amount", "slippageBps", "clientOrderId", "orderType"}
)
_EXPIRY_FIELDS = ("expiresIn", "expiresAt")
# What each order type takes beyond the common fields.
_TYPE_FIELDS: dict[OrderType, frozenset[str]] = {
    OrderType.MARKET: frozenset(),
    OrderType.LIMIT: frozenset({"limitPrice", *_EXPIRY_FIELDS}),
    OrderType.SNIPER: frozenset({"limitPrice", "minLiquidity", *_EXPIRY_FIELDS}),
}
_FIELDS = _COMMON_FIELDS.union(*_TYPE_FIELDS.values())
_ORDER_TYPES = frozenset(t.value for t in OrderType)


@dataclass(frozen=True, slots=True)
class _Terms:
    """A limit or sniper order's terms, as parsed (all None for a market order)."""

    limit_price: Decimal | None = None
    expires_at: float | None = None
    # The expiry as the client asked for it ("in:60", "at:<epoch>"): what the request hash
    # keeps, so a retried `expiresIn` request is the same request a minute later too.
    expiry: str = ""
    min_liquidity: int | None = None


class OrderParser:
    def __init__(
        self,
        registry: TokenRegistry,
        *,
        default_slippage_bps: int,
        max_slippage_bps: int,
        max_expiry_s: float = 604_800.0,
        clock: Callable[[], float] = time.time,
    ):
        self._registry = registry
        self._default_slippage = default_slippage_bps
        self._max_slippage = max_slippage_bps
        self._max_expiry = max_expiry_s
        self._clock = clock

    def parse(
        self, body: Any, idempotency_key: str | None = None, *, client_id: str | None = None
    ) -> OrderRequest:
        """`client_id`: the authenticated client; its idempotency keys and clientOrderIds
        are its own (two clients may use the same)."""
        if not isinstance(body, dict):
            raise bad_request("invalid_body", "body must be a JSON object")
        _refuse_unknown_fields(body)
        order_type = _order_type(body)
        _refuse_foreign_fields(body, order_type)
        token_in = self._token(body, "tokenIn")
        # A sniper waits for its token's first pool: it may name one not tradable yet.
        token_out = self._token(body, "tokenOut", upcoming=order_type is OrderType.SNIPER)
        if self._registry.pool_token(token_in) == self._registry.pool_token(token_out):
            raise bad_request(
                "same_token", "tokenIn and tokenOut must be different tokens", "tokenOut"
            )
        amount = self._amount(body, token_in)
        slippage = self._slippage(body)
        client_order_id = _client_order_id(body)
        terms = self._terms(body, order_type, token_in)
        request = OrderRequest(
            token_in,
            token_out,
            amount,
            slippage,
            client_order_id,
            client_id=client_id,
            order_type=order_type,
            limit_price=terms.limit_price,
            expires_at=terms.expires_at,
            min_liquidity=terms.min_liquidity,
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
        return replace(
            request,
            idempotency_key=idempotency_key
            if client_id is None
            else f"{client_id}:{idempotency_key}",
            request_hash=request_hash(request, terms.expiry),
        )

    def _token(self, body: dict[str, Any], name: str, *, upcoming: bool = False) -> Token:
        """The one place a token of an order is resolved. `upcoming`: a listed token that
        no pool holds yet is accepted too."""
        value = body.get(name)
        if value is None:
            raise bad_request("missing_field", f"{name} is required", name)
        if not isinstance(value, str):
            raise bad_request("invalid_type", f"{name} must be a string", name)
        check_text(value, name)
        try:
            return self._registry.resolve(value.strip(), upcoming=upcoming)
        except UnknownToken:
            known = ", ".join(t.symbol for t in self._registry)
            shown = value if len(value) <= 64 else value[:64] + "…"
            raise bad_request(
                "unknown_token", f"unknown token {shown!r} (known: {known})", name
            ) from None

    def _amount(self, body: dict[str, Any], token: Token) -> int:
        value = body.get("amount")
        if value is None:
            raise bad_request("missing_field", "amount is required", "amount")
        return base_units(value, token, "amount")

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

    def _terms(self, body: dict[str, Any], order_type: OrderType, token_in: Token) -> _Terms:
        if order_type is OrderType.MARKET:
            return _Terms()
        limit_price = _limit_price(body, required=order_type is OrderType.LIMIT)
        expires_at, expiry = self._expiry(body)
        return _Terms(
            limit_price=limit_price,
            expires_at=expires_at,
            expiry=expiry,
            min_liquidity=_min_liquidity(body, token_in),
        )

    def _expiry(self, body: dict[str, Any]) -> tuple[float | None, str]:
        """(epoch seconds, the expiry as asked), or (None, "") when none was given: the
        engine applies its default then."""
        given = [name for name in body if name in _EXPIRY_FIELDS and body[name] is not None]
        if not given:
            return None, ""
        if len(given) > 1:
            raise bad_request("invalid_expiry", "give expiresIn or expiresAt, not both", given[1])
        name = given[0]
        now = self._clock()
        if name == "expiresIn":
            seconds = _seconds(body[name])
            self._check_horizon(seconds, name)
            return now + float(seconds), f"in:{plain(seconds)}"
        at = _epoch(body[name])
        if at <= now:
            raise bad_request("invalid_expiry", "expiresAt must lie in the future", name)
        self._check_horizon(Decimal(at) - Decimal(now), name)
        return at, f"at:{at!r}"

    def _check_horizon(self, seconds: Decimal, field: str) -> None:
        if seconds > Decimal(self._max_expiry):
            raise bad_request(
                "invalid_expiry",
                f"{field} must be at most {self._max_expiry:g} seconds from now",
                field,
            )


def _refuse_unknown_fields(body: dict[str, Any]) -> None:
    """All the unknown fields at once: a client fixing its request fixes them together."""
    unknown = [name for name in body if name not in _FIELDS]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise bad_request("unknown_field", f"unknown field{plural} {names}", unknown[0])


def _order_type(body: dict[str, Any]) -> OrderType:
    value = body.get("orderType")
    if value is None:
        return OrderType.MARKET
    if isinstance(value, str) and value in _ORDER_TYPES:
        return OrderType(value)
    names = ", ".join(t.value for t in OrderType)
    raise bad_request("invalid_order_type", f"orderType must be one of {names}", "orderType")


def _refuse_foreign_fields(body: dict[str, Any], order_type: OrderType) -> None:
    """A field of another order type is refused, not ignored: the client meant something."""
    allowed = _COMMON_FIELDS | _TYPE_FIELDS[order_type]
    for name in body:
        if name not in allowed:
            raise bad_request(
                "field_not_allowed", f"{name} does not apply to a {order_type} order", name
            )


def _client_order_id(body: dict[str, Any]) -> str | None:
    value = body.get("clientOrderId")
    if isinstance(value, str):
        check_text(value, "clientOrderId")
    if value is not None and (
        not isinstance(value, str) or not 0 < len(value) <= MAX_CLIENT_ORDER_ID
    ):
        raise bad_request(
            "invalid_client_order_id",
            f"clientOrderId must be a string of 1 to {MAX_CLIENT_ORDER_ID} characters",
            "clientOrderId",
        )
    return value


def _limit_price(body: dict[str, Any], *, required: bool) -> Decimal | None:
    """The least tokenOut per one tokenIn, exact, in plain form (no exponent)."""
    value = body.get("limitPrice")
    if value is None:
        if required:
            raise bad_request("missing_field", "limitPrice is required", "limitPrice")
        return None
    what = (
        f"a positive decimal number of at most {MAX_PRICE_DIGITS} significant digits and "
        f"{MAX_PRICE_DIGITS} digits either side of the point"
    )
    price = exact_decimal(value, "limitPrice", "invalid_limit_price", what)
    if not price.is_finite() or price <= 0:
        raise bad_request("invalid_limit_price", f"limitPrice must be {what}", "limitPrice")
    normal = stripped(price)
    if (
        len(normal.as_tuple().digits) > MAX_PRICE_DIGITS
        or normal.adjusted() >= MAX_PRICE_DIGITS
        or fraction_digits(normal) > MAX_PRICE_DIGITS
    ):
        raise bad_request("invalid_limit_price", f"limitPrice must be {what}", "limitPrice")
    return Decimal(plain(normal))


def _min_liquidity(body: dict[str, Any], token_in: Token) -> int | None:
    """A sniper's least pool depth, in tokenIn units as amount is: its base units."""
    value = body.get("minLiquidity")
    if value is None:
        return None
    try:
        return base_units(value, token_in, "minLiquidity")
    except ApiError as exc:
        if exc.code in ("invalid_type", "invalid_text"):
            raise
        raise bad_request(
            "invalid_min_liquidity",
            f"minLiquidity must be a positive amount of {token_in.symbol} with at most "
            f"{token_in.decimals} decimals",
            "minLiquidity",
        ) from None


def _seconds(value: Any) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise bad_request(
            "invalid_expiry", "expiresIn must be a number of seconds above 0", "expiresIn"
        )
    return value


def _epoch(value: Any) -> float:
    """expiresAt: epoch seconds (a number), or an ISO 8601 time with a timezone."""
    if isinstance(value, Decimal) and value.is_finite():
        return float(value)
    if isinstance(value, str):
        check_text(value, "expiresAt")
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.timestamp()
    raise bad_request(
        "invalid_expiry",
        "expiresAt must be epoch seconds or an ISO 8601 time with a timezone",
        "expiresAt",
    )


def request_hash(request: OrderRequest, expiry: str = "") -> str:
    """What makes two requests 'the same' for an Idempotency-Key. `expiry`: the expiry as
    asked (see `_Terms`), not the instant it became. A market order hashes as it always did,
    so keys stored before order types existed still match."""
    parts = [
        request.token_in.symbol,
        request.token_out.symbol,
        str(request.amount),
        str(request.slippage_bps),
        request.client_order_id or "",
    ]
    if request.order_type is not OrderType.MARKET:
        price = request.limit_price
        liquidity = request.min_liquidity
        parts += [
            request.order_type.value,
            "" if price is None else plain(price),
            expiry,
            "" if liquidity is None else str(liquidity),
        ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


__all__ = ["OrderParser"]
