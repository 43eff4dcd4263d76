"""The order parser on its own, with a clock the test sets: limit and sniper terms, expiry
bounds to the second, and what the Idempotency-Key's request hash covers."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest

from order_engine.api.errors import ApiError
from order_engine.api.order_parser import OrderParser
from order_engine.api.validation import parse_json
from order_engine.orders import OrderType
from order_engine.venues.tokens import ALL_TOKENS, UPCOMING_TOKENS, TokenRegistry, TokenState

NOW = 1_800_000_000.0
MAX_EXPIRY = 604_800.0
ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> TokenRegistry:
    """A registry of its own: what other tests launch does not change its upcoming tokens."""
    return TokenRegistry(ALL_TOKENS, upcoming=UPCOMING_TOKENS)


@pytest.fixture
def parser(clock: Clock, registry: TokenRegistry) -> OrderParser:
    return OrderParser(
        registry,
        default_slippage_bps=50,
        max_slippage_bps=5_000,
        max_expiry_s=MAX_EXPIRY,
        clock=clock,
    )


def body(**fields: Any) -> Any:
    """A body as the API parses it: JSON numbers as Decimals."""
    return parse_json(json.dumps({**ORDER, **fields}))


def refusal(parser: OrderParser, **fields: Any) -> tuple[str, str | None]:
    with pytest.raises(ApiError) as refused:
        parser.parse(body(**fields))
    return refused.value.code, refused.value.field


def test_a_sniper_order_takes_its_terms(parser: OrderParser) -> None:
    request = parser.parse(
        body(tokenOut="BONK", orderType="sniper", minLiquidity="2.5", limitPrice=1e5, expiresIn=60)
    )
    assert request.order_type is OrderType.SNIPER
    assert request.token_out.symbol == "BONK"
    assert request.min_liquidity == 2_500_000_000  # SOL base units
    assert request.limit_price == Decimal("100000")
    assert str(request.limit_price) == "100000"  # plain, never 1E+5
    assert request.expires_at == NOW + 60


def test_a_sniper_may_target_a_token_not_tradable_yet(
    parser: OrderParser, registry: TokenRegistry
) -> None:
    request = parser.parse(body(tokenOut="WOOF", orderType="sniper"))
    assert request.token_out.symbol == "WOOF"
    assert registry.state(request.token_out) is TokenState.UPCOMING
    for fields in ({"orderType": "limit", "limitPrice": 1}, {}):
        assert refusal(parser, tokenOut="WOOF", **fields) == ("unknown_token", "tokenOut")
    assert refusal(parser, tokenIn="WOOF", orderType="sniper") == ("unknown_token", "tokenIn")


def test_a_sniper_order_needs_no_limit_price_nor_expiry(parser: OrderParser) -> None:
    request = parser.parse(body(tokenOut="BONK", orderType="sniper"))
    assert (request.limit_price, request.expires_at, request.min_liquidity) == (None,) * 3


def test_a_limit_price_is_kept_exactly(parser: OrderParser) -> None:
    digits = "123456789012345.678901234567890"  # 30 significant digits: more than 28
    request = parser.parse(body(orderType="limit", limitPrice=digits))
    assert request.limit_price == Decimal(digits.rstrip("0"))


@pytest.mark.parametrize("seconds", [1e-3, 1, MAX_EXPIRY])
def test_expires_in_up_to_the_maximum(parser: OrderParser, seconds: float) -> None:
    request = parser.parse(body(orderType="limit", limitPrice=1, expiresIn=seconds))
    assert request.expires_at == NOW + seconds


def test_expires_in_past_the_maximum_is_refused(parser: OrderParser) -> None:
    assert refusal(parser, orderType="limit", limitPrice=1, expiresIn=MAX_EXPIRY + 0.001) == (
        "invalid_expiry",
        "expiresIn",
    )


@pytest.mark.parametrize(
    ("at", "ok"),
    [
        (NOW, False),  # not in the future
        (NOW - 1, False),
        (NOW + 0.5, True),
        (NOW + MAX_EXPIRY, True),
        (NOW + MAX_EXPIRY + 1, False),
        (1e30, False),
    ],
)
def test_expires_at_lies_in_the_future_within_the_maximum(
    parser: OrderParser, at: float, ok: bool
) -> None:
    fields = {"orderType": "limit", "limitPrice": 1, "expiresAt": at}
    if ok:
        assert parser.parse(body(**fields)).expires_at == at
    else:
        assert refusal(parser, **fields) == ("invalid_expiry", "expiresAt")


def test_expires_at_in_iso_8601_with_any_timezone(parser: OrderParser) -> None:
    # NOW is 2027-01-15T08:00:00Z.
    for text in ("2027-01-15T09:00:00Z", "2027-01-15T10:00:00+01:00", "2027-01-15T09:00:00.0Z"):
        request = parser.parse(body(orderType="limit", limitPrice=1, expiresAt=text))
        assert request.expires_at == NOW + 3_600, text


def request_hash(parser: OrderParser, **fields: Any) -> str | None:
    return parser.parse(body(**fields), "key").request_hash


def test_a_market_order_hashes_as_before_order_types(parser: OrderParser) -> None:
    """Keys stored before order types existed still match their requests."""
    canonical = "SOL|USDC|1500000000|50|"
    assert request_hash(parser) == hashlib.sha256(canonical.encode()).hexdigest()
    assert request_hash(parser, orderType="market") == request_hash(parser)


def test_a_retried_expires_in_is_the_same_request_later(parser: OrderParser, clock: Clock) -> None:
    first = request_hash(parser, orderType="limit", limitPrice="150.50", expiresIn=60)
    clock.now += 30
    assert request_hash(parser, orderType="limit", limitPrice=150.5, expiresIn=60.0) == first
    assert request_hash(parser, orderType="limit", limitPrice=150.5, expiresIn=61) != first


def test_the_hash_covers_every_term(parser: OrderParser) -> None:
    sniper = {"tokenOut": "BONK", "orderType": "sniper"}
    hashes = {
        request_hash(parser, **sniper),
        request_hash(parser, **sniper, limitPrice=1),
        request_hash(parser, **sniper, minLiquidity=1),
        request_hash(parser, **sniper, expiresIn=60),
        request_hash(parser, **sniper, expiresAt=NOW + 60),
        request_hash(parser, tokenOut="BONK", orderType="limit", limitPrice=1),
        request_hash(parser, tokenOut="BONK"),
    }
    assert len(hashes) == 7
