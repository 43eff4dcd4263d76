"""What each status's event carries: one typed payload per status.

A payload's JSON form (`to_json`) is what the store keeps and what clients receive as an
event's `data`; its JSON Schema (`schemas`) is what the OpenAPI document publishes, so the
contract is written once. Field names are snake_case here and camelCase on the wire; an
optional field left at its default is left out of the message.

Part of the domain: imports nothing of the project but `orders`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from order_engine.orders import Status

# Amounts on the wire are exact decimal strings in token units (never floats for money).
DecimalStr = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["1.5"])]
# A venue's name; the wire has called it `dex` since the first client.
Dex = Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["Raydium", "Meteora"]})]


class Payload(
    msgspec.Struct,
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
    kw_only=True,
):
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


class ErrorInfo(Payload):
    code: str
    message: str


class PendingData(Payload):
    token_in: str
    token_out: str
    amount: DecimalStr
    slippage_bps: int


# Where routing takes its prices: the pool states streamed from the chain, or (while that
# stream is down or behind) each venue's own quote call.
QuoteSource = Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["stream", "rpc"]})]


OrderTypeName = Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["limit", "sniper"]})]


class OpenData(Payload):
    """Armed: the order fires when its trigger is met, unless it expires first."""

    order_type: OrderTypeName
    expires_at: Annotated[float, msgspec.Meta(description="epoch seconds")]
    limit_price: DecimalStr | None = None  # least tokenOut per one tokenIn
    mint: str | None = None  # a sniper's token, by mint address
    min_liquidity: DecimalStr | None = None  # a sniper's least pool depth, in tokenIn
    rearmed: ErrorInfo | None = None  # why a fired order was armed again


class Trigger(Payload):
    slot: int  # of the pool states that met the trigger
    price: Annotated[float, msgspec.Meta(description="tokenOut per tokenIn for the order")]


class RoutingData(Payload):
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    retry_reason: ErrorInfo | None = None  # why the previous attempt failed
    quote_source: QuoteSource | None = None
    trigger: Trigger | None = None  # what fired an armed order


class QuoteInfo(Payload):
    dex: Dex
    amount_out: DecimalStr
    price: float
    fee_bps: Annotated[float, msgspec.Meta(ge=0)]
    price_impact_bps: float
    source: QuoteSource
    slot: int | None = None  # of the pool states quoted (streamed quotes)


class Leg(Payload):
    dex: Dex
    share: Annotated[float, msgspec.Meta(ge=0, le=1)]
    amount_in: DecimalStr
    amount_out: DecimalStr


class Skipped(Payload):
    dex: Dex
    code: str


class BuildingData(Payload):
    dex: Dex  # the largest leg's venue
    quotes: Annotated[list[QuoteInfo], msgspec.Meta(min_length=1)]
    expected_amount_out: DecimalStr
    min_amount_out: DecimalStr
    wrap_sol: Annotated[bool, msgspec.Meta(description="SOL in: wrapped to wSOL first")]
    unwrap_sol: Annotated[bool, msgspec.Meta(description="SOL out: unwrapped at the end")]
    reason: str | None = None
    skipped: list[Skipped] | None = None  # venues that could not quote
    legs: Annotated[list[Leg], msgspec.Meta(min_length=2)] | None = None  # a split route


class SubmittedData(Payload):
    dex: Dex
    tx_hash: str
    last_valid_slot: (
        Annotated[int, msgspec.Meta(description="the transaction's blockhash expires after it")]
        | None
    ) = None


class ConfirmedData(Payload):
    dex: Dex
    tx_hash: str
    executed_price: float
    amount_in: DecimalStr
    amount_out: DecimalStr
    legs: Annotated[list[Leg], msgspec.Meta(min_length=2)] | None = None
    slot: int | None = None  # the slot it landed in


class FailedData(Payload):
    error: ErrorInfo
    attempts: int


class CancelledData(Payload):
    previous: Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["pending", "open"]})]


class ExpiredData(Payload):
    expires_at: Annotated[float, msgspec.Meta(description="epoch seconds")]


PAYLOADS: dict[Status, type[Payload]] = {
    Status.PENDING: PendingData,
    Status.ROUTING: RoutingData,
    Status.BUILDING: BuildingData,
    Status.SUBMITTED: SubmittedData,
    Status.CONFIRMED: ConfirmedData,
    Status.FAILED: FailedData,
    Status.OPEN: OpenData,
    Status.CANCELLED: CancelledData,
    Status.EXPIRED: ExpiredData,
}


def payload_of(status: Status, data: dict[str, Any]) -> Payload:
    """An event's data read back as its status's payload (ValueError if it does not fit)."""
    try:
        return msgspec.convert(data, PAYLOADS[status])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{status.value} event data: {exc}") from None


def schemas(ref_template: str) -> tuple[dict[Status, dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of every status's payload: a reference per status, and the definitions
    they refer to (named after the payload classes)."""
    statuses = list(PAYLOADS)
    refs, components = msgspec.json.schema_components(
        [PAYLOADS[s] for s in statuses], ref_template=ref_template
    )
    return dict(zip(statuses, refs, strict=True)), components
