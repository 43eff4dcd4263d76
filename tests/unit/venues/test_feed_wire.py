"""The feed's wire format is exact: a replica that decodes what the chain service encodes
rebuilds the very pools the chain has, and anything malformed is refused by field."""

from __future__ import annotations

import copy
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.feed import (
    AccountFeed,
    AccountUpdate,
    FeedMessage,
    SlotNotice,
    Snapshot,
)
from order_engine.venues.feed_wire import (
    decode_message,
    encode_message,
    message_to_json,
    pool_state_to_json,
)
from order_engine.venues.market_data import PoolSpec
from order_engine.venues.pool import pool_from_state
from order_engine.venues.tokens import REGISTRY
from order_engine.venues.wire import WireError
from tests.support.market import land_swap

WAIT = 5.0
PAIRS = [("SOL", "USDC"), ("USDC", "SOL"), ("BONK", "SOL"), ("JUP", "USDC"), ("USDT", "USDC")]


async def swap(market: SimulatedMarket, rng: random.Random) -> None:
    """A random swap lands, as a trader's would."""
    token_in, token_out = (REGISTRY.resolve(s) for s in rng.choice(PAIRS))
    amount = token_in.to_base(Decimal(rng.choice(["0.01", "3", "250", "90000"])))
    await land_swap(market, rng.choice(["Raydium", "Meteora"]), token_in, token_out, amount, WAIT)


def round_trip(message: FeedMessage) -> FeedMessage:
    return decode_message(encode_message(message))


async def test_snapshots_and_updates_of_a_trading_market_round_trip_exactly() -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=7)
    rng = random.Random(7)
    first = market.feed.snapshot()
    # A DLMM pool that never swapped says so with "-inf": that must survive too.
    assert any(p.state.get("last_update") == "-inf" for p in first.pools)
    assert round_trip(first) == first
    seen: list[FeedMessage] = []
    with market.feed.subscribe(after_seq=0, stream_id=market.feed.stream_id) as sub:
        for i in range(40):
            if i % 3:
                await swap(market, rng)
            else:
                market.step(rng.choice([1, 4]))
            if i == 20:
                market.add_pool(PoolSpec("Meteora", "BONK", "JUP", 400_000, 25, 10_000, 60))
            if i % 10 == 0:
                market.feed.notice()
            while len(seen) < market.feed.last_seq:
                seen.append(await sub.next())
    kinds = {type(m) for m in seen}
    assert kinds == {AccountUpdate, SlotNotice}
    assert any(isinstance(m, AccountUpdate) and "kind" in m.state for m in seen)  # the launch
    for message in seen:
        assert round_trip(message) == message
    last = market.feed.snapshot()
    decoded = round_trip(last)
    assert decoded == last
    assert isinstance(decoded, Snapshot)
    # And what a replica builds from it is the chain's own pools.
    for pool in decoded.pools:
        rebuilt = pool_from_state(pool.state)
        assert rebuilt.state() == market.venues[pool.venue].pools[pool.pool_id].state()


def test_integers_beyond_a_float_travel_exactly_as_decimal_strings() -> None:
    big = 2**64 - 1
    pool = ConstantProductPool("raydium:WSOL-USDC", "WSOL", "USDC", big, big - 2)
    feed = AccountFeed(lambda: 0.0, lambda: 0)
    feed.follow("Raydium", pool)
    snapshot = feed.snapshot()
    encoded = orjson.loads(encode_message(snapshot))
    assert encoded["pools"][0]["state"]["vault_x"] == str(big)
    decoded = round_trip(snapshot)
    assert isinstance(decoded, Snapshot)
    assert decoded.pools[0].state["vault_y"] == big - 2
    assert type(decoded.pools[0].state["vault_y"]) is int


def test_a_pool_field_the_format_does_not_know_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="colour"):
        pool_state_to_json({"kind": "cpmm", "colour": "blue"})


