"""The chaos checker's limit-order and cancel invariants can fail: each hand-made bad history
yields the anomaly it should, and the good one yields none. (The market-order invariants:
tests/unit/test_history_checker.py.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from order_engine.orders import Order, OrderEvent, OrderType, Status
from tests.chaos.history import (
    EXPIRING,
    FAR,
    FINAL_LIFT,
    NEAR,
    History,
    StoredOrder,
    check,
    stored_order,
    summary,
)

T0 = 1000.0
EXPIRES = T0 + 3600
SHORT_EXPIRY = T0 + 5
SIG_A = "5igA" * 20
SIG_B = "5igB" * 20
SIG_C = "5igC" * 20
LIMIT = "150"  # USDC per SOL: 1.5 SOL must pay at least 225 USDC


@dataclass
class Case:
    history: History
    store: dict[str, StoredOrder]
    ledger: list[dict[str, Any]]


def body(client_order_id: str, limit: str = LIMIT) -> dict[str, Any]:
    return {
        "tokenIn": "SOL",
        "tokenOut": "USDC",
        "amount": "1.5",
        "slippageBps": 50,
        "orderType": "limit",
        "limitPrice": limit,
        "expiresIn": 3600,
        "clientOrderId": client_order_id,
    }


PENDING = ("pending", {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50})


def armed(expires_at: float = EXPIRES, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("open", {"orderType": "limit", "limitPrice": LIMIT, "expiresAt": expires_at, **extra})


def fired(price: float = 150.2, slot: int = 7) -> tuple[str, dict[str, Any]]:
    return ("routing", {"attempt": 1, "trigger": {"slot": slot, "price": price}})


def make(
    order_id: str,
    client_order_id: str,
    steps: list[tuple[str, dict[str, Any]]],
    *,
    expires_at: float = EXPIRES,
    limit: str = LIMIT,
    at: Callable[[int], float] = lambda seq: T0 + seq / 8,
) -> tuple[list[OrderEvent], StoredOrder]:
    events = [
        OrderEvent(order_id, seq, Status(status), f"{status} message", at(seq), data)
        for seq, (status, data) in enumerate(steps, start=1)
    ]
    order = Order(
        order_id=order_id,
        token_in="SOL",
        token_out="USDC",
        amount=1_500_000_000,
        slippage_bps=50,
        status=events[-1].status,
        last_seq=events[-1].seq,
        attempts=1,
        created_at=T0,
        updated_at=events[-1].ts,
        client_order_id=client_order_id,
        order_type=OrderType.LIMIT,
        limit_price=limit,
        expires_at=expires_at,
    )
    return events, stored_order(order, events)


def good() -> Case:
    """near: fired, its transaction dropped, armed again, fired again, confirmed at 240
    USDC (225 needed). far: still open, watched until the end. far-cancelled: cancelled
    (200). expiring: expired, a cancel racing it lost (409 expired). near-cancelled: a
    DELETE left unanswered (the replica died), asked again: 409, already cancelled."""
    history = History()
    store: dict[str, StoredOrder] = {}
    orders = {
        "near": (NEAR, [
            PENDING, armed(), fired(),
            ("building", {"dex": "Raydium"}),
            ("submitted", {"dex": "Raydium", "txHash": SIG_A}),
            armed(rearmed={"code": "tx_dropped", "message": "dropped"}),
            fired(151.0, 9),
            ("building", {"dex": "Meteora"}),
            ("submitted", {"dex": "Meteora", "txHash": SIG_B}),
            ("confirmed", {"dex": "Meteora", "txHash": SIG_B, "amountIn": "1.5",
                           "amountOut": "240"}),
        ], EXPIRES),
        "far": (FAR, [PENDING, armed()], EXPIRES),
        "far-cancelled": (FAR, [PENDING, armed(), ("cancelled", {"previous": "open"})], EXPIRES),
        "expiring": (EXPIRING, [PENDING, armed(SHORT_EXPIRY), ("expired", {})], SHORT_EXPIRY),
        "near-cancelled": (
            NEAR, [PENDING, armed(), ("cancelled", {"previous": "open"})], EXPIRES
        ),
    }  # fmt: skip
    for n, (order_id, (kind, steps, expires_at)) in enumerate(orders.items()):
        client_order_id = f"c-{n}"

        def at(seq: int, *, expiring: bool = order_id == "expiring") -> float:
            return SHORT_EXPIRY + 0.01 if expiring and seq == 3 else T0 + seq / 8

        events, store[order_id] = make(
            order_id, client_order_id, steps, expires_at=expires_at, at=at
        )
        op = history.submit_started(0, body(client_order_id), "http://a", kind)
        history.acknowledged(op, 201, order_id)
        conn = history.opened(order_id, 0, "http://a")
        for event in events:
            history.received(conn, event.to_message())
        history.closed(conn, 1000 if events[-1].terminal else None, None)
    cancel = history.cancel_started(0, "far-cancelled", "http://a")
    history.cancel_answered(cancel, 200, "cancelled")
    cancel = history.cancel_started(0, "expiring", "http://a")
    history.cancel_answered(cancel, 409, "expired")
    cancel = history.cancel_started(0, "near-cancelled", "http://b")
    history.cancel_sent(cancel)
    history.cancel_indeterminate(cancel, "sent, then connect: refused")
    cancel = history.cancel_started(0, "near-cancelled", "http://a")
    history.cancel_answered(cancel, 409, "cancelled")
    history.lifted("SOL", "USDC", 300, FINAL_LIFT, {"priceAfter": 155.0})
    history.armed_at_end = {"a": 1, "b": 0}  # "far"
    ledger = [{"signature": SIG_B, "amountIn": "1500000000", "amountOut": "240000000"}]
    return Case(history, store, ledger)


def kinds(case: Case) -> set[str]:
    return {a.split(":", 1)[0] for a in check(case.history, case.store, case.ledger)}


def test_a_good_history_has_no_anomaly() -> None:
    case = good()
    assert check(case.history, case.store, case.ledger) == []
    report = summary(case.history, case.store, case.ledger, [])
    assert report["limit_orders"] == {
        NEAR: {"cancelled": 1, "confirmed": 1},
        FAR: {"cancelled": 1, "open": 1},
        EXPIRING: {"expired": 1},
    }
    assert report["fired"] == 2
    assert report["rearmed"] == 1
    assert report["cancels"] == {
        "200:cancelled": 1,
        "409:expired": 1,
        "409:cancelled": 1,
        "info": 1,
    }


def edit(case: Case, order_id: str, change: Callable[[list[dict[str, Any]]], list[Any]]) -> None:
    """Change an order's stored events (what its client saw stays as it was)."""
    stored = case.store[order_id]
    new = change([dict(e) for e in stored.events])
    for seq, event in enumerate(new, start=1):
        event["seq"] = seq
    case.store[order_id] = replace(
        stored, events=tuple(new), status=new[-1]["status"], last_seq=len(new)
    )


