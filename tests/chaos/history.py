"""Jepsen-style history of a chaos run, and the checker that judges it.

The recorder (`History`) is what the chaos clients write to: every submit attempt (body,
target, time) and its outcome, every WebSocket connection (with the `after` it resumed from
and how it ended) and every event received on it, and every kill.

The checker (`check`) is pure: it takes the history, the store's contents (`StoredOrder`,
read after the run) and the chain's ledger (the JSON entries of `GET /admin/ledger`) and
returns the anomalies it finds, one string each, prefixed by the invariant's name:

- `not-terminal`, `terminal-not-last`, `terminal-twice`, `status-mismatch`: every stored order
  ends in exactly one terminal event, its last, and the order row agrees with it;
- `seq-gap`, `illegal-transition`: each order's seqs are 1..n and its statuses follow
  `order_engine.orders.TRANSITIONS` (judged by `check_transition`);
- `unsubmitted-order`, `duplicate-order`, `refused-but-stored`, `content-mismatch`,
  `ack-mismatch`, `acknowledged-lost`: the store holds exactly what clients submitted (tied
  by a unique `clientOrderId` per attempt); an acknowledged order is stored, an explicitly
  refused one is not; an indeterminate one (no answer) may be either;
- `client-missed-terminal`, `client-missed-events`, `stream-gap`, `phantom-event`,
  `event-differs`, `unknown-order`: the client that submitted an acknowledged order saw it
  to its terminal event (across reconnects), each connection resumed right after `after`
  without a gap or repeat, and every event it saw is in the store with the same content;
- `ledger-duplicate-signature`, `landed-twice`, `orphan-swap`, `shared-signature`,
  `confirmed-not-landed`, `<status>-but-landed` (failed, cancelled, expired, open...),
  `ledger-amount-mismatch`, `ledger-amount-out-mismatch`: no swap landed twice (no order
  fired twice), none landed for no order, and the ledger agrees with each order's final
  state: only a confirmed order has a swap, the one it confirmed, of what it reported.

Limit orders (`orderType: limit` in the body; the client's intent, `Submit.kind`, says
whether it was placed near the market, far from it, or to expire soon):

- `order-type-mismatch`, `open-data-mismatch`: stored as submitted (type, exact limit
  price), and armed with its terms;
- `market-order-armed`, `limit-routed-unarmed`, `fired-without-trigger`, `fired-below-limit`,
  `filled-below-limit`, `landed-below-limit`: a limit order routes only after it was armed,
  each fire carries its trigger, at a price meeting the limit, and a confirmed one was paid
  at least `amount × limitPrice` (exactly, by its confirmed event and by the ledger);
- `expired-early`, `far-order-lost`, `expiring-order-lost`: an order expires no sooner than
  its `expiresAt`; a far order (the market never reaches it) not cancelled is still open at
  the end, one about to expire has expired (or was cancelled);
- `armed-count-mismatch`: at the end the replicas hold armed exactly the orders the store
  holds open (each once), so an open order survived the kills armed, not only stored.

Cancels (`DELETE /api/order/{id}`, retried across kills by their client; one whose answer
never came may or may not have happened):

- `cancel-acknowledged-lost`, `cancel-answer-wrong`, `cancel-unknown-order`,
  `cancel-refused-wrongly`, `unrequested-cancel`, `cancelled-then-executed`,
  `cancel-data-mismatch`: a 200 means the order ends cancelled; a 409 names a status the
  order really reached, never a cancellable one, and a terminal one it kept; a cancelled
  order was asked to be (200 or no answer), nothing follows its cancellation (no routing,
  no swap), and its event names the status it was cancelled from.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from order_engine.orders import (
    CANCELLABLE,
    TERMINAL,
    InvalidTransition,
    Order,
    OrderEvent,
    OrderType,
    Status,
    check_transition,
)
from order_engine.venues.tokens import REGISTRY, UnknownToken

TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
CANCELLABLE_STATUSES = frozenset(s.value for s in CANCELLABLE)

# What the client meant an order to do (`Submit.kind`); the body says only what it sent.
MARKET = "market"  # executes at once
NEAR = "near"  # a limit a little above the market: drift or a price lift fires it
FAR = "far"  # a limit far above the market: it never fires, it must stay open
EXPIRING = "expiring"  # a far limit with a short expiry: it must expire
FINAL_LIFT = "final"  # `Lift.why` of the lift at the end, past every near limit

# Outcomes of a submit attempt, as Jepsen names them.
OK = "ok"  # 201 with an orderId: acknowledged
FAIL = "fail"  # a definite refusal (an HTTP error answer, or the connection never opened)
INFO = "info"  # no answer (timeout, connection dropped mid-request): indeterminate


# -- the recorder --------------------------------------------------------------------------


@dataclass
class Submit:
    op: int
    client: int
    body: dict[str, Any]
    target: str
    started: float
    outcome: str = INFO  # until an answer arrives, nothing is known
    order_id: str | None = None
    http_status: int | None = None
    error: str | None = None
    finished: float | None = None
    kind: str = MARKET

    @property
    def client_order_id(self) -> str | None:
        value = self.body.get("clientOrderId")
        return value if isinstance(value, str) else None


@dataclass
class Connection:
    conn: int
    order_id: str
    after: int
    target: str
    opened: float
    close_code: int | None = None
    error: str | None = None
    closed: float | None = None
    stalled: bool = False  # closed by the client: no event for too long


@dataclass
class Seen:
    """One WebSocket message carrying an order event, as received."""

    conn: int
    order_id: str  # the order the connection watches
    received: float
    message: dict[str, Any]

    @property
    def seq(self) -> Any:
        return self.message.get("seq")

    @property
    def status(self) -> Any:
        return self.message.get("status")


@dataclass
class Kill:
    at: float
    target: str
    trigger: str = ""  # what the nemesis waited for before killing


@dataclass
class Cancel:
    """One `DELETE /api/order/{id}` attempt and its outcome."""

    op: int
    client: int
    order_id: str
    target: str
    started: float
    outcome: str = INFO
    http_status: int | None = None
    # The order's status as the answer gave it: the order's (200) or error.status (409).
    answer_status: str | None = None
    error: str | None = None
    finished: float | None = None
    # The request was on the wire at least once. The HTTP client sends a DELETE (an
    # idempotent method) again on a new connection when the first one drops: a failure to
    # connect then proves nothing about the first.
    sent: bool = False


@dataclass
class Lift:
    """A fair price moved on the chain (`POST /admin/move`)."""

    at: float
    token_a: str
    token_b: str
    bps: float
    why: str  # the schedule's, the nemesis's, the final one
    answer: dict[str, Any] | None = None  # the chain's `move`; None: it refused (error)
    error: str | None = None


@dataclass
class History:
    submits: list[Submit] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    # Non-event messages a server sent on a WebSocket (e.g. a 503 refusal before closing).
    notices: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)
    lifts: list[Lift] = field(default_factory=list)
    # Replica -> limit orders it held armed (`GET /api/stats` openOrders) once all was
    # quiet at the end; None: not asked. How long it took them to add up (replicas arm
    # what they resume or take over after they listen).
    armed_at_end: dict[str, int] | None = None
    armed_settled_s: float | None = None

    # submits

    def submit_started(
        self, client: int, body: dict[str, Any], target: str, kind: str = MARKET
    ) -> Submit:
        op = Submit(len(self.submits), client, body, target, time.time(), kind=kind)
        self.submits.append(op)
        return op

    def acknowledged(self, op: Submit, http_status: int, order_id: str) -> None:
        op.outcome, op.http_status, op.order_id, op.finished = (
            OK,
            http_status,
            order_id,
            time.time(),
        )

    def refused(self, op: Submit, http_status: int | None, error: str) -> None:
        op.outcome, op.http_status, op.error, op.finished = FAIL, http_status, error, time.time()

    def indeterminate(self, op: Submit, error: str) -> None:
        op.outcome, op.error, op.finished = INFO, error, time.time()

    # WebSockets

    def opened(self, order_id: str, after: int, target: str) -> Connection:
        conn = Connection(len(self.connections), order_id, after, target, time.time())
        self.connections.append(conn)
        return conn

    def received(self, conn: Connection, message: dict[str, Any]) -> None:
        if "seq" in message:
            self.seen.append(Seen(conn.conn, conn.order_id, time.time(), message))
        else:
            self.notices.append((conn.conn, message))

    def closed(
        self, conn: Connection, close_code: int | None, error: str | None, *, stalled: bool = False
    ) -> None:
        conn.close_code, conn.error, conn.closed = close_code, error, time.time()
        conn.stalled = stalled

    # cancels

    def cancel_started(self, client: int, order_id: str, target: str) -> Cancel:
        op = Cancel(len(self.cancels), client, order_id, target, time.time())
        self.cancels.append(op)
        return op

    def cancel_answered(
        self, op: Cancel, http_status: int, answer_status: str | None, error: str | None = None
    ) -> None:
        """A definite answer: 200 (cancelled), 409 (not cancellable), 404 (no such order)."""
        op.outcome = OK if http_status == 200 else FAIL
        op.http_status, op.answer_status, op.error = http_status, answer_status, error
        op.finished = time.time()

    def cancel_refused(self, op: Cancel, http_status: int | None, error: str) -> None:
        """Not done: the request was never sent, or refused before it was looked at (429)."""
        op.outcome, op.http_status, op.error, op.finished = FAIL, http_status, error, time.time()

    def cancel_sent(self, op: Cancel) -> None:
        op.sent = True

    def cancel_indeterminate(self, op: Cancel, error: str, http_status: int | None = None) -> None:
        """No answer, or an error answer (5xx) that leaves open whether it was done."""
        op.outcome, op.http_status, op.error, op.finished = INFO, http_status, error, time.time()

    # the market and faults

    def lifted(
        self,
        token_a: str,
        token_b: str,
        bps: float,
        why: str,
        answer: dict[str, Any] | None,
        error: str | None = None,
    ) -> Lift:
        lift = Lift(time.time(), token_a, token_b, bps, why, answer, error)
        self.lifts.append(lift)
        return lift

    def killed(self, target: str, trigger: str = "") -> None:
        self.kills.append(Kill(time.time(), target, trigger))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, default=str))


# -- what the store and the chain hold -----------------------------------------------------


@dataclass(frozen=True)
class StoredOrder:
    order_id: str
    client_order_id: str | None
    status: str
    last_seq: int
    amount: int  # base units of tokenIn
    events: tuple[dict[str, Any], ...]  # OrderEvent.to_message(), in seq order
    order_type: str = OrderType.MARKET.value
    limit_price: str | None = None  # exact decimal, tokenOut per tokenIn
    expires_at: float | None = None
    token_in: str = ""
    token_out: str = ""


def stored_order(order: Order, events: Sequence[OrderEvent]) -> StoredOrder:
    return StoredOrder(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        status=order.status.value,
        last_seq=order.last_seq,
        amount=order.amount,
        events=tuple(_as_json(e.to_message()) for e in events),
        order_type=order.order_type.value,
        limit_price=order.limit_price,
        expires_at=order.expires_at,
        token_in=order.token_in,
        token_out=order.token_out,
    )


def _as_json(value: Any) -> Any:
    """The value as a client decodes it from the wire."""
    return json.loads(json.dumps(value))


# -- the checker ---------------------------------------------------------------------------


def check(
    history: History, store: Mapping[str, StoredOrder], ledger: Sequence[Mapping[str, Any]]
) -> list[str]:
    may_stay_open = far_orders(history, store)
    return [
        *check_store(store, may_stay_open),
        *check_submits(history, store),
        *check_clients(history, store, may_stay_open),
        *check_ledger(store, ledger),
        *check_limits(history, store, ledger),
        *check_cancels(history, store),
    ]


def far_orders(history: History, store: Mapping[str, StoredOrder]) -> frozenset[str]:
    """The stored orders their client placed far from the market: they may end the run
    open (still armed), and only those."""
    ops = _submits_by_client_order_id(history)
    return frozenset(
        order_id
        for order_id, order in store.items()
        if (op := ops.get(order.client_order_id or "")) is not None and op.kind == FAR
    )


def _submits_by_client_order_id(history: History) -> dict[str, Submit]:
    ops: dict[str, Submit] = {}
    for op in history.submits:
        key = op.client_order_id
        if key is not None:
            ops.setdefault(key, op)
    return ops


def check_store(
    store: Mapping[str, StoredOrder], may_stay_open: frozenset[str] = frozenset()
) -> list[str]:
    """`may_stay_open`: orders that may end the run open (armed far from the market)."""
    anomalies: list[str] = []
    for order_id, order in store.items():
        seqs = [e.get("seq") for e in order.events]
        if seqs != list(range(1, len(seqs) + 1)) or order.last_seq != len(seqs):
            anomalies.append(
                f"seq-gap: order {order_id}: stored seqs {seqs}, last_seq {order.last_seq}"
            )
        previous: Status | None = None
        for event in order.events:
            try:
                status = Status(event.get("status"))
                check_transition(previous, status)
            except (ValueError, InvalidTransition) as exc:
                anomalies.append(
                    f"illegal-transition: order {order_id} seq {event.get('seq')}: {exc}"
                    f" (statuses {_statuses(order.events)})"
                )
                break
            previous = status
        terminals = [e for e in order.events if e.get("status") in TERMINAL_STATUSES]
        if not terminals and order.status == Status.OPEN.value and order_id in may_stay_open:
            pass  # still armed, as it should be
        elif not terminals:
            anomalies.append(
                f"not-terminal: order {order_id} stopped at {order.status}"
                f" (statuses {_statuses(order.events)})"
            )
        elif len(terminals) > 1:
            anomalies.append(
                f"terminal-twice: order {order_id}: statuses {_statuses(order.events)}"
            )
        elif terminals[0] is not order.events[-1]:
            anomalies.append(
                f"terminal-not-last: order {order_id}: statuses {_statuses(order.events)}"
            )
        if order.events and order.events[-1].get("status") != order.status:
            anomalies.append(
                f"status-mismatch: order {order_id}: row says {order.status}, last event"
                f" {order.events[-1].get('status')}"
            )
    return anomalies


def check_submits(history: History, store: Mapping[str, StoredOrder]) -> list[str]:
    anomalies: list[str] = []
    attempts: dict[str, Submit] = {}
    for op in history.submits:
        key = op.client_order_id
        if key is None or key in attempts:
            anomalies.append(f"history: submit {op.op} has no unique clientOrderId ({key!r})")
            continue
        attempts[key] = op
    by_client_id: dict[str, list[StoredOrder]] = defaultdict(list)
    for order in store.values():
        op = attempts.get(order.client_order_id or "")
        if op is None:
            anomalies.append(
                f"unsubmitted-order: order {order.order_id} (clientOrderId"
                f" {order.client_order_id!r}) matches no submit"
            )
            continue
        by_client_id[order.client_order_id or ""].append(order)
        if op.outcome == FAIL:
            anomalies.append(
                f"refused-but-stored: submit {op.op} ({op.client_order_id}) was refused"
                f" ({op.http_status} {op.error}) yet order {order.order_id} is stored"
            )
        elif op.outcome == OK and op.order_id != order.order_id:
            anomalies.append(
                f"ack-mismatch: submit {op.op} ({op.client_order_id}) was acknowledged as"
                f" {op.order_id}, the store has {order.order_id}"
            )
        mismatch = _content_mismatch(op.body, order)
        if mismatch:
            anomalies.append(
                f"content-mismatch: order {order.order_id} ({op.client_order_id}): {mismatch}"
            )
    for client_order_id, orders in by_client_id.items():
        if len(orders) > 1:
            ids = sorted(o.order_id for o in orders)
            anomalies.append(f"duplicate-order: clientOrderId {client_order_id} stored as {ids}")
    for op in history.submits:
        if op.outcome == OK and (op.order_id is None or op.order_id not in store):
            anomalies.append(
                f"acknowledged-lost: submit {op.op} ({op.client_order_id}) acknowledged as"
                f" {op.order_id}, not in the store"
            )
    return anomalies


def _content_mismatch(body: Mapping[str, Any], order: StoredOrder) -> str | None:
    if not order.events:
        return "no pending event"
    data = order.events[0].get("data") or {}
    differences = []
    for key in ("tokenIn", "tokenOut"):
        if str(body.get(key, "")).upper() != str(data.get(key, "")).upper():
            differences.append(f"{key} {body.get(key)!r} != stored {data.get(key)!r}")
    if _decimal(body.get("amount")) != _decimal(data.get("amount")):
        differences.append(f"amount {body.get('amount')!r} != stored {data.get('amount')!r}")
    if "slippageBps" in body and body["slippageBps"] != data.get("slippageBps"):
        differences.append(f"slippageBps {body['slippageBps']} != stored {data.get('slippageBps')}")
    return "; ".join(differences) or None


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def check_clients(
    history: History,
    store: Mapping[str, StoredOrder],
    may_stay_open: frozenset[str] = frozenset(),
) -> list[str]:
    """`may_stay_open`: orders that may end the run open; their client watched until the
    end of the run and must have seen every event stored."""
    anomalies: list[str] = []
    seen_by_conn: dict[int, list[Seen]] = defaultdict(list)
    for seen in history.seen:
        seen_by_conn[seen.conn].append(seen)
    conns_by_order: dict[str, list[Connection]] = defaultdict(list)
    for conn in history.connections:
        conns_by_order[conn.order_id].append(conn)

    # Every event a client saw is in the store, with the same content.
    for seen in history.seen:
        message = seen.message
        order = store.get(seen.order_id)
        stored = _event(order, message.get("seq")) if order else None
        if message.get("orderId") != seen.order_id or stored is None:
            anomalies.append(
                f"phantom-event: connection {seen.conn} watching {seen.order_id} received"
                f" {_brief(message)}, which the store does not hold"
            )
            continue
        for key in ("orderId", "seq", "status", "message", "ts", "data"):
            if message.get(key) != stored.get(key):
                anomalies.append(
                    f"event-differs: order {seen.order_id} seq {message.get('seq')}: {key}"
                    f" seen {message.get(key)!r}, stored {stored.get(key)!r}"
                )

    # Each connection streams after+1, after+2, ... without a gap or a repeat.
    for conn in history.connections:
        seqs = [s.seq for s in seen_by_conn.get(conn.conn, [])]
        expected = list(range(conn.after + 1, conn.after + 1 + len(seqs)))
        if seqs != expected:
            anomalies.append(
                f"stream-gap: order {conn.order_id} connection {conn.conn} (after"
                f" {conn.after}, {conn.target}) delivered seqs {seqs}"
            )
        if conn.close_code == 4404 and conn.order_id in _acknowledged(history):
            anomalies.append(
                f"unknown-order: order {conn.order_id} was acknowledged, yet connection"
                f" {conn.conn} to {conn.target} closed with 4404"
            )

    # The client of each acknowledged order saw it to its end.
    for order_id in _acknowledged(history):
        seen_seqs: set[int] = set()
        terminal: Seen | None = None
        for conn in conns_by_order.get(order_id, []):
            for seen in seen_by_conn.get(conn.conn, []):
                if isinstance(seen.seq, int):
                    seen_seqs.add(seen.seq)
                if seen.status in TERMINAL_STATUSES:
                    terminal = seen
        still_open = store.get(order_id)
        if (
            terminal is None
            and still_open is not None
            and order_id in may_stay_open
            and still_open.status == Status.OPEN.value
        ):
            missing = set(range(1, still_open.last_seq + 1)) - seen_seqs
            if missing:
                anomalies.append(
                    f"client-missed-events: order {order_id} (still open): the client never"
                    f" saw seqs {sorted(missing)}"
                )
            continue
        if terminal is None:
            anomalies.append(
                f"client-missed-terminal: order {order_id}: the client saw seqs"
                f" {sorted(seen_seqs)} over {len(conns_by_order.get(order_id, []))}"
                f" connection(s), never a terminal event"
            )
            continue
        missing = set(range(1, terminal.seq + 1)) - seen_seqs
        if missing:
            anomalies.append(
                f"client-missed-events: order {order_id}: the client never saw seqs"
                f" {sorted(missing)}"
            )
    return anomalies


def _acknowledged(history: History) -> list[str]:
    return [op.order_id for op in history.submits if op.outcome == OK and op.order_id]


def _event(order: StoredOrder, seq: Any) -> dict[str, Any] | None:
    if isinstance(seq, int) and 1 <= seq <= len(order.events):
        event = order.events[seq - 1]
        if event.get("seq") == seq:
            return event
    return next((e for e in order.events if e.get("seq") == seq), None)


def check_ledger(
    store: Mapping[str, StoredOrder], ledger: Sequence[Mapping[str, Any]]
) -> list[str]:
    anomalies: list[str] = []
    counts = Counter(str(entry.get("signature")) for entry in ledger)
    for signature, count in counts.items():
        if count > 1:
            anomalies.append(f"ledger-duplicate-signature: {signature} landed {count} times")

    # Signature -> order, from the txHash of every stored submitted event.
    owner: dict[str, str] = {}
    for order_id, order in store.items():
        for event in order.events:
            signature = (event.get("data") or {}).get("txHash")
            if event.get("status") != Status.SUBMITTED.value or not signature:
                continue
            other = owner.setdefault(signature, order_id)
            if other != order_id:
                anomalies.append(
                    f"shared-signature: {signature} was submitted by orders {other} and {order_id}"
                )

    landed: dict[str, set[str]] = defaultdict(set)
    amounts: dict[str, Any] = {}
    entries: dict[str, Mapping[str, Any]] = {}
    for entry in ledger:
        signature = str(entry.get("signature"))
        order_id = owner.get(signature)
        if order_id is None:
            anomalies.append(f"orphan-swap: {signature} landed for no stored order")
            continue
        landed[order_id].add(signature)
        amounts[signature] = entry.get("amountIn")
        entries[signature] = entry

    for order_id, order in store.items():
        signatures = landed.get(order_id, set())
        if len(signatures) > 1:
            anomalies.append(
                f"landed-twice: order {order_id} has {len(signatures)} landed swaps"
                f" {sorted(signatures)} (statuses {_statuses(order.events)})"
            )
        for signature in signatures:
            if _decimal(amounts[signature]) != Decimal(order.amount):
                anomalies.append(
                    f"ledger-amount-mismatch: order {order_id} ({order.amount} base units)"
                    f" landed {signature} swapping {amounts[signature]}"
                )
        last = order.events[-1] if order.events else {}
        if last.get("status") == Status.CONFIRMED.value:
            data = last.get("data") or {}
            signature = data.get("txHash")
            if signature not in signatures:
                anomalies.append(
                    f"confirmed-not-landed: order {order_id} confirmed {signature}, the ledger"
                    f" has {sorted(signatures)}"
                )
            elif "amountOut" in data:
                reported = _base_units(order.token_out, data.get("amountOut"))
                entry = entries[signature]
                if reported is None or reported != _integer(entry.get("amountOut")):
                    anomalies.append(
                        f"ledger-amount-out-mismatch: order {order_id} confirmed"
                        f" {data.get('amountOut')} {order.token_out}, the ledger's {signature}"
                        f" paid {entry.get('amountOut')} base units"
                    )
        elif signatures:
            # Only a confirmed order may have a swap: an open, cancelled, expired or failed
            # one that landed executed behind its own back (and an open one may fire again).
            status = last.get("status") or order.status
            anomalies.append(
                f"{status}-but-landed: order {order_id} is {status}, yet {sorted(signatures)}"
                f" landed (statuses {_statuses(order.events)})"
            )
    return anomalies


# A fire's price is a float (a quote's UI price); the threshold itself is exact.
_FLOAT_SLACK = Decimal("1e-9")
# Enough digits that products and scalings of amounts and prices are never rounded.
_EXACT = Context(prec=200)
# PostgreSQL keeps an order's expires_at to the microsecond; its events keep the float.
_EXPIRY_SLACK_S = 1e-3


def check_limits(
    history: History, store: Mapping[str, StoredOrder], ledger: Sequence[Mapping[str, Any]]
) -> list[str]:
    anomalies: list[str] = []
    ops = _submits_by_client_order_id(history)
    ledger_by_signature = {str(entry.get("signature")): entry for entry in ledger}
    for order_id, order in store.items():
        op = ops.get(order.client_order_id or "")
        statuses = _statuses(order.events)
        if op is not None:
            asked = str(op.body.get("orderType", OrderType.MARKET.value))
            if asked != order.order_type:
                anomalies.append(
                    f"order-type-mismatch: order {order_id} was submitted as {asked}, stored"
                    f" as {order.order_type}"
                )
            if "limitPrice" in op.body and _decimal(op.body["limitPrice"]) != _decimal(
                order.limit_price
            ):
                anomalies.append(
                    f"order-type-mismatch: order {order_id} was submitted with limitPrice"
                    f" {op.body['limitPrice']!r}, stored with {order.limit_price!r}"
                )
        if order.order_type == OrderType.MARKET.value:
            if any(e.get("status") == Status.OPEN.value for e in order.events):
                anomalies.append(f"market-order-armed: order {order_id}: statuses {statuses}")
            continue
        if order.order_type != OrderType.LIMIT.value:
            continue
        anomalies += _check_limit_order(order, ledger_by_signature)
        kind = op.kind if op is not None else None
        if kind == FAR and order.status not in (Status.OPEN.value, Status.CANCELLED.value):
            anomalies.append(
                f"far-order-lost: order {order_id} (limit {order.limit_price}, never reached)"
                f" ended {order.status}, neither still open nor cancelled (statuses {statuses})"
            )
        if kind == EXPIRING and order.status not in (
            Status.EXPIRED.value,
            Status.CANCELLED.value,
        ):
            anomalies.append(
                f"expiring-order-lost: order {order_id} (expiring at {order.expires_at}) ended"
                f" {order.status}, neither expired nor cancelled (statuses {statuses})"
            )
    if history.armed_at_end is not None:
        stored_open = sorted(
            o.order_id
            for o in store.values()
            if o.order_type == OrderType.LIMIT.value and o.status == Status.OPEN.value
        )
        held = sum(history.armed_at_end.values())
        if held != len(stored_open):
            anomalies.append(
                f"armed-count-mismatch: the replicas hold {held} limit orders armed"
                f" ({history.armed_at_end}), the store {len(stored_open)} open"
            )
    return anomalies


def _check_limit_order(
    order: StoredOrder, ledger_by_signature: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    anomalies: list[str] = []
    order_id, statuses = order.order_id, _statuses(order.events)
    limit = _decimal(order.limit_price)
    if limit is None or not limit.is_finite() or limit <= 0:
        return [f"order-type-mismatch: limit order {order_id} has limit {order.limit_price!r}"]
    amount = _ui_amount(order.token_in, order.amount)
    armed = False
    previous: Any = None
    for event in order.events:
        status, data, seq = event.get("status"), event.get("data") or {}, event.get("seq")
        if status == Status.OPEN.value:
            armed = True
            if (
                data.get("orderType") != OrderType.LIMIT.value
                or _decimal(data.get("limitPrice")) != limit
                or not isinstance(data.get("expiresAt"), (int, float))
                or order.expires_at is None
                or abs(data["expiresAt"] - order.expires_at) > _EXPIRY_SLACK_S
            ):
                anomalies.append(
                    f"open-data-mismatch: order {order_id} seq {seq} armed with {data}, stored"
                    f" as limit {order.limit_price} expiring at {order.expires_at}"
                )
        elif status == Status.ROUTING.value:
            if not armed:
                anomalies.append(
                    f"limit-routed-unarmed: order {order_id} seq {seq} routes before it was"
                    f" ever armed (statuses {statuses})"
                )
            elif previous == Status.OPEN.value:
                anomalies += _check_fire(order_id, seq, data.get("trigger"), limit)
        elif status == Status.CONFIRMED.value:
            anomalies += _check_fill(order, seq, data, limit, amount, ledger_by_signature)
        elif status == Status.EXPIRED.value:
            ts = event.get("ts")
            if order.expires_at is None or not isinstance(ts, (int, float)):
                anomalies.append(f"expired-early: order {order_id} expired with no expiry")
            elif ts < order.expires_at - _EXPIRY_SLACK_S:
                anomalies.append(
                    f"expired-early: order {order_id} expired at {ts}, its expiry was"
                    f" {order.expires_at} ({order.expires_at - ts:.3f} s early)"
                )
        previous = status
    return anomalies


def _check_fire(order_id: str, seq: Any, trigger: Any, limit: Decimal) -> list[str]:
    if (
        not isinstance(trigger, dict)
        or not isinstance(trigger.get("slot"), int)
        or not isinstance(trigger.get("price"), (int, float))
        or isinstance(trigger.get("price"), bool)
    ):
        return [
            f"fired-without-trigger: order {order_id} seq {seq} left open for routing with"
            f" trigger {trigger!r}"
        ]
    price = Decimal(trigger["price"])  # exact: the float as sent
    with localcontext(_EXACT):
        below = price < limit * (1 - _FLOAT_SLACK)
    if below:
        return [
            f"fired-below-limit: order {order_id} seq {seq} fired at {trigger['price']}"
            f" (slot {trigger['slot']}), its limit is {limit}"
        ]
    return []


def _check_fill(
    order: StoredOrder,
    seq: Any,
    data: Mapping[str, Any],
    limit: Decimal,
    amount: Decimal | None,
    ledger_by_signature: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """A confirmed limit order was paid at least amount x limitPrice: by its own report and
    by the chain's ledger, computed exactly (the order's stored amount, not its report)."""
    order_id = order.order_id
    if amount is None:
        return [f"filled-below-limit: order {order_id}: unknown token {order.token_in!r}"]
    with localcontext(_EXACT):
        least = amount * limit
    anomalies: list[str] = []
    reported = _decimal(data.get("amountOut"))
    if reported is None or reported < least:
        anomalies.append(
            f"filled-below-limit: order {order_id} seq {seq} confirmed {data.get('amountOut')}"
            f" {order.token_out} for {amount} {order.token_in}, below {least} (limit {limit})"
        )
    entry = ledger_by_signature.get(str(data.get("txHash")))
    paid = None if entry is None else _integer(entry.get("amountOut"))
    least_base = _base_units_ceil(order.token_out, least)
    if entry is not None and (paid is None or least_base is None or paid < least_base):
        anomalies.append(
            f"landed-below-limit: order {order_id}: the ledger's {data.get('txHash')} paid"
            f" {entry.get('amountOut')} base units of {order.token_out}, below {least}"
            f" (limit {limit})"
        )
    return anomalies


def check_cancels(history: History, store: Mapping[str, StoredOrder]) -> list[str]:
    anomalies: list[str] = []
    by_order: dict[str, list[Cancel]] = defaultdict(list)
    for op in history.cancels:
        by_order[op.order_id].append(op)
        order = store.get(op.order_id)
        if order is None:
            continue  # acknowledged-lost says so
        reached = {e.get("status") for e in order.events}
        where = f"cancel {op.op} of order {op.order_id} ({op.target})"
        if op.http_status == 200:
            if op.answer_status != Status.CANCELLED.value:
                anomalies.append(f"cancel-answer-wrong: {where} answered 200 {op.answer_status}")
            if order.status != Status.CANCELLED.value:
                anomalies.append(
                    f"cancel-acknowledged-lost: {where} answered 200, the order ended"
                    f" {order.status} (statuses {_statuses(order.events)})"
                )
        elif op.http_status == 404:
            anomalies.append(f"cancel-unknown-order: {where} answered 404 ({op.error})")
        elif op.http_status == 409:
            said = op.answer_status
            if said is None or said in CANCELLABLE_STATUSES or said not in reached:
                anomalies.append(
                    f"cancel-refused-wrongly: {where} answered 409 as {said!r}; the order"
                    f" went {_statuses(order.events)}"
                )
            elif said in TERMINAL_STATUSES and order.status != said:
                anomalies.append(
                    f"cancel-refused-wrongly: {where} answered 409 as {said}, yet the order"
                    f" ended {order.status}"
                )
    for order_id, order in store.items():
        at = next(
            (i for i, e in enumerate(order.events) if e.get("status") == Status.CANCELLED.value),
            None,
        )
        if at is None:
            continue
        asked = by_order.get(order_id, [])
        if not any(op.outcome in (OK, INFO) for op in asked):
            anomalies.append(
                f"unrequested-cancel: order {order_id} was cancelled, yet no DELETE of it was"
                f" answered 200 or left unanswered ({[(op.http_status, op.error) for op in asked]})"
            )
        if at + 1 < len(order.events):
            anomalies.append(
                f"cancelled-then-executed: order {order_id}: statuses after its cancellation"
                f" {_statuses(order.events[at + 1 :])}"
            )
        before = order.events[at - 1].get("status") if at > 0 else None
        said = (order.events[at].get("data") or {}).get("previous")
        if said != before:
            anomalies.append(
                f"cancel-data-mismatch: order {order_id} was cancelled from {before}, its"
                f" event says {said!r}"
            )
    return anomalies


def _token_decimals(symbol: str) -> int | None:
    try:
        return REGISTRY.resolve(symbol, upcoming=True).decimals
    except UnknownToken:
        return None


def _ui_amount(symbol: str, base: int) -> Decimal | None:
    decimals = _token_decimals(symbol)
    if decimals is None:
        return None
    with localcontext(_EXACT):
        return Decimal(base).scaleb(-decimals)


def _base_units(symbol: str, ui: Any) -> int | None:
    """A UI amount as exact base units (None: unknown token, not a number, not whole)."""
    decimals, value = _token_decimals(symbol), _decimal(ui)
    if decimals is None or value is None or not value.is_finite():
        return None
    with localcontext(_EXACT):
        scaled = value.scaleb(decimals)
        return int(scaled) if scaled == scaled.to_integral_value() else None


def _base_units_ceil(symbol: str, ui: Decimal) -> int | None:
    decimals = _token_decimals(symbol)
    if decimals is None:
        return None
    with localcontext(_EXACT):
        return math.ceil(ui.scaleb(decimals))


def _integer(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _statuses(events: Iterable[Mapping[str, Any]]) -> list[str]:
    return [f"{e.get('seq')}:{e.get('status')}" for e in events]


def _brief(message: Mapping[str, Any]) -> str:
    return (
        f"{{orderId {message.get('orderId')}, seq {message.get('seq')}, {message.get('status')}}}"
    )


# -- the summary -----------------------------------------------------------------------------


def summary(
    history: History,
    store: Mapping[str, StoredOrder],
    ledger: Sequence[Mapping[str, Any]],
    anomalies: Sequence[str],
) -> dict[str, Any]:
    outcomes = Counter(op.outcome for op in history.submits)
    stored_ops = {o.client_order_id for o in store.values()}
    final = Counter(o.status for o in store.values())
    return {
        "submits": len(history.submits),
        "acknowledged": outcomes[OK],
        "refused": outcomes[FAIL],
        "indeterminate": outcomes[INFO],
        "indeterminate_stored": sum(
            1 for op in history.submits if op.outcome == INFO and op.client_order_id in stored_ops
        ),
        "orders": len(store),
        "confirmed": final[Status.CONFIRMED.value],
        "failed": final[Status.FAILED.value],
        "kills": len(history.kills),
        "kill_triggers": [f"{k.target}@{k.trigger}" for k in history.kills],
        "in_flight_at_kills": in_flight_at_kills(history, store),
        "ws_connections": len(history.connections),
        "ws_resumed": sum(1 for c in history.connections if c.after > 0),
        "ws_stalled": sum(1 for c in history.connections if c.stalled),
        "events_checked": len(history.seen),
        "ledger_entries": len(ledger),
        **limit_summary(history, store),
        "anomalies": len(anomalies),
    }


def limit_summary(history: History, store: Mapping[str, StoredOrder]) -> dict[str, Any]:
    """What the limit orders went through: final statuses by the client's intent, fires
    (routing with a trigger), re-arms, cancels by answer, price lifts, armed at the end."""
    ops = _submits_by_client_order_id(history)
    finals: dict[str, Counter[str]] = {kind: Counter() for kind in (NEAR, FAR, EXPIRING)}
    fired = rearmed = fired_at_kills = 0
    fires = []
    for order in store.values():
        op = ops.get(order.client_order_id or "")
        if op is not None and op.kind in finals:
            finals[op.kind][order.status] += 1
        for previous, event in zip(order.events, order.events[1:], strict=False):
            if previous.get("status") == Status.OPEN.value and event.get("status") == (
                Status.ROUTING.value
            ):
                fired += 1
                fires.append(event.get("ts", 0.0))
            if event.get("status") == Status.OPEN.value and (event.get("data") or {}).get(
                "rearmed"
            ):
                rearmed += 1
    for kill in history.kills:
        # A fire up to 2 s before a kill was most likely still executing when it struck.
        fired_at_kills += sum(1 for ts in fires if kill.at - 2.0 <= ts <= kill.at)
    final_lift = min((lift.at for lift in history.lifts if lift.why == FINAL_LIFT), default=None)
    cancels = Counter(_cancel_label(op) for op in history.cancels)
    return {
        "limit_orders": {kind: dict(sorted(c.items())) for kind, c in finals.items()},
        "fired": fired,
        "fired_before_final_lift": sum(1 for ts in fires if final_lift is None or ts < final_lift),
        "fired_within_2s_before_a_kill": fired_at_kills,
        "rearmed": rearmed,
        "cancels": dict(sorted(cancels.items())),
        "lifts": [f"{lift.token_a}+{lift.bps:g}@{lift.why}" for lift in history.lifts],
        "armed_at_end": history.armed_at_end,
        "armed_settled_s": history.armed_settled_s,
    }


def _cancel_label(op: Cancel) -> str:
    """200:cancelled, 409:<status>, 404; else the outcome (fail, info) and any HTTP status."""
    if op.http_status in (200, 404, 409):
        return f"{op.http_status}:{op.answer_status}" if op.answer_status else str(op.http_status)
    return op.outcome if op.http_status is None else f"{op.outcome}:{op.http_status}"


def in_flight_at_kills(history: History, store: Mapping[str, StoredOrder]) -> dict[str, int]:
    """How many orders stood at each non-terminal stage when a process was killed (by the
    stored events' timestamps): evidence that the kills hit every stage."""
    stages: Counter[str] = Counter()
    for kill in history.kills:
        for order in store.values():
            before = [e for e in order.events if e.get("ts", 0) <= kill.at]
            if before and before[-1].get("status") not in TERMINAL_STATUSES:
                stages[str(before[-1].get("status"))] += 1
    return dict(sorted(stages.items()))
