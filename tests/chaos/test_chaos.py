"""Jepsen-style chaos: real engine processes killed with SIGKILL at random (seeded) moments
while clients submit orders at a steady rate and watch each one on a WebSocket, retrying and
resuming (`after=<last seq>`) across the kills. The chain service outlives the engines, so
its ledger records every swap that really landed. At the end the history, the store and the
ledger go to the checker (tests/chaos/history.py), which must find no anomaly.

A quarter of the orders are limit orders, priced from what the best venue pays for their
amount when they are placed: "near" ones a little above it (drift or a lift fires them),
"far" ones 25-40 % above (never reached: they must still be open at the end), "expiring"
ones far and expiring within seconds. The market is lifted (`POST /admin/move` on the
chain) at seeded moments, by the nemesis too (a kill as a client sees an order armed, then a
lift while the engine is down; a lift, then a kill as a client sees an order fire), and once
more at the end, past every near limit, so every near order executes. Some clients cancel
their limit order (at a seeded moment, or right after a lift, racing the fire), retrying the
DELETE across kills. Once all is quiet, the replicas say how many orders they hold armed.

Set ORDER_ENGINE_CHAOS_SEED to replay another schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from order_engine.store import store_from_url
from order_engine.venues.tokens import REGISTRY
from tests.chaos.history import (
    EXPIRING,
    FAR,
    FINAL_LIFT,
    MARKET,
    NEAR,
    TERMINAL_STATUSES,
    Cancel,
    History,
    StoredOrder,
    check,
    stored_order,
    summary,
)
from tests.support.processes import Process, free_port, launch, redis_server
from tests.support.services import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.slow  # skipped by a plain `make test`: see tests/conftest.py

SEED = int(os.environ.get("ORDER_ENGINE_CHAOS_SEED", "20251125"))
CLIENTS = 8  # client ids in the history: order i belongs to client i % CLIENTS
STALL_S = 10.0  # a watcher that hears nothing this long reconnects (and the history says so)
POST_TIMEOUT_S = 10.0

# Transactions take 0.3-1.5 s to land and 5 % expire (retried with fresh quotes), so a kill
# finds orders at every stage; the market drifts, so some revert on slippage and retry too.
CHAIN_CONFIG = """
[profiles.chaos]
quote_latency_ms = [20.0, 150.0]
land_latency_ms = [300.0, 1500.0]
blockhash_validity_slots = 10  # 4 s: a transaction unseen after a kill is settled soon
drop_rate = 0.05
drift_interval_ms = 250.0
drift_sigma_bps = 8.0
drift_reversion = 0.02
"""

# (tokenIn, tokenOut, low, high, decimals): small orders on pools both venues hold.
PAIRS = [
    ("SOL", "USDC", 0.05, 3.0, 2),
    ("USDC", "SOL", 5.0, 400.0, 2),
    ("SOL", "USDT", 0.05, 2.0, 2),
    ("USDT", "USDC", 5.0, 500.0, 2),
    ("JUP", "USDC", 1.0, 200.0, 1),
    ("USDC", "RAY", 5.0, 200.0, 1),
    ("BONK", "SOL", 10_000.0, 2_000_000.0, 0),
]

# Limit orders: this share of all orders, on pairs whose input token a lift makes dearer.
LIMIT_SHARE = 0.25
LIMIT_PAIRS = [
    ("SOL", "USDC", 0.05, 3.0, 2),
    ("SOL", "USDT", 0.05, 2.0, 2),
    ("JUP", "USDC", 1.0, 200.0, 1),
]
LIFTED = ("SOL", "JUP")  # what lifts move (their USD price; USDC and USDT stay)
KIND_WEIGHTS = {NEAR: 0.5, FAR: 0.35, EXPIRING: 0.15}
NEAR_BPS = (5.0, 60.0)  # a near limit lies this far above what the best venue pays now
# A far limit lies this far above: more than every lift of a run together (at most 6 of
# 120 bps on one token, then the final 300) plus the pools' own noise (~40 bps).
FAR_BPS = (2500.0, 4000.0)
ARMED_EXPIRY_S = 3600  # near and far orders: outlive the run
EXPIRING_S = (2.0, 6.0)
CANCEL_SHARE = 0.35  # of limit orders, cancelled by their client
LIFT_BPS = (30.0, 120.0)
SCHEDULED_LIFTS = 4
FINAL_LIFT_BPS = 300.0  # past every near limit, however the market drifted
VENUES = ("Raydium", "Meteora")

UNFINISHED = "WHERE status NOT IN ({})".format(
    ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
)

# Environment variables the engine's configuration would take over ours from.
NEUTRAL_ENV = {"DATABASE_URL": "", "POSTGRES_HOST": "", "REDIS_URL": "", "REDIS_HOST": ""}


def order_body(rng: random.Random) -> dict[str, Any]:
    token_in, token_out, low, high, decimals = rng.choice(PAIRS)
    amount = f"{rng.uniform(low, high):.{decimals}f}"
    return {
        "tokenIn": token_in,
        "tokenOut": token_out,
        "amount": amount,
        "slippageBps": rng.choice([30, 50, 100, 300]),
    }


def order_kind(i: int) -> str:
    """Order i's kind, from its own seeded stream (market orders keep their bodies)."""
    rng = random.Random(f"{SEED}/{i}/kind")
    if rng.random() >= LIMIT_SHARE:
        return MARKET
    return rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]