def event(order_id: str, status: str, data: dict[str, Any], ts: float = T0 + 5) -> dict[str, Any]:
    return {"orderId": order_id, "seq": 0, "status": status, "message": "", "ts": ts, "data": data}


def far_order_executed(case: Case) -> None:
    edit(
        case,
        "far",
        lambda evs: [
            *evs,
            event("far", "routing", {"attempt": 1, "trigger": {"slot": 9, "price": 151.0}}),
            event("far", "building", {}),
            event("far", "submitted", {"txHash": SIG_C}),
            event("far", "confirmed", {"txHash": SIG_C, "amountIn": "1.5", "amountOut": "230"}),
        ],
    )
    case.ledger.append({"signature": SIG_C, "amountIn": "1500000000", "amountOut": "230000000"})


def far_order_stuck_routing(case: Case) -> None:
    edit(case, "far", lambda evs: [*evs, event("far", "routing", {"attempt": 1})])


def far_order_lost_from_the_store(case: Case) -> None:
    del case.store["far"]


def far_order_event_the_client_never_saw(case: Case) -> None:
    case.history.seen = [s for s in case.history.seen if (s.order_id, s.seq) != ("far", 2)]


def near_order_never_fired(case: Case) -> None:
    edit(case, "near", lambda evs: evs[:2])


def expiring_order_never_expired(case: Case) -> None:
    edit(case, "expiring", lambda evs: evs[:2])


def expired_before_its_time(case: Case) -> None:
    edit(case, "expiring", lambda evs: [*evs[:2], {**evs[2], "ts": SHORT_EXPIRY - 0.5}])


def fired_below_its_limit(case: Case) -> None:
    edit(case, "near", lambda evs: [*evs[:2], event("near", *fired(149.9)), *evs[3:]])