# -- malformed input --------------------------------------------------------------------------


def samples() -> dict[str, Any]:
    """One valid message of each kind, as JSON values, to break one field at a time."""
    market = SimulatedMarket(PROFILES["instant"], seed=3)
    snapshot = market.feed.snapshot()
    dlmm = next(p for p in snapshot.pools if p.state["kind"] == "dlmm")
    cpmm = next(p for p in snapshot.pools if p.state["kind"] == "cpmm")
    update = AccountUpdate("s", 5, 9, 1.5, dlmm.venue, dlmm.pool_id, dlmm.state)
    return {
        "snapshot": message_to_json(Snapshot("s", 4, 9, 1.5, (cpmm, dlmm))),
        "update": message_to_json(update),
        "slot": message_to_json(SlotNotice("s", 6, 9, 1.5)),
    }


def drop(key: str) -> Any:
    return lambda obj: obj.pop(key)


def put(key: str, value: Any) -> Any:
    return lambda obj: obj.__setitem__(key, value)


MALFORMED = [
    # (sample, path to the object to break, how, the field the error must name)
    ("slot", [], put("type", "vote"), "message.type: unknown message type"),
    ("slot", [], drop("type"), "message.type: missing"),
    ("slot", [], drop("streamId"), "message.streamId: missing"),
    ("slot", [], put("seq", "6"), "message.seq: expected an integer"),
    ("slot", [], put("seq", -1), "message.seq: must not be negative"),
    ("slot", [], put("slot", True), "message.slot: expected an integer"),
    ("slot", [], put("marketTime", "NaN"), "message.marketTime: expected a finite number"),
    ("update", [], drop("poolId"), "message.poolId: missing"),
    ("update", [], put("state", []), "message.state: expected a JSON object"),
    ("update", ["state"], put("colour", "blue"), "message.state.colour: not a field"),
    ("update", ["state"], put("fees_x", 1.5), "message.state.fees_x: expected an integer"),
    ("update", ["state"], put("fees_x", "1e3"), "message.state.fees_x: expected an integer"),
    ("update", ["state"], put("last_update", "inf"), "message.state.last_update: expected"),
    ("update", ["state"], put("filter_period", None), "message.state.filter_period"),
    ("update", ["state"], put("pool_id", "x:y"), "message.state.pool_id: the state of another"),
    ("update", ["state"], put("kind", "clmm"), "message.state.kind: no pool of kind 'clmm'"),
    ("update", ["state"], drop("max_id"), "message.state.max_id: missing from a whole dlmm"),
    ("update", ["state"], put("bin_step", "0"), "message.state.bin_step: must be positive"),
    ("update", ["state", "bins"], put(0, ["1", "2"]), "message.state.bins[0]: expected [id,"),
    ("update", ["state", "bins"], put(2, ["1", "x", "3"]), "message.state.bins[2][1]"),
    ("snapshot", [], put("pools", {}), "message.pools: expected an array"),
    ("snapshot", ["pools", 0, "state"], drop("kind"), "message.pools[0].state.kind: missing"),
    ("snapshot", ["pools", 0, "state"], drop("vault_y"), "message.pools[0].state.vault_y"),
    ("snapshot", ["pools", 1], drop("venue"), "message.pools[1].venue: missing"),
]


@pytest.mark.parametrize(("sample", "path", "breaking", "error"), MALFORMED)
def test_a_malformed_message_is_refused_naming_the_field(
    sample: str, path: list[Any], breaking: Any, error: str
) -> None:
    value = copy.deepcopy(samples()[sample])
    decode_message(orjson.dumps(value))  # whole, it is fine
    target = value
    for step in path:
        target = target[step]
    breaking(target)
    with pytest.raises(WireError) as refused:
        decode_message(orjson.dumps(value))
    assert str(refused.value).startswith(error), str(refused.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"slot"', b"\xff"])
def test_what_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(WireError, match=r"^message"):
        decode_message(raw)