def limit_text(price: Decimal) -> str:
    """8 significant digits, rounded up (a limit never below the price it was meant as)."""
    step = Decimal(1).scaleb(price.adjusted() - 7)
    return format(price.quantize(step, rounding=ROUND_CEILING), "f")


def backoff(attempt: int, rng: random.Random) -> float:
    ceiling = min(1.0, 0.05 * 2**attempt)
    return rng.uniform(ceiling / 2, ceiling)


# -- processes -----------------------------------------------------------------------------


class Replica:
    """An engine process that can be killed (SIGKILL) and started again on the same port,
    with the same replica id and store."""

    def __init__(self, name: str, tmp_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"engine-{name}.log"
        self.env = {
            **NEUTRAL_ENV,
            **env,
            "PORT": str(self.port),
            "ORDER_ENGINE_ENGINE_REPLICA_ID": name,
        }
        self._running: AbstractAsyncContextManager[Process] | None = None
        self._process: Process | None = None

    async def start(self) -> None:
        running = launch(
            [sys.executable, "-m", "order_engine"], "listening on", self.url, self.log, self.env
        )
        self._process = await running.__aenter__()
        self._running = running

    async def kill(self) -> None:
        assert self._process is not None and self._running is not None
        self._process.kill()
        await self._process.process.wait()
        running, self._running, self._process = self._running, None, None
        await running.__aexit__(None, None, None)

    async def stop(self) -> None:
        """SIGTERM, waited for (a no-op when it is down)."""
        running, self._running, self._process = self._running, None, None
        if running is not None:
            await running.__aexit__(None, None, None)


def chain_service(tmp_path: Path) -> AbstractAsyncContextManager[Process]:
    config = tmp_path / "chain.toml"
    config.write_text(CHAIN_CONFIG)
    port = free_port()
    args = [
        sys.executable, "-m", "order_engine.chain", "--port", str(port),
        "--config", str(config), "--profile", "chaos", "--seed", str(SEED),
    ]  # fmt: skip
    return launch(args, "listening on", f"http://127.0.0.1:{port}", tmp_path / "chain.log")


# -- the clients -----------------------------------------------------------------------------


class CancelsSent:
    """A client session's trace configuration that sees each DELETE on the wire (its
    headers written; it has no body): from then on the server may act on it. Its cancel
    (the request's trace context) is marked sent, and the listener told."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.config = aiohttp.TraceConfig()
        self.config.on_request_headers_sent.append(self._sent)
        self.listener: Callable[[], None] | None = None

    async def _sent(
        self,
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        op = context.trace_request_ctx
        if isinstance(op, Cancel):
            self.history.cancel_sent(op)
            if self.listener is not None:
                self.listener()


class Workload:
    """Submits `count` orders at `rate` per second, each by a client that retries until it
    is acknowledged (a fresh clientOrderId per attempt) and then watches it to its end (a
    far limit order: until the run is over). Some limit orders' clients cancel them."""

    def __init__(
        self,
        history: History,
        http: aiohttp.ClientSession,
        cancels_sent: CancelsSent,
        targets: Sequence[str],
        deadline: float,
        chain_url: str,
    ) -> None:
        """`cancels_sent`: `http`'s, to fire the "cancel" stage."""
        self.history = history
        self.http = http
        self.targets = list(targets)
        self.deadline = deadline  # loop time; nothing is attempted after it
        self.chain_url = chain_url
        self.posts_in_flight: Counter[str] = Counter()  # target -> POSTs awaiting an answer
        self.deletes_in_flight: Counter[str] = Counter()  # target -> DELETEs likewise
        # The nemesis waits on these to kill at a given stage: "intake" (a POST in flight),
        # "cancel" (a DELETE in flight), "fired" (a limit order's routing event with its
        # trigger) or an order status some client just received.
        self._triggers: dict[str, asyncio.Event] = {}
        # Token -> set at its next lift (then replaced): cancels that race the fire.
        self.lifted: dict[str, asyncio.Event] = {token: asyncio.Event() for token in LIFTED}
        cancels_sent.listener = lambda: self._fire("cancel")
        self.ending = asyncio.Event()  # the run is over: watchers of armed orders stop
        self.watched: set[str] = set()  # orders some client watches (or watched)
        self.tasks: list[asyncio.Task[None]] = []  # each order's client, to its end
        self.armed_watchers: list[asyncio.Task[None]] = []  # far orders': until `ending`

    def trigger(self, stage: str) -> asyncio.Event:
        event = self._triggers[stage] = asyncio.Event()
        return event

    def _fire(self, stage: str) -> None:
        event = self._triggers.get(stage)
        if event is not None:
            event.set()

    async def run(self, count: int, rate: float) -> None:
        """Start every order's client at its time; return once each submit was answered
        (or given up at the deadline)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        submitted: list[asyncio.Future[None]] = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            submitted.append(loop.create_future())
            self.tasks.append(asyncio.create_task(self.order(i, submitted[-1])))
        await asyncio.gather(*submitted)

    async def finish(self) -> None:
        """Every order's client done: watched to its end, cancelled or refused."""
        await asyncio.gather(*self.tasks)

    async def order(self, i: int, submitted: asyncio.Future[None]) -> None:
        rng = random.Random(f"{SEED}/{i}")
        kind = order_kind(i)
        loop = asyncio.get_running_loop()
        order_id: str | None = None
        try:
            if kind == MARKET:
                base = order_body(rng)
            else:
                base = await self.limit_body(kind, random.Random(f"{SEED}/{i}/limit"))
            attempt = 0
            while order_id is None and loop.time() < self.deadline:
                body = {**base, "clientOrderId": f"chaos-{SEED}-{i}-{attempt}"}
                order_id = await self.submit(i % CLIENTS, body, rng.choice(self.targets), kind)
                attempt += 1
                if order_id is None:
                    await asyncio.sleep(backoff(attempt, rng))
        finally:
            submitted.set_result(None)
        if order_id is None:
            return
        canceller = None
        plan = random.Random(f"{SEED}/{i}/cancel")
        if kind != MARKET and plan.random() < CANCEL_SHARE:
            canceller = asyncio.create_task(
                self.cancel_later(i % CLIENTS, order_id, kind, base, plan)
            )
        if kind == FAR:
            watcher = self.watch(order_id, rng, until=self.ending)
            self.armed_watchers.append(asyncio.create_task(watcher))
        else:
            await self.watch(order_id, rng, stall=STALL_S if kind == MARKET else None)
        if canceller is not None:
            await canceller

    async def limit_body(self, kind: str, rng: random.Random) -> dict[str, Any]:
        """A limit order priced from what the best venue pays for its amount now."""
        token_in, token_out, low, high, decimals = rng.choice(LIMIT_PAIRS)
        amount = f"{rng.uniform(low, high):.{decimals}f}"
        price = await self.market_price(token_in, token_out, Decimal(amount))
        above = rng.uniform(*(NEAR_BPS if kind == NEAR else FAR_BPS))
        expiry = round(rng.uniform(*EXPIRING_S), 1) if kind == EXPIRING else ARMED_EXPIRY_S
        return {
            "tokenIn": token_in,
            "tokenOut": token_out,
            "amount": amount,
            "slippageBps": rng.choice([30, 50, 100, 300]),
            "orderType": "limit",
            "limitPrice": limit_text(price * (1 + Decimal(above) / 10_000)),
            "expiresIn": expiry,
        }

    async def market_price(self, token_in: str, token_out: str, amount: Decimal) -> Decimal:
        """tokenOut per tokenIn the best single venue pays for `amount` now, fees and impact
        included: what a limit order's trigger compares with its limit. Asked of the chain,
        which outlives every kill."""
        tin, tout = REGISTRY.resolve(token_in), REGISTRY.resolve(token_out)
        body = {"tokenIn": token_in, "tokenOut": token_out, "amountIn": str(tin.to_base(amount))}

        async def quote(venue: str) -> int | None:
            url = f"{self.chain_url}/venues/{venue}/quote"
            async with self.http.post(url, json=body) as resp:
                payload = await resp.json(content_type=None)
                return int(payload["quote"]["amountOut"]) if resp.status == 200 else None

        paid = [out for out in await asyncio.gather(*map(quote, VENUES)) if out is not None]
        assert paid, f"no venue quotes {amount} {token_in} -> {token_out}"
        return tout.to_ui(max(paid)) / amount

    async def submit(
        self, client: int, body: dict[str, Any], target: str, kind: str = MARKET
    ) -> str | None:
        op = self.history.submit_started(client, body, target, kind)
        self.posts_in_flight[target] += 1
        self._fire("intake")
        try:
            async with self.http.post(
                f"{target}/api/order/execute",
                json=body,
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status == 201:
                    order_id: str = payload["orderId"]
                    self.history.acknowledged(op, resp.status, order_id)
                    return order_id
                self.history.refused(op, resp.status, json.dumps(payload)[:300])
        except aiohttp.ClientConnectorError as exc:
            # The connection never opened: nothing was sent.
            self.history.refused(op, None, f"connect: {exc}")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            # Sent, maybe stored, never answered.
            self.history.indeterminate(op, repr(exc))
        finally:
            self.posts_in_flight[target] -= 1
        return None

    async def watch(
        self,
        order_id: str,
        rng: random.Random,
        *,
        stall: float | None = STALL_S,
        until: asyncio.Event | None = None,
    ) -> None:
        """Watch to the order's terminal event, or until `until` is set (an order armed
        far from the market). `stall`: reconnect after this long without a message (None:
        silence is normal, as for an armed order)."""
        self.watched.add(order_id)
        loop = asyncio.get_running_loop()
        last = 0
        done = False
        attempt = 0
        while not done and loop.time() < self.deadline and not (until and until.is_set()):
            target = rng.choice(self.targets)
            query = f"orderId={order_id}" + (f"&after={last}" if last else "")
            url = target.replace("http://", "ws://") + f"/api/order/status?{query}"
            conn = self.history.opened(order_id, last, target)
            close_code: int | None = None
            error: str | None = None
            stalled = False
            try:
                async with (
                    asyncio.timeout_at(self.deadline),
                    self.http.ws_connect(url, heartbeat=None) as ws,
                ):
                    while True:
                        msg = await _receive(ws, stall, until)
                        if msg is None:
                            error = "run over"
                            break
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                        message = msg.json()
                        self.history.received(conn, message)
                        if "seq" in message:
                            self._fire(str(message.get("status")))
                            if (message.get("data") or {}).get("trigger"):
                                self._fire("fired")
                            last = max(last, int(message["seq"]))
                            done = done or message.get("status") in TERMINAL_STATUSES
                    close_code = ws.close_code
            except TimeoutError:
                stalled = loop.time() < self.deadline
                error = "stalled" if stalled else "deadline"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = repr(exc)
            self.history.closed(conn, close_code, error, stalled=stalled)
            if close_code == 4404:
                return  # the checker reports it: an acknowledged order the server denies
            if not done and not (until and until.is_set()):
                attempt += 1
                await asyncio.sleep(backoff(attempt, rng))

    # -- cancels ------------------------------------------------------------------------

    async def cancel_later(
        self, client: int, order_id: str, kind: str, body: dict[str, Any], rng: random.Random
    ) -> None:
        """Cancel at a seeded moment: a near order's client half the time right after the
        next lift of its token (racing the fire), else 0.3-6 s after the acknowledgement;
        an expiring order's client around its expiry (racing it)."""
        loop = asyncio.get_running_loop()
        if kind == NEAR and rng.random() < 0.5:
            lifted = self.lifted[body["tokenIn"]]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self.deadline):
                    await lifted.wait()
        elif kind == EXPIRING:
            await asyncio.sleep(max(0.0, float(body["expiresIn"]) + rng.uniform(-1.0, 0.3)))
        else:
            await asyncio.sleep(rng.uniform(0.3, 6.0))
        if loop.time() < self.deadline:
            await self.cancel(client, order_id, rng)

    async def cancel(self, client: int, order_id: str, rng: random.Random) -> None:
        """DELETE until a definite answer: 200 (cancelled), 409 (not cancellable: its
        status), 404. A dropped connection or an error answer leaves it indeterminate (a
        refused connection or a 429 does not: nothing was done): ask again."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while loop.time() < self.deadline:
            target = rng.choice(self.targets)
            op = self.history.cancel_started(client, order_id, target)
            self.deletes_in_flight[target] += 1
            try:
                async with self.http.delete(
                    f"{target}/api/order/{order_id}",
                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
                    trace_request_ctx=op,
                ) as resp:
                    status = resp.status
                    payload = await resp.json(content_type=None)
            except aiohttp.ClientConnectorError as exc:
                if op.sent:  # the client's own second try failed to connect: the first?
                    self.history.cancel_indeterminate(op, f"sent, then connect: {exc}")
                else:
                    self.history.cancel_refused(op, None, f"connect: {exc}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.history.cancel_indeterminate(op, repr(exc))
            else:
                answer = payload if isinstance(payload, dict) else {}
                error = answer.get("error") if isinstance(answer.get("error"), dict) else None
                text = json.dumps(payload)[:300]
                if status == 200:
                    self.history.cancel_answered(op, status, answer.get("status"))
                    return
                if status in (404, 409):
                    self.history.cancel_answered(op, status, (error or {}).get("status"), text)
                    return
                if status == 429:  # rate limited before it was looked at
                    self.history.cancel_refused(op, status, text)
                else:  # a failed write may have committed all the same
                    self.history.cancel_indeterminate(op, text, status)
            finally:
                self.deletes_in_flight[target] -= 1
            attempt += 1
            await asyncio.sleep(backoff(attempt, rng))

    # -- the market ---------------------------------------------------------------------

    async def lift(self, token: str, bps: float, why: str) -> None:
        """Move token's fair price up by `bps` (in USDC) on the chain, at once; then wake
        the cancels waiting for it."""
        body = {"tokenA": token, "tokenB": "USDC", "bps": bps}
        try:
            async with self.http.post(
                f"{self.chain_url}/admin/move",
                json=body,
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status == 200:
                    self.history.lifted(token, "USDC", bps, why, payload["move"])
                else:
                    error = f"{resp.status} {json.dumps(payload)[:300]}"
                    self.history.lifted(token, "USDC", bps, why, None, error)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            self.history.lifted(token, "USDC", bps, why, None, repr(exc))
        lifted, self.lifted[token] = self.lifted[token], asyncio.Event()
        lifted.set()


async def _receive(
    ws: aiohttp.ClientWebSocketResponse, stall: float | None, until: asyncio.Event | None
) -> aiohttp.WSMessage | None:
    """The next message (TimeoutError after `stall` s of silence); None once `until` is
    set first."""
    if until is None:
        return await ws.receive(timeout=stall)
    if until.is_set():
        return None
    receiving = asyncio.ensure_future(ws.receive(timeout=stall))
    stopping = asyncio.ensure_future(until.wait())
    try:
        await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not receiving.done():
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
    return None if receiving.cancelled() else receiving.result()


async def lift_schedule(workload: Workload, rng: random.Random, span: float) -> None:
    """`SCHEDULED_LIFTS` lifts at seeded moments within the first `span` s, each of a
    seeded lifted token by 30-120 bps: near orders fire whatever the nemesis does."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at in sorted(rng.uniform(1.0, span) for _ in range(SCHEDULED_LIFTS)):
        await asyncio.sleep(max(0.0, start + at - loop.time()))
        await workload.lift(rng.choice(LIFTED), round(rng.uniform(*LIFT_BPS)), "schedule")


STAGES = ["intake", "pending", "routing", "building", "submitted"]
# Limit orders: "open", kill as a client sees an order armed, and lift a price while the
# engine is down (armed again from the store, it must fire then); "fired", lift, then kill
# as a client sees an order fire (its execution is under way); "cancel", kill the replica a
# DELETE was just sent to (it may or may not have cancelled: the client asks again).
LIMIT_STAGES = ["open", "fired", "cancel"]
# Stages that kill a replica a request waits on.
REQUEST_STAGES = {"intake", "cancel"}


async def nemesis(
    history: History,
    replicas: Sequence[Replica],
    workload: Workload,
    kills: int,
    rng: random.Random,
    max_down: float = 0.0,
) -> None:
    """`kills` times: after a seeded pause of 1-2.5 s, pick a stage (every limit stage,
    then every other stage in turn, in seeded order), wait until a client sees an order
    reach it (or a POST is in flight, for "intake", a DELETE for "cancel"; at most 3 s),
    and kill -9 a seeded random replica at once (for "intake" and "cancel", one such a
    request waits on); restart it after a seeded pause of up to `max_down` s. "fired" lifts
    a price first, "open" while the replica is down. "cancel" waits for a DELETE whose
    request is sent: killed now, the replica may or may not have cancelled."""
    plan = list(LIMIT_STAGES)
    while len(plan) < kills:
        plan += rng.sample(STAGES, len(STAGES))
    plan = plan[:kills]
    rng.shuffle(plan)
    for stage in plan:
        await asyncio.sleep(rng.uniform(1.0, 2.5))
        token, bps = rng.choice(LIFTED), round(rng.uniform(*LIFT_BPS))
        trigger = workload.trigger(stage)
        if stage == "fired":
            await workload.lift(token, bps, "then a kill")
        requests = workload.deletes_in_flight if stage == "cancel" else workload.posts_in_flight
        # "cancel" waits for a DELETE on the wire: one only started would find the port
        # closed, and be no question at all.
        if stage != "intake" or not +requests:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    await trigger.wait()
        busy = [r for r in replicas if requests[r.url] > 0]
        replica = rng.choice(busy if stage in REQUEST_STAGES and busy else list(replicas))
        history.killed(replica.name, stage)
        await replica.kill()
        if stage == "open":
            await workload.lift(token, bps, "while down")
        if max_down:
            await asyncio.sleep(rng.uniform(0.0, max_down))
        await replica.start()


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    history: History
    store: dict[str, StoredOrder]
    ledger: list[dict[str, Any]]


async def chaos_run(
    *,
    replicas: Sequence[Replica],
    chain: Process,
    store_url: str,
    order_ids: Callable[[], Awaitable[list[str]]],
    unfinished: Callable[[], Awaitable[list[tuple[str, str | None]]]],
    orders: int,
    rate: float,
    kills: int,
    max_down: float = 0.0,
) -> Run:
    """`unfinished`: (orderId, clientOrderId) of every order not (yet) terminal."""
    history = History()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + orders / rate + 40
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    cancels_sent = CancelsSent(history)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=timeout,
        trace_configs=[cancels_sent.config],
    ) as http:
        urls = [r.url for r in replicas]
        workload = Workload(history, http, cancels_sent, urls, deadline, chain.url)
        chaos = asyncio.create_task(
            nemesis(history, replicas, workload, kills, random.Random(SEED), max_down)
        )
        lifts = asyncio.create_task(
            lift_schedule(workload, random.Random(f"{SEED}/lifts"), orders / rate)
        )
        drain_armed: list[asyncio.Task[None]] = []
        try:
            await workload.run(orders, rate)
            await chaos
            await lifts
            # Every order is placed and every replica up: lift past every near limit, so
            # each near order still armed fires (once armed, if it was still pending).
            for token in LIFTED:
                await workload.lift(token, FINAL_LIFT_BPS, FINAL_LIFT)
            await workload.finish()
            # Orders of indeterminate submits had no watcher: watch what is still
            # unfinished to its end too (the history records these streams; the checker
            # judges them). A far one stays open: watched until the run is over.
            kinds = {op.client_order_id: op.kind for op in history.submits}
            drain = []
            for order_id, client_order_id in await unfinished():
                if order_id in workload.watched:
                    continue
                rng = random.Random(f"{SEED}/drain/{order_id}")
                if kinds.get(client_order_id) == FAR:
                    watcher = workload.watch(order_id, rng, until=workload.ending)
                    drain_armed.append(asyncio.create_task(watcher))
                else:
                    drain.append(workload.watch(order_id, rng))
            await asyncio.gather(*drain)
            # All quiet: only far orders are still open (no kill, lift or cancel to come).
            workload.ending.set()
            await asyncio.gather(*workload.armed_watchers, *drain_armed)
            open_orders = len(await unfinished())  # far ones, if all went right
            asked = loop.time()
            history.armed_at_end = await armed_when_settled(http, replicas, open_orders)
            history.armed_settled_s = round(loop.time() - asked, 3)
            async with http.get(f"{chain.url}/admin/ledger") as resp:
                ledger: list[dict[str, Any]] = (await resp.json())["entries"]
        finally:
            # On a failure, nothing may go on killing and starting replicas while the
            # test tears them down (a no-op otherwise: all is done).
            await _cancel([chaos, lifts, *workload.tasks, *workload.armed_watchers, *drain_armed])
    for replica in replicas:
        await replica.stop()
    store = store_from_url(store_url, owner="chaos-checker")
    await store.open()
    try:
        contents = {}
        for order_id in await order_ids():
            order = await store.get(order_id)
            assert order is not None
            contents[order_id] = stored_order(order, await store.events(order_id))
    finally:
        await store.close()
    return Run(history, contents, ledger)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# A replica arms the open orders it resumes once it listens (and, scaled out, those of a
