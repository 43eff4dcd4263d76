"""The trading session (`GET /api/session`): many orders on one WebSocket, against a real
server and a real aiohttp WebSocket client (a raw socket where the client must stop reading).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_engine.api.auth import new_key
from order_engine.api.ws import CLOSE_POLICY
from order_engine.app import build_app
from order_engine.client import Client as OrderClient
from order_engine.client_errors import NotCancellable, SessionRefused
from order_engine.client_errors import OrderNotFound as ClientOrderNotFound
from order_engine.config import Settings
from order_engine.venues import SimulatedMarket
from tests.integration.test_recovery import running
from tests.integration.test_ws_timeouts import cut_off, stalled_websocket
from tests.support.clients import post_order, read_until_closed, services
from tests.support.factories import ORDER, make_settings
from tests.support.logs import logged
from tests.support.processes import Finished, engine_process, free_port, run, spawn
from tests.support.services import postgres_schema, require_redis

Client = TestClient[Any, Application]
WAIT_S = 30.0
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# Both directions, so the instant market's pools stay balanced however many orders run.
ORDERS = (
    {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5},
    {"tokenIn": "USDC", "tokenOut": "SOL", "amount": "225"},
)
# Far above the market (SOL is about 150 USDC): armed until cancelled or expired.
FAR_LIMIT = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "orderType": "limit"}
FAR_LIMIT["limitPrice"] = "1000000"
ALICE, ALICE_ENTRY = new_key("alice")
BOB, BOB_ENTRY = new_key("bob")


class Session:
    """One trading session as a bot sees it: every frame, replies by id, events by order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def send(self, request_id: Any, op: str, **fields: Any) -> None:
        await self.ws.send_json({"id": request_id, "op": op, **fields})

    async def receive(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        assert msg.type is WSMsgType.TEXT, msg
        frame: dict[str, Any] = msg.json()
        self.frames.append(frame)
        if "event" in frame:
            event = frame["event"]
            self.events[event["orderId"]].append(event)
        else:
            assert frame["id"] not in self.replies, f"answered twice: {frame}"
            self.replies[frame["id"]] = frame
        return frame

    async def reply(self, request_id: Any) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while request_id not in self.replies:
                await self.receive()
        return self.replies[request_id]

    async def request(self, request_id: Any, op: str, **fields: Any) -> dict[str, Any]:
        await self.send(request_id, op, **fields)
        return await self.reply(request_id)

    async def submit(self, request_id: Any, order: dict[str, Any], **fields: Any) -> str:
        reply = await self.request(request_id, "submit", order=order, **fields)
        assert "result" in reply, reply
        order_id: str = reply["result"]["orderId"]
        return order_id

    def ended(self, order_id: str) -> bool:
        events = self.events.get(order_id)
        return bool(events) and events[-1]["status"] in TERMINAL

    async def until(self, order_id: str, status: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not any(e["status"] == status for e in self.events.get(order_id, ())):
                await self.receive()

    async def until_ended(self, order_ids: list[str]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not all(self.ended(order_id) for order_id in order_ids):
                await self.receive()


async def serve(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, **sections: Any
) -> Client:
    settings = make_settings(tmp_path, **sections)
    client: Client = await aiohttp_client(build_app(settings, market=market))
    return client


async def stored_events(client: Client, order_id: str, **headers: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/order/{order_id}", headers=headers)
    assert resp.status == 200
    events: list[dict[str, Any]] = (await resp.json())["events"]
    return events


async def http_error(client: Client, body: Any) -> dict[str, Any]:
    resp = await client.post("/api/order/execute", json=body)
    assert resp.status == 400
    error: dict[str, Any] = (await resp.json())["error"]
    return error


# -- many orders ---------------------------------------------------------------------------


# Frames go out a burst per write, or, where the client asked for compression, one by one.
@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "deflate"])
async def test_500_orders_on_one_session_each_event_once_in_seq_order(
    client: Client, compress: int
) -> None:
    count = 500
    async with client.ws_connect("/api/session", compress=compress) as ws:
        assert ws.compress == compress
        s = Session(ws)
        for i in range(count):
            await s.send(i, "submit", order=ORDERS[i % 2])
        async with asyncio.timeout(WAIT_S):
            while len(s.replies) < count:
                await s.receive()
        order_ids = [s.replies[i]["result"]["orderId"] for i in range(count)]
        assert len(set(order_ids)) == count
        await s.until_ended(order_ids)
        # A last request: every frame queued before its answer has been read and checked.
        last = s.events[order_ids[0]][-1]["seq"]
        done = await s.request("last", "watch", orderId=order_ids[0], after=last)
        assert done["result"] == {"orderId": order_ids[0], "after": last}
    for i, order_id in enumerate(order_ids):
        events = s.events[order_id]
        # Every event exactly once, in seq order, as stored; nothing after the terminal one.
        assert events == await stored_events(client, order_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["status"] == "confirmed"
        # The answer comes before the order's first event.
        reply_at = s.frames.index(s.replies[i])
        assert reply_at < s.frames.index({"event": events[0]})
    assert len(s.frames) == count + sum(len(s.events[o]) for o in order_ids) + 1


async def test_the_submit_answer_is_the_post_answer(client: Client) -> None:
    resp = await client.post("/api/order/execute", json=ORDER)
    posted = await resp.json()
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        reply = await s.request("a", "submit", order=ORDER)
    result = reply["result"]
    assert result.keys() == posted.keys()
    assert result["message"] == posted["message"] == "Order submitted successfully."
    assert result["websocketUrl"] == f"/api/order/status?orderId={result['orderId']}"


# -- errors by id ---------------------------------------------------------------------------

BAD_REQUESTS = [
    ({"op": "fly"}, "invalid_op", "op"),
    ({"op": 7}, "invalid_op", "op"),
    ({}, "missing_field", "op"),
    ({"op": "submit"}, "missing_field", "order"),
    ({"op": "submit", "order": [1]}, "invalid_body", "order"),
    ({"op": "submit", "order": ORDER, "extra": 1}, "unknown_field", "extra"),
    ({"op": "submit", "order": ORDER, "idempotencyKey": 5}, "invalid_type", "idempotencyKey"),
    ({"op": "submit", "order": ORDER, "idempotencyKey": ""}, "invalid_idempotency_key",
     "idempotencyKey"),
    ({"op": "cancel"}, "missing_field", "orderId"),
    ({"op": "cancel", "orderId": "x"}, "invalid_order_id", "orderId"),
    ({"op": "cancel", "orderId": 5}, "invalid_type", "orderId"),
    ({"op": "cancel", "orderId": UNKNOWN_ID}, "order_not_found", "orderId"),
    ({"op": "cancel", "orderId": UNKNOWN_ID, "after": 1}, "unknown_field", "after"),
    ({"op": "watch", "orderId": UNKNOWN_ID}, "order_not_found", "orderId"),
    ({"op": "watch", "orderId": UNKNOWN_ID, "after": -1}, "invalid_after", "after"),
    ({"op": "watch", "orderId": UNKNOWN_ID, "after": 1.5}, "invalid_after", "after"),
    ({"op": "watch", "orderId": UNKNOWN_ID, "after": "3"}, "invalid_after", "after"),
    ({"op": "watch", "orderId": UNKNOWN_ID, "after": 10**18}, "invalid_after", "after"),
]  # fmt: skip
# Bodies refused by POST /api/order/execute: the session refuses them with the same code.
BAD_ORDERS = [
    {**ORDER, "tokenIn": "DOGE"},
    {**ORDER, "tokenOut": "SOL"},
    {**ORDER, "amount": -1},
    {**ORDER, "amount": "1.0000000001"},
    {**ORDER, "slipageBps": 5},
    {**ORDER, "slippageBps": 9999},
    {**ORDER, "limitPrice": "5"},
    {**ORDER, "orderType": "limit"},
    {"tokenIn": "SOL"},
]


async def test_a_bad_request_is_answered_by_its_id_and_the_session_goes_on(
    client: Client,
) -> None:
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        for i, (fields, _, _) in enumerate(BAD_REQUESTS):
            await ws.send_json({"id": i, **fields})
        for i, (fields, code, field) in enumerate(BAD_REQUESTS):
            reply = await s.reply(i)
            assert reply.keys() == {"id", "error"}, fields
            assert (reply["error"]["code"], reply["error"].get("field")) == (code, field), fields
        for i, body in enumerate(BAD_ORDERS):
            reply = await s.request(f"order-{i}", "submit", order=body)
            http = await http_error(client, body)
            assert reply["error"] == http, body  # the same code, message and field
        order_id = await s.submit("good", ORDER)
        await s.until_ended([order_id])
        # An after beyond the order's last event: as the status stream refuses it.
        beyond = await s.request("beyond", "watch", orderId=order_id, after=99)
        assert beyond["error"]["code"] == "invalid_after"
        assert not ws.closed


async def test_ids_of_every_json_scalar_come_back_as_sent(client: Client) -> None:
    raw_ids = ['"a"', "7", "-0", "1.50", "1e400", "123456789012345678901234567890", "true", "null"]
    async with client.ws_connect("/api/session") as ws:
        for raw in raw_ids:
            await ws.send_str(f'{{"id": {raw}, "op": "watch", "orderId": "{UNKNOWN_ID}"}}')
            msg = await ws.receive(timeout=WAIT_S)
            assert msg.type is WSMsgType.TEXT
            reply = json.loads(msg.data, parse_float=str, parse_int=str)
            assert reply["error"]["code"] == "order_not_found"
            sent = json.loads(raw, parse_float=str, parse_int=str)
            assert reply["id"] == sent or float(reply["id"]) == float(sent), (raw, msg.data)


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        "42",
        '"a string"',
        '{"op": "watch"}',
        '{"id": {"a": 1}, "op": "watch"}',
        '{"id": [1], "op": "watch"}',
        '{"id": "\\ud800", "op": "watch"}',
        '{"id": 1, "id": 2, "op": "watch"}',
    ],
    ids=["not-json", "array", "number", "string", "no-id", "object-id", "array-id",
         "surrogate-id", "duplicate-key"],
)  # fmt: skip
async def test_a_request_without_a_usable_id_gets_an_error_then_1008(
    client: Client, frame: str
) -> None:
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        order_id = await s.submit(1, ORDER)  # answered before; its stream ends with the close
        await ws.send_str(frame)
        messages = await read_until_closed(ws)
        assert ws.close_code == CLOSE_POLICY
    errors = [m for m in messages if "error" in m]
    assert len(errors) == 1 and "id" not in errors[0], messages
    assert errors[0]["error"]["code"] in {
        "invalid_json", "invalid_request", "missing_field", "invalid_id", "invalid_text"
    }  # fmt: skip
    assert errors[0] == messages[-1]
    assert all(m["event"]["orderId"] == order_id for m in messages[:-1])


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "id": JSONISH,
        "op": st.sampled_from(["submit", "cancel", "watch", "fly"]) | JSONISH,
        "order": st.sampled_from([ORDER, FAR_LIMIT, {}]) | JSONISH,
        "orderId": st.sampled_from([UNKNOWN_ID]) | JSONISH,
        "after": st.integers(-2, 3) | JSONISH,
        "idempotencyKey": JSONISH,
        "extra": JSONISH,
    },
)
FRAMES = REQUESTS.map(json.dumps) | st.text(max_size=100)


