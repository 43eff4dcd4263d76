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
  `confirmed-not-landed`, `failed-but-landed`, `ledger-amount-mismatch`: no swap landed
  twice, none landed for no order, and the ledger agrees with each order's terminal state.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from order_engine.orders import (
    TERMINAL,
    InvalidTransition,
    Order,
    OrderEvent,
    Status,
    check_transition,
)

TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)

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
class History:
    submits: list[Submit] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    # Non-event messages a server sent on a WebSocket (e.g. a 503 refusal before closing).
    notices: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    # submits

    def submit_started(self, client: int, body: dict[str, Any], target: str) -> Submit:
        op = Submit(len(self.submits), client, body, target, time.time())
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

    # faults

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


def stored_order(order: Order, events: Sequence[OrderEvent]) -> StoredOrder:
    return StoredOrder(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        status=order.status.value,
        last_seq=order.last_seq,
        amount=order.amount,
        events=tuple(_as_json(e.to_message()) for e in events),
    )


def _as_json(value: Any) -> Any:
    """The value as a client decodes it from the wire."""
    return json.loads(json.dumps(value))


# -- the checker ---------------------------------------------------------------------------


def check(
    history: History, store: Mapping[str, StoredOrder], ledger: Sequence[Mapping[str, Any]]
) -> list[str]:
    return [
        *check_store(store),
        *check_submits(history, store),
        *check_clients(history, store),
        *check_ledger(store, ledger),
    ]


def check_store(store: Mapping[str, StoredOrder]) -> list[str]:
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
        if not terminals:
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


def check_clients(history: History, store: Mapping[str, StoredOrder]) -> list[str]:
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
    for entry in ledger:
        signature = str(entry.get("signature"))
        order_id = owner.get(signature)
        if order_id is None:
            anomalies.append(f"orphan-swap: {signature} landed for no stored order")
            continue
        landed[order_id].add(signature)
        amounts[signature] = entry.get("amountIn")

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
            signature = (last.get("data") or {}).get("txHash")
            if signature not in signatures:
                anomalies.append(
                    f"confirmed-not-landed: order {order_id} confirmed {signature}, the ledger"
                    f" has {sorted(signatures)}"
                )
        elif last.get("status") == Status.FAILED.value and signatures:
            anomalies.append(
                f"failed-but-landed: order {order_id} failed, yet {sorted(signatures)} landed"
            )
    return anomalies


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
        "anomalies": len(anomalies),
    }


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