# dead one once their leases expire): this long, at most, until all are armed again.
ARMED_SETTLE_S = 5.0


async def armed_when_settled(
    http: aiohttp.ClientSession, replicas: Sequence[Replica], expected: int
) -> dict[str, int]:
    """Each replica's armed limit orders, asked again until they add up to `expected` (the
    orders the store holds open) or `ARMED_SETTLE_S` passed: the checker judges the last."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + ARMED_SETTLE_S
    while True:
        armed = {r.name: await armed_orders(http, r) for r in replicas}
        if sum(armed.values()) == expected or loop.time() >= give_up:
            return armed
        await asyncio.sleep(0.1)


async def armed_orders(http: aiohttp.ClientSession, replica: Replica) -> int:
    """How many limit orders the replica holds armed."""
    async with http.get(f"{replica.url}/api/stats") as resp:
        assert resp.status == 200, f"{replica.name}: GET /api/stats answered {resp.status}"
        count: int = (await resp.json())["openOrders"]["limit"]
        return count


def judge(run: Run, tmp_path: Path) -> None:
    anomalies = check(run.history, run.store, run.ledger)
    report = summary(run.history, run.store, run.ledger, anomalies)
    run.history.dump(tmp_path / "history.json")
    print(f"\nchaos (seed {SEED}): {json.dumps(report)}")
    assert not anomalies, "\n".join([json.dumps(report), *anomalies[:30]])
    # The scenario happened: kills, lifts the chain made, limit orders fired before the
    # final lift (amid the kills), far ones still armed at the end, cancels that won.
    assert report["kills"] >= 1
    assert all(lift.answer is not None for lift in run.history.lifts), [
        (lift.why, lift.error) for lift in run.history.lifts if lift.answer is None
    ]
    assert report["fired_before_final_lift"] >= 1, report
    assert report["limit_orders"][FAR].get("open", 0) >= 1, report
    assert report["cancels"].get("200:cancelled", 0) >= 1, report


# -- the tests -------------------------------------------------------------------------------


async def test_sqlite_engine_killed_repeatedly(tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    store_url = f"sqlite:///{db}"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute(sql).fetchall()

    async def order_ids() -> list[str]:
        return [r[0] for r in query("SELECT order_id FROM orders")]

    async def unfinished() -> list[tuple[str, str | None]]:
        return [
            (r[0], r[1])
            for r in query(f"SELECT order_id, client_order_id FROM orders {UNFINISHED}")
        ]

    async with AsyncExitStack() as stack:
        chain = await stack.enter_async_context(chain_service(tmp_path))
        engine = Replica(
            "solo",
            tmp_path,
            {
                "ORDER_ENGINE_STORE_URL": store_url,
                "ORDER_ENGINE_VENUES_CHAIN_URL": chain.url,
                # Few workers: orders queue up (pending) between kills, as under load.
                "ORDER_ENGINE_ENGINE_WORKERS": "4",
                "ORDER_ENGINE_ENGINE_RETRY_BASE_MS": "50",
                "ORDER_ENGINE_ENGINE_RETRY_MAX_MS": "500",
            },
        )
        await engine.start()
        stack.push_async_callback(engine.stop)
        run = await chaos_run(
            replicas=[engine],
            chain=chain,
            store_url=store_url,
            order_ids=order_ids,
            unfinished=unfinished,
            orders=300,
            rate=20,
            kills=7,
        )
    judge(run, tmp_path)


@pytest.fixture
async def postgres() -> AsyncIterator[tuple[str, str]]:
    async with postgres_schema() as store_url:
        yield store_url, store_url.split("schema=")[1]


async def test_postgres_replicas_killed_repeatedly(
    tmp_path: Path, postgres: tuple[str, str]
) -> None:
    store_url, schema = postgres

    async def fetch(sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql)
            return rows
        finally:
            await conn.close()

    async def order_ids() -> list[str]:
        return [r["order_id"] for r in await fetch(f'SELECT order_id FROM "{schema}".orders')]

    async def unfinished() -> list[tuple[str, str | None]]:
        sql = f'SELECT order_id, client_order_id FROM "{schema}".orders {UNFINISHED}'
        return [(r["order_id"], r["client_order_id"]) for r in await fetch(sql)]

    async with AsyncExitStack() as stack:
        redis_port = free_port()
        await stack.enter_async_context(redis_server(redis_port, tmp_path))
        chain = await stack.enter_async_context(chain_service(tmp_path))
        env = {
            "ORDER_ENGINE_STORE_URL": store_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ORDER_ENGINE_VENUES_CHAIN_URL": chain.url,
            "ORDER_ENGINE_ENGINE_LEASE_S": "1.0",
            "ORDER_ENGINE_ENGINE_CLAIM_INTERVAL_MS": "50",
            "ORDER_ENGINE_ENGINE_WORKERS": "3",
            "ORDER_ENGINE_ENGINE_RETRY_BASE_MS": "50",
            "ORDER_ENGINE_ENGINE_RETRY_MAX_MS": "500",
        }
        replicas = [Replica("a", tmp_path, env), Replica("b", tmp_path, env)]
        for replica in replicas:
            await replica.start()
            stack.push_async_callback(replica.stop)
        run = await chaos_run(
            replicas=replicas,
            chain=chain,
            store_url=store_url,
            order_ids=order_ids,
            unfinished=unfinished,
            orders=300,
            rate=20,
            kills=6,
            # Down for up to 2.5 s: past the 1 s lease, the other replica takes over.
            max_down=2.5,
        )
    judge(run, tmp_path)