def usable_id(frame: str) -> tuple[bool, Any]:
    """Whether the server can answer the frame by its id, and that id. Text that is not
    UTF-8 without NUL makes the whole frame unreadable (field names too, at any depth)."""
    try:
        request = json.loads(frame)
    except ValueError:
        return False, None
    if not isinstance(request, dict) or "id" not in request or not _names_ok(request):
        return False, None
    request_id = request["id"]
    if isinstance(request_id, str):
        return _text_ok(request_id), request_id
    return not isinstance(request_id, list | dict), request_id


def _text_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _names_ok(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_text_ok(k) and _names_ok(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_names_ok(v) for v in value)
    return True


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=FRAMES)
async def test_any_frame_is_answered_by_its_id_or_refused_then_closed(
    any_store_client: Client, frame: str
) -> None:
    client = any_store_client
    answerable, request_id = usable_id(frame)
    async with client.ws_connect("/api/session") as ws:
        await ws.send_str(frame)
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type is WSMsgType.TEXT, (frame, msg)  # never closed without a word
        reply = msg.json()
        if answerable:
            assert reply["id"] == request_id, (frame, reply)
            assert reply.keys() == {"id", "result"} or reply["error"]["code"], reply
        else:
            assert reply.keys() == {"error"} and reply["error"]["code"], (frame, reply)
            closing = await ws.receive(timeout=WAIT_S)
            assert closing.type is WSMsgType.CLOSE and ws.close_code == CLOSE_POLICY, closing