def fired_without_a_trigger(case: Case) -> None:
    edit(case, "near", lambda evs: [*evs[:2], event("near", "routing", {"attempt": 1}), *evs[3:]])


def routed_before_it_was_armed(case: Case) -> None:
    edit(case, "near", lambda evs: [evs[0], *evs[2:]])


def confirmed_below_its_limit(case: Case) -> None:
    edit(case, "near", lambda evs: [*evs[:-1], {**evs[-1], "data": {
        **evs[-1]["data"], "amountOut": "224.999999"}}])  # fmt: skip
    case.ledger[0]["amountOut"] = "224999999"


def landed_below_its_limit(case: Case) -> None:
    # 225 USDC is exactly 1.5 x 150: the order reports it, the chain paid a unit less.
    edit(case, "near", lambda evs: [*evs[:-1], {**evs[-1], "data": {
        **evs[-1]["data"], "amountOut": "225"}}])  # fmt: skip
    case.ledger[0]["amountOut"] = "224999999"


def ledger_paid_other_than_reported(case: Case) -> None:
    case.ledger[0]["amountOut"] = "239000000"


def rearmed_transaction_landed_too(case: Case) -> None:
    case.ledger.append({"signature": SIG_A, "amountIn": "1500000000", "amountOut": "241000000"})


def open_order_has_a_landed_swap(case: Case) -> None:
    edit(case, "far", lambda evs: [
        *evs,
        event("far", *fired()),
        event("far", "building", {}),
        event("far", "submitted", {"txHash": SIG_C}),
        event("far", *armed(rearmed={"code": "tx_dropped", "message": "dropped"})),
    ])  # fmt: skip
    case.ledger.append({"signature": SIG_C, "amountIn": "1500000000", "amountOut": "230000000"})


def cancelled_order_has_a_landed_swap(case: Case) -> None:
    edit(case, "near-cancelled", lambda evs: [
        *evs[:2],
        event("near-cancelled", *fired()),
        event("near-cancelled", "building", {}),
        event("near-cancelled", "submitted", {"txHash": SIG_C}),
        event("near-cancelled", *armed(rearmed={"code": "tx_dropped", "message": "dropped"})),
        evs[2],
    ])  # fmt: skip
    case.ledger.append({"signature": SIG_C, "amountIn": "1500000000", "amountOut": "230000000"})


def executed_after_its_cancellation(case: Case) -> None:
    edit(case, "far-cancelled", lambda evs: [*evs, event("far-cancelled", *fired())])


def cancelled_and_confirmed(case: Case) -> None:
    edit(case, "near", lambda evs: [*evs[:2], event("near", "cancelled", {"previous": "open"}),
                                    *evs[2:]])  # fmt: skip
    case.history.cancel_answered(
        case.history.cancel_started(0, "near", "http://a"), 200, "cancelled"
    )


def acknowledged_cancel_not_stored(case: Case) -> None:
    edit(case, "far-cancelled", lambda evs: evs[:2])


def cancelled_though_every_delete_was_refused(case: Case) -> None:
    case.history.cancels[0].outcome = "fail"  # far-cancelled's 200, as if never sent


def refused_as_if_not_cancellable_while_open(case: Case) -> None:
    cancel = case.history.cancel_started(0, "far", "http://a")
    case.history.cancel_answered(cancel, 409, "open")


def refused_as_expired_yet_cancelled(case: Case) -> None:
    edit(case, "expiring", lambda evs: [*evs[:2], event("expiring", "cancelled",
                                                        {"previous": "open"})])  # fmt: skip
    case.history.cancels[1].answer_status = "expired"  # and it went on, cancelled


def cancel_answered_404(case: Case) -> None:
    cancel = case.history.cancel_started(0, "far", "http://a")
    case.history.cancel_answered(cancel, 404, None, "not_found")


def cancel_answer_not_cancelled(case: Case) -> None:
    case.history.cancels[0].answer_status = "open"


def cancelled_from_the_wrong_status(case: Case) -> None:
    edit(case, "far-cancelled", lambda evs: [*evs[:2], {**evs[2], "data": {"previous": "pending"}}])


def stored_with_another_limit(case: Case) -> None:
    case.store["far"] = replace(case.store["far"], limit_price="140")


