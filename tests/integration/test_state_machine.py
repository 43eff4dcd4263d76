"""A hypothesis state machine drives the real server: submit, deliver, fail, crash, restart
and reconnect-with-after in any order, limit orders armed, fired by a price move, cancelled
and expired among them, checked against a model after every step."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from order_engine.app import SERVICES, build_app
from order_engine.orders import TRANSITIONS, Status
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.support.factories import ORDER, make_settings
from tests.support.processes import free_port
from tests.support.services import postgres_schema, require_postgres

pytestmark = pytest.mark.slow  # skipped by a plain `make test`: see tests/conftest.py

T = TypeVar("T")
SOL, USDC = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
TERMINAL_FOR = {"will_confirm": "confirmed", "will_fail": "failed"}
# Limit orders waiting: armed under the market (a lift fires them), armed far above it, or
# armed to expire soon.
ARMED = ("near", "far", "will_expire")
MOVE_BPS = 100.0  # a lift: near orders sit 30 bps above the market


class EngineMachine(RuleBasedStateMachine):
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        if self.backend == "postgres":
            require_postgres()  # skips (or fails, in CI) before anything needs closing
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp())
        self.database = AsyncExitStack()
        store, engine = {}, {"max_attempts": 1}
        if self.backend == "postgres":  # a fresh schema per run, dropped in teardown
            store = {"url": self.run(self.database.enter_async_context(postgres_schema()))}
            # A restart keeps the replica id, so it takes back its leased orders at once.
            engine["replica_id"] = "machine"
        # Transactions wait at the chain until `deliver`; one attempt, so a drop fails.
        self.market = SimulatedMarket(PROFILES["instant"], seed=1)
        self.market.chain.hold()
        self.settings = make_settings(self.tmp, engine=engine, store=store)
        # order -> will_confirm | will_fail | confirmed | failed, or one of ARMED, cancelled,
        # expired
        self.model: dict[str, str] = {}
        self.up = False
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    async def _start(self) -> None:
        app = build_app(self.settings, market=self.market)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()
        self.up = True

    async def _crash(self) -> None:
        """As kill -9 would: nothing finishes, nothing is released."""
        assert self.runner is not None and self.http is not None
        services = self.runner.app[SERVICES]
        await services.engine.abort()
        await services.store.abort()  # type: ignore[attr-defined]
        await self.http.close()
        await self.runner.cleanup()
        self.up = False

    async def _stream(
        self,
        order_id: str,
        after: int = 0,
        until: set[str] | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Events from the WebSocket, until the server closes it, a status in `until` or
        `count` events."""
        assert self.http is not None
        url = f"ws://{self.url}/api/order/status?orderId={order_id}&after={after}"
        events = []
        async with self.http.ws_connect(url) as ws:
            async for msg in ws:
                events.append(msg.json())
                if (until and events[-1]["status"] in until) or len(events) == count:
                    break
        return events

    async def _submit(self) -> str:
        assert self.http is not None
        async with self.http.post(f"http://{self.url}/api/order/execute", json=ORDER) as resp:
            assert resp.status == 201
            order_id: str = (await resp.json())["orderId"]
        events = await self._stream(order_id, until={"submitted"})
        # The event is stored before the transaction is sent: wait until the chain has it,
        # so the model knows what a crash now would leave (a sent transaction).
        signature = events[-1]["data"]["txHash"]
        await self.market.chain.received(signature, timeout=5)
        return order_id

    def _price(self) -> Decimal:
        """USDC per SOL the best venue pays for the order's amount now."""
        amount = SOL.to_base(Decimal(str(ORDER["amount"])))
        out = max(v.best_quote(SOL, USDC, amount).amount_out for v in self.market.venues.values())
        return USDC.to_ui(out) / SOL.to_ui(amount)

    async def _submit_limit(self, factor: str, expires_in: float) -> str:
        assert self.http is not None
        price = (self._price() * Decimal(factor)).quantize(Decimal("0.0001"))
        body = {**ORDER, "orderType": "limit", "limitPrice": str(price), "expiresIn": expires_in}
        async with self.http.post(f"http://{self.url}/api/order/execute", json=body) as resp:
            assert resp.status == 201, await resp.text()
            order_id: str = (await resp.json())["orderId"]
        await self._stream(order_id, until={"open", "expired"})
        return order_id

    async def _until_submitted(self, order_id: str) -> None:
        events = await self._stream(order_id, until={"submitted"})
        await self.market.chain.received(events[-1]["data"]["txHash"], timeout=5)

    def stored(self, order_id: str) -> list[Any]:
        assert self.runner is not None
        store = self.runner.app[SERVICES].store
        return [e.to_message() for e in self.run(store.events(order_id))]

    @precondition(lambda self: self.up)
    @rule()
    def submit(self) -> None:
        self.model[self.run(self._submit())] = "will_confirm"

    @precondition(lambda self: self.up)
    @rule()
    def submit_one_that_will_fail(self) -> None:
        self.market.chain.drop_next(1)  # its blockhash expires: one attempt, so it fails
        self.model[self.run(self._submit())] = "will_fail"

    @precondition(lambda self: self.up)
    @rule(near=st.booleans())
    def submit_limit(self, near: bool) -> None:
        factor = "1.003" if near else "1.5"
        self.model[self.run(self._submit_limit(factor, 3600))] = "near" if near else "far"

    @precondition(lambda self: self.up)
    @rule()
    def submit_limit_that_will_expire(self) -> None:
        self.model[self.run(self._submit_limit("1.5", 0.3))] = "will_expire"

    @precondition(lambda self: self.up and "near" in self.model.values())
    @rule()
    def lift_the_price(self) -> None:
        """The market rises through every near order: each fires and is sent."""
        self.market.move_price("SOL", "USDC", MOVE_BPS)
        for order_id, state in list(self.model.items()):
            if state == "near":
                self.run(self._until_submitted(order_id))
                self.model[order_id] = "will_confirm"

    @precondition(lambda self: self.up and any(s in ARMED for s in self.model.values()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from([o for o, s in self.model.items() if s in ARMED]))
        assert self.http is not None

        async def delete() -> tuple[int, dict[str, Any]]:
            assert self.http is not None
            async with self.http.delete(f"http://{self.url}/api/order/{order_id}") as resp:
                return resp.status, await resp.json()

        status, body = self.run(delete())
        if status == 200:
            assert body["status"] == "cancelled"
            self.model[order_id] = "cancelled"
        else:  # it expired first: one of them wins, never both
            assert self.model[order_id] == "will_expire" and status == 409, body
            assert body["error"]["status"] == "expired"
            self.model[order_id] = "expired"

    @precondition(lambda self: self.up and "will_expire" in self.model.values())
    @rule()
    def wait_for_expiry(self) -> None:
        for order_id, state in list(self.model.items()):
            if state == "will_expire":
                events = self.run(self._stream(order_id))
                assert events[-1]["status"] == "expired", events
                self.model[order_id] = "expired"

    @precondition(lambda self: self.up)
    @rule()
    def deliver(self) -> None:
        self.market.chain.release()
        self.market.chain.hold()
        for order_id, expected in list(self.model.items()):
            if expected in TERMINAL_FOR:
                events = self.run(self._stream(order_id))
                assert events[-1]["status"] == TERMINAL_FOR[expected], events
                self.model[order_id] = TERMINAL_FOR[expected]

    @precondition(lambda self: self.up)
    @rule()
    def crash(self) -> None:
        self.run(self._crash())

    @precondition(lambda self: not self.up)
    @rule()
    def restart(self) -> None:
        self.run(self._start())

    @precondition(lambda self: self.up and bool(self.model))
    @rule(data=st.data())
    def reconnect_with_after(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(list(self.model)))  # in submission order
        stored = self.stored(order_id)
        # Drawn from a fixed range, then bounded: how many events are stored by now depends on
        # the machine's timing, and a range that did would make hypothesis's replay differ.
        after = min(data.draw(st.integers(0, 16)), len(stored))
        expected = stored[after:]
        state = self.model[order_id]
        if state in TERMINAL_FOR or state in ARMED:  # not finished: read what there is
            if not expected:
                return
            seen = self.run(self._stream(order_id, after, count=len(expected)))
        else:
            seen = self.run(self._stream(order_id, after))
        assert seen == expected

    @precondition(lambda self: self.up)
    @invariant()
    def every_history_is_gap_free_and_legal(self) -> None:
        for order_id, state in self.model.items():
            events = self.stored(order_id)
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            statuses = [Status(e["status"]) for e in events]
            for move in itertools.pairwise(statuses):
                assert move in TRANSITIONS, statuses
            if state in ("near", "far"):
                assert statuses[-1] is Status.OPEN, statuses
            elif state == "will_expire":
                assert statuses[-1] in (Status.OPEN, Status.EXPIRED), statuses
            elif state in ("cancelled", "expired"):
                assert statuses[-1].value == state
                assert Status.ROUTING not in statuses  # it never executed
            elif state in TERMINAL_FOR:
                assert statuses[-1] in (Status.SUBMITTED, Status.CONFIRMED, Status.FAILED)
            else:
                assert statuses[-1].value == state
                assert statuses.count(Status.SUBMITTED) == 1
        landed = [entry.signature for entry in self.market.chain.ledger]
        assert len(landed) == len(set(landed))
        assert len(landed) == sum(1 for s in self.model.values() if s == "confirmed")

    def teardown(self) -> None:
        if self.up:
            self.run(self._crash())
        self.run(self.database.aclose())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


EngineMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
TestEngineMachine = EngineMachine.TestCase


class PostgresEngineMachine(EngineMachine):
    """The same machine over PostgreSQL: a crash there leaves its orders leased to the
    replica, which takes them back when it restarts under the same id."""

    backend = "postgres"


# Fewer runs: each step costs more round trips to the server than to a SQLite file.
PostgresEngineMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=20, deadline=None
)
TestPostgresEngineMachine = PostgresEngineMachine.TestCase