async def test_requests_under_way_are_answered_before_the_last_word(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """The submit is being stored when the frame without an id arrives: it is answered, then
    the error comes and the session closes, at once (its order's stream is not waited for)."""
    client = await serve(aiohttp_client, tmp_path, market, websocket={"send_timeout_s": 60.0})
    async with client.ws_connect("/api/session") as ws:
        await ws.send_json({"id": 1, "op": "submit", "order": FAR_LIMIT})
        await ws.send_str("not json")
        messages = await read_until_closed(ws, timeout=10)
        assert ws.close_code == CLOSE_POLICY
    assert messages[0]["id"] == 1 and messages[0]["result"]["status"] == "pending"
    assert messages[-1] == {"error": messages[-1]["error"]}
    assert messages[-1]["error"]["code"] == "invalid_json"


# -- cancel, watch, resume ------------------------------------------------------------------


async def test_cancel_over_the_session_ends_the_followed_order(client: Client) -> None:
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        order_id = await s.submit("limit", FAR_LIMIT)
        await s.until(order_id, "open")
        cancelled = await s.request("cancel", "cancel", orderId=order_id)
        await s.until_ended([order_id])
        again = await s.request("again", "cancel", orderId=order_id)
    resp = await client.get(f"/api/order/{order_id}")
    assert cancelled["result"] == (await resp.json())["order"]  # as DELETE answers it
    assert cancelled["result"]["status"] == "cancelled"
    assert [e["status"] for e in s.events[order_id]] == ["pending", "open", "cancelled"]
    assert again["error"]["code"] == "not_cancellable"
    assert again["error"]["status"] == "cancelled"
    assert again["error"]["field"] == "orderId"


async def test_a_late_watch_gets_the_history_then_live_events(
    client: Client, market: SimulatedMarket
) -> None:
    market.chain.hold()  # the order waits at submitted until released
    try:
        order_id = await post_order(client)
        async with client.ws_connect("/api/session") as ws:
            s = Session(ws)
            reply = await s.request("w", "watch", orderId=order_id)
            assert reply["result"] == {"orderId": order_id, "after": 0}
            await s.until(order_id, "submitted")
            market.chain.release()
            await s.until_ended([order_id])
    finally:
        market.chain.release()
    events = s.events[order_id]
    assert events == await stored_events(client, order_id)
    assert [e["status"] for e in events][-2:] == ["submitted", "confirmed"]


async def test_watch_with_after_resumes_across_a_reconnect(
    client: Client, market: SimulatedMarket
) -> None:
    market.chain.hold()
    try:
        async with client.ws_connect("/api/session") as ws:
            first = Session(ws)
            order_id = await first.submit("s", ORDER)
            await first.until(order_id, "building")
            seen = first.events[order_id]
        # A new connection resumes after the last seq the first one saw.
        async with client.ws_connect("/api/session") as ws:
            second = Session(ws)
            reply = await second.request(1, "watch", orderId=order_id, after=seen[-1]["seq"])
            assert reply["result"] == {"orderId": order_id, "after": seen[-1]["seq"]}
            await second.until(order_id, "submitted")
            market.chain.release()
            await second.until_ended([order_id])
            ended = second.events[order_id][-1]["seq"]
            # Resumed after its end: answered, nothing more comes.
            finished = await second.request(2, "watch", orderId=order_id, after=ended)
            assert finished["result"] == {"orderId": order_id, "after": ended}
            # Watched again from the start: the whole history once more.
            whole = await second.request(3, "watch", orderId=order_id)
            assert "result" in whole
            async with asyncio.timeout(WAIT_S):
                while len(second.events[order_id]) < 2 * ended - len(seen):
                    await second.receive()
    finally:
        market.chain.release()
    stored = await stored_events(client, order_id)
    resumed = second.events[order_id]
    assert seen + resumed[: len(stored) - len(seen)] == stored  # no gap, nothing twice
    assert resumed[len(stored) - len(seen) :] == stored  # the whole history, watched again


async def test_watching_a_followed_order_again_is_refused(client: Client) -> None:
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        order_id = await s.submit("limit", FAR_LIMIT)
        again = await s.request("again", "watch", orderId=order_id)
        assert again["error"]["code"] == "already_watching"
        await s.request("cancel", "cancel", orderId=order_id)
        await s.until_ended([order_id])
    assert [e["seq"] for e in s.events[order_id]] == [1, 2, 3]


# -- idempotency ------------------------------------------------------------------------------


async def test_an_idempotency_key_replays_the_order_on_any_session(client: Client) -> None:
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        first = await s.request(1, "submit", order=FAR_LIMIT, idempotencyKey="k-1")
        order_id = first["result"]["orderId"]
        # Replayed while this session follows it: the same order, not a second stream.
        replay = await s.request(2, "submit", order=FAR_LIMIT, idempotencyKey="k-1")
        other = await s.request(3, "submit", order=ORDER, idempotencyKey="k-1")
        await s.request(4, "cancel", orderId=order_id)
        await s.until_ended([order_id])
        # Every frame queued before this answer has been read.
        await s.request(5, "watch", orderId=UNKNOWN_ID)
    assert first["result"]["message"] == "Order submitted successfully."
    assert replay["result"]["orderId"] == order_id
    assert replay["result"]["message"] == "Order already submitted with this Idempotency-Key."
    assert other["error"]["code"] == "idempotency_key_reused"
    assert other["error"]["field"] == "idempotencyKey"
    assert [e["seq"] for e in s.events[order_id]] == [1, 2, 3]  # followed once
    # The key is the POST's too; a new session that replays it gets the order's events.
    resp = await client.post(
        "/api/order/execute", json=FAR_LIMIT, headers={"Idempotency-Key": "k-1"}
    )
    assert (resp.status, (await resp.json())["orderId"]) == (200, order_id)
    async with client.ws_connect("/api/session") as ws:
        later = Session(ws)
        again = await later.request(1, "submit", order=FAR_LIMIT, idempotencyKey="k-1")
        assert again["result"]["orderId"] == order_id
        await later.until_ended([order_id])
    assert later.events[order_id] == await stored_events(client, order_id)


# -- authentication, limits, slow readers -----------------------------------------------------


async def test_another_clients_order_is_not_found_on_the_session(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await serve(
        aiohttp_client, tmp_path, market, auth={"api_keys": (ALICE_ENTRY, BOB_ENTRY)}
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/api/session")
    assert refused.value.status == 401
    async with client.ws_connect("/api/session", headers={"x-api-key": ALICE}) as ws:
        alice = Session(ws)
        order_id = await alice.submit(1, FAR_LIMIT)
        await alice.until(order_id, "open")
        # Browsers pass the key as a query parameter, as on the other WebSockets.
        async with client.ws_connect(f"/api/session?apiKey={BOB}") as bob_ws:
            bob = Session(bob_ws)
            watched = await bob.request(1, "watch", orderId=order_id)
            cancel = await bob.request(2, "cancel", orderId=order_id)
            missing = await bob.request(3, "watch", orderId=UNKNOWN_ID)
            assert watched["error"]["code"] == cancel["error"]["code"] == "order_not_found"
            assert watched["error"]["code"] == missing["error"]["code"]
            assert not bob.events
        mine = await alice.request(2, "cancel", orderId=order_id)
        assert mine["result"]["status"] == "cancelled"
        await alice.until_ended([order_id])


async def test_every_request_counts_against_the_clients_rate_limit(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    # A bucket of 3 that refills one token per 1000 s: the upgrade takes one.
    client = await serve(
        aiohttp_client, tmp_path, market, limits={"requests_per_s": 0.001, "burst": 3}
    )
    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        for i in range(4):
            await s.send(i, "watch", orderId=f"00000000-0000-4000-8000-00000000000{i}")
        codes = [(await s.reply(i))["error"]["code"] for i in range(4)]
        assert codes == ["order_not_found", "order_not_found", "rate_limited", "rate_limited"]
        assert s.replies[2]["error"]["retryAfter"] >= 1
        # The same bucket as HTTP requests.
        assert (await client.get("/api/stats")).status == 429
        assert not ws.closed


def masked_text(payload: bytes) -> bytes:
    """A client's text frame (RFC 6455: clients mask what they send)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


async def test_a_session_that_stops_reading_is_closed(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    huge = 16 * 1024 * 1024  # far more than a loopback socket buffers
    client = await serve(
        aiohttp_client,
        tmp_path,
        market,
        server={"max_body_bytes": 2 * huge},
        websocket={"heartbeat_s": 60.0, "send_timeout_s": 0.2},
    )
    with logged("order_engine.session", "session that does not read") as dropped:
        sock = await stalled_websocket(client, "/api/session")
        try:
            # Its answer echoes the id: more than the client, which reads nothing, takes.
            request = {"id": "x" * huge, "op": "watch", "orderId": UNKNOWN_ID}
            frame = masked_text(json.dumps(request).encode())
            await asyncio.get_running_loop().sock_sendall(sock, frame)
            async with asyncio.timeout(WAIT_S):
                await dropped.wait()
            assert await cut_off(sock)
        finally:
            sock.close()
    assert len(services(client).connections) == 0


# -- scaled out ------------------------------------------------------------------------------


@pytest.fixture
async def scaled_settings(tmp_path: Path) -> AsyncIterator[Settings]:
    """PostgreSQL (a fresh schema) and Redis, as replicas run."""
    redis_url = require_redis()
    async with postgres_schema() as url:
        yield make_settings(
            tmp_path,
            store={"url": url},
            hub={"redis_url": redis_url},
            engine={"claim_interval_ms": 20.0},
        )


async def test_a_session_on_an_api_replica_follows_what_a_worker_executes(
    scaled_settings: Settings, aiohttp_client: Any, market: SimulatedMarket
) -> None:
    """Every event reaches the session through Redis: the replica serving it executes none."""
    api_settings = scaled_settings.replace(engine={"replica_id": "api", "role": "api"})
    api: Client = await aiohttp_client(build_app(api_settings, market=market))
    worker = scaled_settings.replace(engine={"replica_id": "w1", "role": "worker"})
    async with running(worker, market), api.ws_connect("/api/session") as ws:
        s = Session(ws)
        for i in range(100):
            await s.send(i, "submit", order=ORDERS[i % 2])
        async with asyncio.timeout(WAIT_S):
            while len(s.replies) < 100:
                await s.receive()
        order_ids = [s.replies[i]["result"]["orderId"] for i in range(100)]
        await s.until_ended(order_ids)
    for order_id in order_ids:
        assert s.events[order_id] == await stored_events(api, order_id)
        assert s.events[order_id][-1]["status"] == "confirmed"


# -- the documents ----------------------------------------------------------------------------


async def test_the_frames_match_the_openapi_document(client: Client) -> None:
    resp = await client.get("/api/openapi.json")
    doc = await resp.json()
    operation = doc["paths"]["/api/session"]["get"]

    def check(schema: dict[str, Any], message: Any) -> None:
        jsonschema.Draft202012Validator({**doc, **schema}).validate(message)

    async with client.ws_connect("/api/session") as ws:
        s = Session(ws)
        requests = [
            {"id": 1, "op": "submit", "order": ORDER, "idempotencyKey": "doc"},
            {"id": "two", "op": "submit", "order": FAR_LIMIT},
            {"id": 3, "op": "watch", "orderId": UNKNOWN_ID, "after": 0},
        ]
        for request in requests:
            check(operation["x-websocket"]["send"], request)
            await ws.send_json(request)
        order_id = (await s.reply(1))["result"]["orderId"]
        limit_id = (await s.reply("two"))["result"]["orderId"]
        await s.reply(3)
        cancel = {"id": 4, "op": "cancel", "orderId": limit_id}
        check(operation["x-websocket"]["send"], cancel)
        await ws.send_json(cancel)
        await s.until_ended([order_id, limit_id])
        await s.reply(4)
    for frame in s.frames:
        check(operation["x-websocket"]["receive"], frame)


# -- the Python client -------------------------------------------------------------------------


async def test_the_python_client_speaks_the_session(client: Client) -> None:
    base = str(client.make_url("")).rstrip("/")
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    opened, ended = asyncio.Event(), asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        events[event["orderId"]].append(event)
        if event["status"] == "open":  # only the limit order waits open
            opened.set()
        if sum(e[-1]["status"] in TERMINAL for e in events.values()) == 2:
            ended.set()

    async with aiohttp.ClientSession() as http, OrderClient(base).session(http, on_event) as s:
        market = (await s.submit(ORDER))["orderId"]
        limit = (await s.submit(FAR_LIMIT, idempotency_key="py-1"))["orderId"]
        # Replayed while the session follows it: the same order, not a second stream.
        replay = await s.submit(FAR_LIMIT, idempotency_key="py-1")
        assert replay["orderId"] == limit
        with pytest.raises(SessionRefused) as refused:
            await s.submit({**ORDER, "tokenIn": "DOGE"})
        assert refused.value.code == "unknown_token"
        with pytest.raises(ClientOrderNotFound):
            await s.watch(UNKNOWN_ID)
        async with asyncio.timeout(WAIT_S):
            await opened.wait()
        assert (await s.cancel(limit))["status"] == "cancelled"
        with pytest.raises(NotCancellable) as late:
            await s.cancel(limit)
        assert late.value.status == "cancelled"
        async with asyncio.timeout(WAIT_S):
            await ended.wait()
    assert events[market] == await stored_events(client, market)
    assert [e["status"] for e in events[limit]] == ["pending", "open", "cancelled"]


# -- the command line ----------------------------------------------------------------------


async def cli(*args: str, url: str) -> Finished:
    return await run([sys.executable, "-m", "order_engine", *args, "--url", url], timeout=120)


def summary(out: str) -> dict[str, str]:
    """`name value...` lines of the summary `submit --count` prints."""
    return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[1:]}


async def test_submit_count_sends_every_order_over_one_session(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        done = await cli("submit", "SOL", "USDC", "0.1", "--count", "200", url=engine.url)
        assert done.returncode == 0, done
        lines = summary(done.stdout)
        assert done.stdout.splitlines()[0] == "submitting 200 orders over one trading session"
        assert lines["completed"] == "200 confirmed"
        assert lines["failed"] == "0"
        assert re.fullmatch(r"[0-9.]+ s: [0-9.]+ orders/s", lines["took"]), lines
        failing = await cli("submit", "SOL", "USDC", "10000000", "--count", "3", url=engine.url)
        assert failing.returncode == 1  # price impact too high: each one failed
        assert summary(failing.stdout)["failed"] == "3"
        refused = await cli("submit", "SOL", "DOGE", "1", "--count", "3", url=engine.url)
        assert refused.returncode == 2
        assert summary(refused.stdout)["refused"] == "3"
        assert "unknown_token" in refused.stderr
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{engine.url}/api/orders?limit=500") as resp,
        ):
            assert len((await resp.json())["orders"]) == 203


async def test_submit_count_options_are_checked() -> None:
    for args, expected in (
        (["--count", "0"], "must be at least 1"),
        (["--count", "x"], "not a whole number"),
        (["--count", "2", "--client-order-id", "c"], "--client-order-id names one order"),
    ):
        done = await cli("submit", "SOL", "USDC", "1", *args, url="http://127.0.0.1:1")
        assert done.returncode == 2
        assert expected in done.stderr


async def test_submit_count_carries_on_across_a_server_restart(tmp_path: Path) -> None:
    """The server stops (1001) while orders wait on the chain; the client opens a new
    session, watches each order it knows after its last seq, submits the others again under
    the same keys (a replay, never a second order) and follows every one to its end."""
    port = free_port()
    env = {"ORDER_ENGINE_VENUES_PROFILE": "realistic", "ORDER_ENGINE_SERVER_SHUTDOWN_GRACE_S": "0"}
    url = f"http://127.0.0.1:{port}"
    submit = [sys.executable, "-m", "order_engine", "submit", "SOL", "USDC", "0.1"]
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(engine_process(tmp_path, port, **env))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        firehose = await http.ws_connect(f"{url}/api/orders/stream?status=submitted")
        process = await stack.enter_async_context(spawn([*submit, "--count", "20", "--url", url]))
        await firehose.receive_json(timeout=WAIT_S)  # an order waits on the chain
        await firehose.close()
        engine.process.send_signal(signal.SIGTERM)
        await engine.process.wait()
        async with engine_process(tmp_path, port, **env):
            out, err = await asyncio.wait_for(process.communicate(), 90)
            async with http.get(f"{url}/api/orders?limit=500") as resp:
                orders = (await resp.json())["orders"]
    lines = summary(out.decode())
    confirmed, failed = int(lines["completed"].split()[0]), int(lines["failed"])
    assert confirmed + failed == 20, out
    assert "unfinished" not in lines and "refused" not in lines, out
    assert process.returncode == (0 if failed == 0 else 1), err
    assert len(orders) == 20  # submitted again after the restart: replayed, not placed twice
