"""The `orders` row, described once for every backend.

Its columns are the fields of `Order`, the columns an event changes are the fields of
`OrderUpdate`: a new column is a field in `orders.py` plus a migration per dialect (and,
for a token amount or a point in time, its name in the set below). A backend only says how
its database holds the values it cannot take as Python has them (a `Dialect`) and writes
its own SQL from these column lists.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Union, get_args, get_origin, get_type_hints

from order_engine.orders import TERMINAL, Order, OrderEvent, OrderType, OrderUpdate, Status


class Kind(enum.Enum):
    """What a column holds, as far as a database cares."""

    TEXT = "text"
    INT = "int"  # fits a signed 64-bit integer
    FLOAT = "float"
    U64 = "u64"  # token amounts: up to 2**64 - 1, past a signed 64-bit integer
    TIME = "time"  # epoch seconds
    STATUS = "status"
    ORDER_TYPE = "order_type"


# Read with the order but written only by the lease statements (with its lease_until).
_LEASE_FIELDS = ("owner",)
# Integers and floats whose storage is not the plain one of their Python type.
_U64_FIELDS = frozenset({"amount", "amount_out", "min_amount_out", "min_liquidity"})
_TIME_FIELDS = frozenset({"created_at", "updated_at", "expires_at"})
_PLAIN = {
    str: Kind.TEXT,
    int: Kind.INT,
    float: Kind.FLOAT,
    Status: Kind.STATUS,
    OrderType: Kind.ORDER_TYPE,
}

# Every field of Order, in its order: a row read in this order is Order's positional args.
READ_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Order))
# What an insert writes from the Order itself.
ORDER_COLUMNS: tuple[str, ...] = tuple(c for c in READ_COLUMNS if c not in _LEASE_FIELDS)
# What an event may change besides status, seq and updated_at (None: left as is).
UPDATE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(OrderUpdate))
EVENT_COLUMNS = "order_id, seq, status, message, payload, created_at"
# Spelled as the partial indexes of the migrations spell it, so the planner uses them.
UNFINISHED = "status NOT IN ('cancelled', 'confirmed', 'expired', 'failed')"
_TERMINAL_SQL = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL))
if f"status NOT IN ({_TERMINAL_SQL})" != UNFINISHED:  # a new terminal status: a migration
    raise TypeError(f"UNFINISHED does not list every terminal status ({_TERMINAL_SQL})")


def _kind(name: str, hint: Any) -> Kind:
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (types.UnionType, Union) and len(args) == 1:
        hint = args[0]  # optional: NULL is None whatever the kind
    kind = _PLAIN.get(hint)
    if name in _U64_FIELDS:
        kind = Kind.U64 if kind is Kind.INT else None
    elif name in _TIME_FIELDS:
        kind = Kind.TIME if kind is Kind.FLOAT else None
    if kind is None:
        raise TypeError(f"Order.{name}: no column kind for {hint!r}")
    return kind


def _kinds() -> dict[str, Kind]:
    hints = get_type_hints(Order)
    kinds = {name: _kind(name, hints[name]) for name in READ_COLUMNS}
    update_hints = get_type_hints(OrderUpdate)
    for name in UPDATE_COLUMNS:
        # An update field is written into the Order column of the same name and kind.
        if name not in ORDER_COLUMNS or _kind(name, update_hints[name]) != kinds[name]:
            raise TypeError(f"OrderUpdate.{name} is not an Order column of the same kind")
    return kinds


KINDS: dict[str, Kind] = _kinds()


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database holds what it cannot take as Python has it."""

    u64_to_db: Callable[[int], Any]
    u64_from_db: Callable[[Any], int]
    time_to_db: Callable[[float], Any]
    time_from_db: Callable[[Any], float]


class OrderRows:
    """Order -> row values and back, in the column orders above, for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        to_db: dict[Kind, Callable[[Any], Any]] = {
            Kind.U64: dialect.u64_to_db,
            Kind.TIME: dialect.time_to_db,
            Kind.STATUS: _enum_to_db,
            Kind.ORDER_TYPE: _enum_to_db,
        }
        from_db: dict[Kind, Callable[[Any], Any]] = {
            Kind.U64: dialect.u64_from_db,
            Kind.TIME: dialect.time_from_db,
            Kind.STATUS: Status,
            Kind.ORDER_TYPE: OrderType,
        }
        self._order_values = _getter(ORDER_COLUMNS)
        self._update_values = _getter(UPDATE_COLUMNS)
        # Only the columns that need it are converted: rows are built on every write.
        self._to_order_row = _converters(ORDER_COLUMNS, to_db)
        self._to_update_row = _converters(UPDATE_COLUMNS, to_db)
        self._from_row = _converters(READ_COLUMNS, from_db)

    def order_values(self, order: Order) -> tuple[Any, ...]:
        """The values of ORDER_COLUMNS."""
        return _convert(self._order_values(order), self._to_order_row)

    def update_values(self, update: OrderUpdate) -> tuple[Any, ...]:
        """The values of UPDATE_COLUMNS, None where the event leaves the column as is."""
        return _convert(self._update_values(update), self._to_update_row)

    def order(self, row: Sequence[Any]) -> Order:
        """The Order of a row read as READ_COLUMNS."""
        return Order(*_convert(tuple(row), self._from_row))

    def event_values(self, event: OrderEvent, payload: Any) -> tuple[Any, ...]:
        """The values of EVENT_COLUMNS; the payload as the dialect holds JSON."""
        ts = self.dialect.time_to_db(event.ts)
        return (event.order_id, event.seq, event.status.value, event.message, payload, ts)

    def event(self, row: Sequence[Any], data: dict[str, Any]) -> OrderEvent:
        """The OrderEvent of a row read as EVENT_COLUMNS, its payload decoded already."""
        order_id, seq, status, message, _, created_at = row
        ts = self.dialect.time_from_db(created_at)
        return OrderEvent(order_id, seq, Status(status), message, ts, data)


def _enum_to_db(value: Status | OrderType) -> str:
    return value.value


def _getter(columns: Sequence[str]) -> Callable[[object], tuple[Any, ...]]:
    get = attrgetter(*columns)
    if len(columns) == 1:  # attrgetter of one name returns the value, not a 1-tuple
        return lambda obj: (get(obj),)
    return get


_Converters = tuple[tuple[int, Callable[[Any], Any]], ...]


def _converters(columns: Sequence[str], by_kind: dict[Kind, Callable[[Any], Any]]) -> _Converters:
    return tuple((i, by_kind[KINDS[c]]) for i, c in enumerate(columns) if KINDS[c] in by_kind)


def _convert(values: tuple[Any, ...], converters: _Converters) -> tuple[Any, ...]:
    if not converters:
        return values
    out = list(values)
    for i, convert in converters:
        if out[i] is not None:
            out[i] = convert(out[i])
    return tuple(out)