def armed_with_other_terms(case: Case) -> None:
    edit(case, "far", lambda evs: [evs[0], {**evs[1], "data": {**evs[1]["data"],
                                                               "limitPrice": "15"}}])  # fmt: skip


def stored_as_market_order(case: Case) -> None:
    case.store["far"] = replace(case.store["far"], order_type="market")


def armed_count_differs(case: Case) -> None:
    case.history.armed_at_end = {"a": 0, "b": 0}


def armed_twice(case: Case) -> None:
    case.history.armed_at_end = {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (far_order_executed, "far-order-lost"),
        (far_order_stuck_routing, "far-order-lost"),
        (far_order_stuck_routing, "not-terminal"),
        (far_order_lost_from_the_store, "acknowledged-lost"),
        (far_order_lost_from_the_store, "armed-count-mismatch"),
        (far_order_event_the_client_never_saw, "client-missed-events"),
        (near_order_never_fired, "not-terminal"),
        (expiring_order_never_expired, "expiring-order-lost"),
        (expired_before_its_time, "expired-early"),
        (fired_below_its_limit, "fired-below-limit"),
        (fired_without_a_trigger, "fired-without-trigger"),
        (routed_before_it_was_armed, "limit-routed-unarmed"),
        (confirmed_below_its_limit, "filled-below-limit"),
        (confirmed_below_its_limit, "landed-below-limit"),
        (landed_below_its_limit, "landed-below-limit"),
        (ledger_paid_other_than_reported, "ledger-amount-out-mismatch"),
        (rearmed_transaction_landed_too, "landed-twice"),
        (open_order_has_a_landed_swap, "open-but-landed"),
        (cancelled_order_has_a_landed_swap, "cancelled-but-landed"),
        (executed_after_its_cancellation, "cancelled-then-executed"),
        (cancelled_and_confirmed, "cancelled-then-executed"),
        (cancelled_and_confirmed, "cancel-acknowledged-lost"),
        (acknowledged_cancel_not_stored, "cancel-acknowledged-lost"),
        (cancelled_though_every_delete_was_refused, "unrequested-cancel"),
        (refused_as_if_not_cancellable_while_open, "cancel-refused-wrongly"),
        (refused_as_expired_yet_cancelled, "cancel-refused-wrongly"),
        (cancel_answered_404, "cancel-unknown-order"),
        (cancel_answer_not_cancelled, "cancel-answer-wrong"),
        (cancelled_from_the_wrong_status, "cancel-data-mismatch"),
        (stored_with_another_limit, "order-type-mismatch"),
        (armed_with_other_terms, "open-data-mismatch"),
        (stored_as_market_order, "order-type-mismatch"),
        (stored_as_market_order, "market-order-armed"),
        (armed_count_differs, "armed-count-mismatch"),
        (armed_twice, "armed-count-mismatch"),
    ],
)
def test_each_bad_history_is_caught(mutate: Callable[[Case], None], expected: str) -> None:
    case = good()
    mutate(case)
    assert expected in kinds(case)


def test_a_fill_exactly_at_the_limit_is_legal_to_the_last_digit() -> None:
    """0.1 x 3 is 0.3 exactly (in floats it is above 0.3): a fill of exactly 0.3 meets the
    limit, one base unit less does not."""
    case = good()
    limit = "3"
    events, stored = make(
        "tiny",
        "c-tiny",
        [
            ("pending", {**PENDING[1], "amount": "0.1"}),
            ("open", {"orderType": "limit", "limitPrice": limit, "expiresAt": EXPIRES}),
            fired(3.0),
            ("building", {}),
            ("submitted", {"txHash": SIG_C}),
            ("confirmed", {"txHash": SIG_C, "amountIn": "0.1", "amountOut": "0.3"}),
        ],
        limit=limit,
    )
    case.store["tiny"] = replace(stored, amount=100_000_000)  # 0.1 SOL
    op = case.history.submit_started(0, {**body("c-tiny", limit), "amount": "0.1"}, "http://a")
    case.history.acknowledged(op, 201, "tiny")
    conn = case.history.opened("tiny", 0, "http://a")
    for e in events:
        case.history.received(conn, e.to_message())
    case.ledger.append({"signature": SIG_C, "amountIn": "100000000", "amountOut": "300000"})
    assert check(case.history, case.store, case.ledger) == []
    case.ledger[-1]["amountOut"] = "299999"
    assert kinds(case) >= {"landed-below-limit", "ledger-amount-out-mismatch"}
