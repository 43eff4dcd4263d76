"""Event payloads: one type per status, its JSON form and its schema agree."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from order_engine.orders import Status
from order_engine.payloads import (
    PAYLOADS,
    BuildingData,
    ErrorInfo,
    FailedData,
    Leg,
    Payload,
    QuoteInfo,
    RoutingData,
    SubmittedData,
    payload_of,
    schemas,
)

QUOTE = QuoteInfo(
    dex="Raydium",
    amount_out="150.5",
    price=100.3,
    fee_bps=25,
    price_impact_bps=1,
    source="stream",
    slot=812,
)
LEGS = [
    Leg(dex="Raydium", share=0.6, amount_in="0.9", amount_out="90.1"),
    Leg(dex="Meteora", share=0.4, amount_in="0.6", amount_out="60.4"),
]
EXAMPLES: list[tuple[Status, Payload]] = [
    (Status.ROUTING, RoutingData(attempt=1)),
    (Status.ROUTING, RoutingData(attempt=2, retry_reason=ErrorInfo(code="c", message="m"))),
    (
        Status.BUILDING,
        BuildingData(
            dex="Raydium",
            quotes=[QUOTE],
            expected_amount_out="150.5",
            min_amount_out="149.7",
            wrap_sol=True,
            unwrap_sol=False,
            legs=LEGS,
        ),
    ),
    (Status.SUBMITTED, SubmittedData(dex="Meteora", tx_hash="5x", last_valid_slot=151)),
    (Status.FAILED, FailedData(error=ErrorInfo(code="no_route", message="none"), attempts=1)),
]


def _validator() -> Any:
    refs, components = schemas("#/$defs/{name}")
    return lambda status, data: jsonschema.validate(data, {**refs[status], "$defs": components})


@pytest.mark.parametrize(("status", "payload"), EXAMPLES)
def test_the_json_form_fits_the_schema_and_reads_back(status: Status, payload: Payload) -> None:
    data = payload.to_json()
    _validator()(status, data)
    assert payload_of(status, data) == payload


def test_the_json_form_is_camel_case_and_leaves_unset_options_out() -> None:
    assert RoutingData(attempt=1).to_json() == {"attempt": 1}
    assert SubmittedData(dex="Raydium", tx_hash="5x", last_valid_slot=9).to_json() == {
        "dex": "Raydium",
        "txHash": "5x",
        "lastValidSlot": 9,
    }


def test_a_payload_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="routing event data"):
        payload_of(Status.ROUTING, {"attempt": 1, "surprise": True})


def test_the_schema_refuses_what_the_wire_never_carries() -> None:
    validate = _validator()
    with pytest.raises(jsonschema.ValidationError):
        validate(Status.BUILDING, {**EXAMPLES[2][1].to_json(), "dex": "Orca"})
    with pytest.raises(jsonschema.ValidationError):
        validate(Status.ROUTING, {"attempt": 0})


def test_every_status_has_a_payload() -> None:
    assert set(PAYLOADS) == set(Status)
