"""The chaos checker can fail: each hand-made bad history yields the anomaly it should, and
the good one yields none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from order_engine.orders import Order, OrderEvent, Status
from tests.chaos.history import (
    History,
    StoredOrder,
    check,
    in_flight_at_kills,
    stored_order,
    summary,
)

SIG_0 = "5ig0" * 20
SIG_1 = "5ig1" * 20
BODY = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}


@dataclass
class Case:
    history: History
    store: dict[str, StoredOrder]
    ledger: list[dict[str, Any]]


def events(order_id: str, *steps: tuple[str, dict[str, Any]]) -> list[OrderEvent]:
    return [
        OrderEvent(order_id, seq, Status(status), f"{status} message", 1000.0 + seq / 8, data)
        for seq, (status, data) in enumerate(steps, start=1)
    ]


def order(order_id: str, client_order_id: str | None, stored: list[OrderEvent]) -> Order:
    return Order(
        order_id=order_id,
        token_in="SOL",
        token_out="USDC",
        amount=1_500_000_000,
        slippage_bps=50,
        status=stored[-1].status,
        last_seq=stored[-1].seq,
        attempts=1,
        created_at=1000.0,
        updated_at=stored[-1].ts,
        client_order_id=client_order_id,
    )


PENDING = ("pending", {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50})


def good() -> Case:
    """o1: acknowledged, watched over two connections (the first dropped after seq 2), a
    first transaction dropped by the chain, confirmed by the second. A refused submit, then
    an indeterminate one whose order (o2) was stored and failed, watched by nobody."""
    o1 = events(
        "o1",
        PENDING,
        ("routing", {"attempt": 1}),
        ("building", {"dex": "Raydium"}),
        ("submitted", {"dex": "Raydium", "txHash": SIG_0}),
        ("routing", {"attempt": 2, "retryReason": {"code": "tx_dropped"}}),
        ("building", {"dex": "Meteora"}),
        ("submitted", {"dex": "Meteora", "txHash": SIG_1}),
        ("confirmed", {"dex": "Meteora", "txHash": SIG_1, "amountIn": "1.5"}),
    )
    o2 = events("o2", PENDING, ("routing", {"attempt": 1}), ("failed", {"error": {}}))
    history = History()
    acked = history.submit_started(0, {**BODY, "clientOrderId": "c-0"}, "http://a")
    history.acknowledged(acked, 201, "o1")
    refused = history.submit_started(1, {**BODY, "clientOrderId": "c-1"}, "http://a")
    history.refused(refused, 503, "queue_full")
    lost = history.submit_started(1, {**BODY, "clientOrderId": "c-2"}, "http://a")
    history.indeterminate(lost, "ServerDisconnectedError()")
    first = history.opened("o1", 0, "http://a")
    for event in o1[:2]:
        history.received(first, event.to_message())
    history.closed(first, 1006, None)
    history.killed("a", "routing")
    second = history.opened("o1", 2, "http://a")
    for event in o1[2:]:
        history.received(second, event.to_message())
    history.closed(second, 1000, None)
    store = {
        "o1": stored_order(order("o1", "c-0", o1), o1),
        "o2": stored_order(order("o2", "c-2", o2), o2),
    }
    ledger = [{"signature": SIG_1, "amountIn": "1500000000", "amountOut": "224000000"}]
    return Case(history, store, ledger)


def kinds(case: Case) -> set[str]:
    return {a.split(":", 1)[0] for a in check(case.history, case.store, case.ledger)}


def test_a_good_history_has_no_anomaly() -> None:
    case = good()
    assert check(case.history, case.store, case.ledger) == []
    report = summary(case.history, case.store, case.ledger, [])
    assert report["acknowledged"] == report["refused"] == report["indeterminate"] == 1
    assert report["indeterminate_stored"] == 1
    assert report["events_checked"] == 8
    assert report["ws_resumed"] == 1
    assert report["kills"] == 1


def test_kills_are_placed_on_the_stage_each_order_stood_at() -> None:
    case = good()
    case.history.kills[0].at = 1000.0 + 2.5 / 8  # o1 after seq 2 (routing)
    assert in_flight_at_kills(case.history, case.store) == {"routing": 2}  # o1 and o2


def with_store_events(case: Case, order_id: str, edit: Callable[[list[Any]], list[Any]]) -> None:
    stored = case.store[order_id]
    new = edit([dict(e) for e in stored.events])
    status = new[-1]["status"] if new else stored.status
    case.store[order_id] = replace(stored, events=tuple(new), status=status, last_seq=len(new))


def gap_in_seq(case: Case) -> None:
    with_store_events(case, "o2", lambda evs: [evs[0], {**evs[2], "seq": 3}])
    case.store["o2"] = replace(case.store["o2"], last_seq=3)


def illegal_transition(case: Case) -> None:
    # pending -> submitted: skips routing and building.
    with_store_events(case, "o2", lambda evs: [evs[0], {**evs[1], "status": "submitted"}, evs[2]])


def terminal_twice(case: Case) -> None:
    with_store_events(case, "o2", lambda evs: [*evs, {**evs[2], "seq": 4}])


def duplicate_ledger_signature(case: Case) -> None:
    case.ledger.append(dict(case.ledger[0]))


def order_landed_twice(case: Case) -> None:
    case.ledger.insert(0, {"signature": SIG_0, "amountIn": "1500000000"})


def swap_of_no_order(case: Case) -> None:
    case.ledger.append({"signature": "nobody", "amountIn": "1"})


def confirmed_but_not_landed(case: Case) -> None:
    case.ledger.clear()


def failed_but_landed(case: Case) -> None:
    with_store_events(
        case,
        "o2",
        lambda evs: [
            evs[0],
            evs[1],
            {**evs[1], "seq": 3, "status": "building"},
            {**evs[1], "seq": 4, "status": "submitted", "data": {"txHash": "o2sig"}},
            {**evs[2], "seq": 5},
        ],
    )
    case.ledger.append({"signature": "o2sig", "amountIn": "1500000000"})


def ledger_amount_differs(case: Case) -> None:
    case.ledger[0]["amountIn"] = "1400000000"


def client_seen_event_differs(case: Case) -> None:
    case.history.seen[3].message["data"] = {"dex": "Raydium", "txHash": "forged"}


def client_seen_ts_differs(case: Case) -> None:
    case.history.seen[1].message["ts"] += 1e-6


def client_saw_an_event_the_store_lacks(case: Case) -> None:
    extra = {**case.history.seen[-1].message, "seq": 9, "status": "failed"}
    case.history.received(case.history.connections[-1], extra)


def resumed_stream_skips_a_seq(case: Case) -> None:
    del case.history.seen[2]  # connection 1 (after 2) starts at seq 4


def unacknowledged_but_stored(case: Case) -> None:
    stray = case.store["o2"]
    case.store["o3"] = replace(stray, order_id="o3", client_order_id="never-sent")


def refused_but_stored(case: Case) -> None:
    stray = case.store["o2"]
    case.store["o3"] = replace(stray, order_id="o3", client_order_id="c-1")


def stored_twice(case: Case) -> None:
    stray = case.store["o2"]
    case.store["o3"] = replace(stray, order_id="o3")


def stored_with_other_content(case: Case) -> None:
    with_store_events(
        case, "o2", lambda evs: [{**evs[0], "data": {**evs[0]["data"], "amount": "15"}}, *evs[1:]]
    )


def acknowledged_but_lost(case: Case) -> None:
    del case.store["o1"]
    case.history.seen.clear()


def acknowledged_never_terminal(case: Case) -> None:
    with_store_events(case, "o1", lambda evs: evs[:-1])
    case.history.seen.pop()


def client_never_saw_the_end(case: Case) -> None:
    case.history.seen.pop()


def acknowledged_order_denied(case: Case) -> None:
    case.history.connections[0].close_code = 4404


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (gap_in_seq, "seq-gap"),
        (illegal_transition, "illegal-transition"),
        (terminal_twice, "terminal-twice"),
        (duplicate_ledger_signature, "ledger-duplicate-signature"),
        (order_landed_twice, "landed-twice"),
        (swap_of_no_order, "orphan-swap"),
        (confirmed_but_not_landed, "confirmed-not-landed"),
        (failed_but_landed, "failed-but-landed"),
        (ledger_amount_differs, "ledger-amount-mismatch"),
        (client_seen_event_differs, "event-differs"),
        (client_seen_ts_differs, "event-differs"),
        (client_saw_an_event_the_store_lacks, "phantom-event"),
        (resumed_stream_skips_a_seq, "stream-gap"),
        (unacknowledged_but_stored, "unsubmitted-order"),
        (refused_but_stored, "refused-but-stored"),
        (stored_twice, "duplicate-order"),
        (stored_with_other_content, "content-mismatch"),
        (acknowledged_but_lost, "acknowledged-lost"),
        (acknowledged_never_terminal, "not-terminal"),
        (acknowledged_never_terminal, "client-missed-terminal"),
        (client_never_saw_the_end, "client-missed-terminal"),
        (acknowledged_order_denied, "unknown-order"),
    ],
)
def test_each_bad_history_is_caught(mutate: Callable[[Case], None], expected: str) -> None:
    case = good()
    mutate(case)
    assert expected in kinds(case)


def test_an_anomaly_names_the_order_and_what_differs() -> None:
    case = good()
    client_seen_event_differs(case)
    [anomaly] = check(case.history, case.store, case.ledger)
    assert "o1" in anomaly
    assert "seq 4" in anomaly
    assert "forged" in anomaly
