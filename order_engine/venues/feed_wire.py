"""The JSON form of the account feed's messages, as the chain service streams them to engine
replicas over its `/feed` WebSocket.

One message per text frame, an object whose `type` says which:

    {"type": "snapshot", "streamId", "seq", "slot", "marketTime",
     "pools": [{"venue", "poolId", "state"}, ...]}
    {"type": "update", "streamId", "seq", "slot", "marketTime", "venue", "poolId", "state"}
    {"type": "slot", "streamId", "seq", "slot", "marketTime"}

`seq` and `slot` are counters, far below 2**53, and travel as JSON integers. A pool `state`
keeps the field names `state()` gives it, but every integer in it travels as a decimal
string (a bin as `[id, x, y]`, all three strings): reserves and bin amounts are u64-scale,
beyond what a float holds exactly, and a reader cannot tell which strings are numbers
without knowing the fields, so the fields are listed here. Floats travel as JSON numbers,
whose shortest repr round-trips; `last_update` is a number or "-inf" (a pool that never
swapped). Decoding gives back exactly the dict `pool_from_state` and `apply_state` take.

Decoding never trusts its input, as in `wire`: anything unexpected, including a field no
pool has, raises `WireError` naming the field; a whole state (one that names its `kind`)
must carry every field of that kind, so a copy can always be built from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from order_engine.venues import cpmm, dlmm
from order_engine.venues.feed import AccountUpdate, FeedMessage, PoolSnapshot, SlotNotice, Snapshot
from order_engine.venues.wire import Fields, JsonObject, WireError, parse_amount

# Close codes of the feed's WebSocket (4000-4999 are the application's to define).
CLOSE_LAGGED = 4000  # the subscriber fell behind: resubscribe after the last seq applied

SNAPSHOT = "snapshot"
UPDATE = "update"
SLOT = "slot"

_TEXT = ("kind", "pool_id", "token_x", "token_y")
_CPMM_INTEGERS = cpmm.STATE_FIELDS  # every field of a CPMM's state is an integer
_DLMM_INTEGERS = (
    "bin_step",
    "base_factor",
    "variable_fee_control",
    "max_volatility_accumulator",
    "reduction_factor",
    "min_id",
    "max_id",
    "active_id",
    "volatility_accumulator",
    "volatility_reference",
    "index_reference",
    "fees_x",
    "fees_y",
)
_DLMM_NUMBERS = ("filter_period", "decay_period")
LAST_UPDATE = "last_update"
BINS = "bins"

# What a whole state of each kind must carry.
_WHOLE: dict[str, frozenset[str]] = {
    cpmm.KIND: frozenset((*_TEXT, *_CPMM_INTEGERS)),
    dlmm.KIND: frozenset((*_TEXT, *_DLMM_INTEGERS, *_DLMM_NUMBERS, LAST_UPDATE, BINS)),
}


# -- pool states ---------------------------------------------------------------------------


def _integer_json(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, not {value!r}")
    return str(value)


def _number_json(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, not {value!r}")
    return number


def _time_json(value: Any) -> float | str:
    return dlmm.NEVER if value == dlmm.NEVER else _number_json(value)


def _bins_json(value: Any) -> list[list[str]]:
    return [[_integer_json(i), _integer_json(x), _integer_json(y)] for i, x, y in value]


def _text(f: Fields, key: str) -> str:
    return f.text(key)


def _finite(f: Fields, key: str) -> float:
    value = f.raw(key)
    if isinstance(value, float | int) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    raise WireError(f"{f.where(key)}: expected a finite number")


def _time(f: Fields, key: str) -> float | str:
    if f.raw(key) == dlmm.NEVER:
        return dlmm.NEVER
    try:
        return _finite(f, key)
    except WireError:
        raise WireError(f"{f.where(key)}: expected a finite number or {dlmm.NEVER!r}") from None


def _bins(f: Fields, key: str) -> list[list[int]]:
    rows = []
    for i, row in enumerate(f.items(key)):
        where = f"{f.where(key)}[{i}]"
        if not isinstance(row, list) or len(row) != 3:
            raise WireError(f"{where}: expected [id, x, y]")
        rows.append([parse_amount(value, f"{where}[{j}]") for j, value in enumerate(row)])
    return rows


Codec = tuple[Callable[[Any], Any], Callable[[Fields, str], Any]]
_CODECS: dict[str, Codec] = {
    **{name: (str, _text) for name in _TEXT},
    **{name: (_integer_json, Fields.amount) for name in (*_CPMM_INTEGERS, *_DLMM_INTEGERS)},
    **{name: (_number_json, _finite) for name in _DLMM_NUMBERS},
    LAST_UPDATE: (_time_json, _time),
    BINS: (_bins_json, _bins),
}


def pool_state_to_json(state: Mapping[str, Any]) -> JsonObject:
    """Raises ValueError for a field this format does not know: a pool that grew one needs
    it listed here, or its copies would silently lack it."""
    encoded: JsonObject = {}
    for key, value in state.items():
        codec = _CODECS.get(key)
        if codec is None:
            raise ValueError(f"the feed's wire format has no pool field {key!r}")
        encoded[key] = codec[0](value)
    return encoded


def pool_state_from_fields(f: Fields, key: str, pool_id: str, *, whole: bool) -> dict[str, Any]:
    """The state under `key`, of pool `pool_id`; `whole`: it must be a whole state."""
    value = f.raw(key)
    fields = f.nested(key)
    assert isinstance(value, Mapping)  # `nested` refused anything else
    state: dict[str, Any] = {}
    for name in value:
        codec = _CODECS.get(name)
        if codec is None:
            raise WireError(f"{fields.where(name)}: not a field of any pool")
        state[name] = codec[1](fields, name)
    if state.get("pool_id", pool_id) != pool_id:
        raise WireError(f"{fields.where('pool_id')}: the state of another pool than {pool_id}")
    kind = state.get("kind")
    if kind is None:
        if whole:
            raise WireError(f"{fields.where('kind')}: missing (a whole state names its kind)")
        return state
    required = _WHOLE.get(kind)
    if required is None:
        raise WireError(f"{fields.where('kind')}: no pool of kind {kind!r}")
    missing = sorted(required - state.keys())
    if missing:
        raise WireError(f"{fields.where(missing[0])}: missing from a whole {kind} state")
    if kind == dlmm.KIND and state["bin_step"] <= 0:
        raise WireError(f"{fields.where('bin_step')}: must be positive")
    return state


# -- messages ------------------------------------------------------------------------------


def message_to_json(message: FeedMessage) -> JsonObject:
    header: JsonObject = {
        "streamId": message.stream_id,
        "seq": message.seq,
        "slot": message.slot,
        "marketTime": _number_json(message.market_time),
    }
    if isinstance(message, Snapshot):
        pools = [
            {"venue": p.venue, "poolId": p.pool_id, "state": pool_state_to_json(p.state)}
            for p in message.pools
        ]
        return {"type": SNAPSHOT, **header, "pools": pools}
    if isinstance(message, AccountUpdate):
        return {
            "type": UPDATE,
            **header,
            "venue": message.venue,
            "poolId": message.pool_id,
            "state": pool_state_to_json(message.state),
        }
    return {"type": SLOT, **header}


def encode_message(message: FeedMessage) -> bytes:
    return orjson.dumps(message_to_json(message))


def _counter(f: Fields, key: str) -> int:
    value = f.integer(key)
    if value < 0:
        raise WireError(f"{f.where(key)}: must not be negative")
    return value


def _pool_snapshot(f: Fields) -> PoolSnapshot:
    pool_id = f.text("poolId")
    return PoolSnapshot(
        f.text("venue"), pool_id, pool_state_from_fields(f, "state", pool_id, whole=True)
    )


def message_from_json(value: object) -> FeedMessage:
    f = Fields(value, "message")
    kind = f.text("type")
    if kind not in (SLOT, UPDATE, SNAPSHOT):
        raise WireError(f"{f.where('type')}: unknown message type {kind!r}")
    stream_id, seq, slot = f.text("streamId"), _counter(f, "seq"), _counter(f, "slot")
    market_time = _finite(f, "marketTime")
    if kind == SLOT:
        return SlotNotice(stream_id, seq, slot, market_time)
    if kind == UPDATE:
        pool_id = f.text("poolId")
        state = pool_state_from_fields(f, "state", pool_id, whole=False)
        return AccountUpdate(stream_id, seq, slot, market_time, f.text("venue"), pool_id, state)
    return Snapshot(stream_id, seq, slot, market_time, f.each("pools", _pool_snapshot))


def decode_message(data: bytes | str) -> FeedMessage:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise WireError("message: not valid JSON") from None
    return message_from_json(value)
