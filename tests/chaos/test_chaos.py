"""Jepsen-style chaos: real engine processes killed with SIGKILL at random (seeded) moments
while clients submit orders at a steady rate and watch each one on a WebSocket, retrying and
resuming (`after=<last seq>`) across the kills. The chain service outlives the engines, so
its ledger records every swap that really landed. At the end the history, the store and the
ledger go to the checker (tests/chaos/history.py), which must find no anomaly.

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
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from order_engine.store import store_from_url
from tests.chaos.history import (
    TERMINAL_STATUSES,
    History,
    StoredOrder,
    check,
    stored_order,
    summary,
)
from tests.support.processes import Process, free_port, launch, redis_server
from tests.support.services import POSTGRES_URL, postgres_schema

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

UNFINISHED = "WHERE status NOT IN ('confirmed', 'failed')"

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


class Workload:
    """Submits `count` orders at `rate` per second, each by a client that retries until it
    is acknowledged (a fresh clientOrderId per attempt) and then watches it to its end."""

    def __init__(
        self,
        history: History,
        http: aiohttp.ClientSession,
        targets: Sequence[str],
        deadline: float,
    ) -> None:
        self.history = history
        self.http = http
        self.targets = list(targets)
        self.deadline = deadline  # loop time; nothing is attempted after it
        self.posts_in_flight: Counter[str] = Counter()  # target -> POSTs awaiting an answer
        # The nemesis waits on these to kill at a given stage: "intake" (a POST in flight)
        # or an order status some client just received.
        self._triggers: dict[str, asyncio.Event] = {}

    def trigger(self, stage: str) -> asyncio.Event:
        event = self._triggers[stage] = asyncio.Event()
        return event

    def _fire(self, stage: str) -> None:
        event = self._triggers.get(stage)
        if event is not None:
            event.set()

    async def run(self, count: int, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            tasks.append(asyncio.create_task(self.order(i)))
        await asyncio.gather(*tasks)

    async def order(self, i: int) -> None:
        rng = random.Random(f"{SEED}/{i}")
        base = order_body(rng)
        loop = asyncio.get_running_loop()
        order_id: str | None = None
        attempt = 0
        while order_id is None and loop.time() < self.deadline:
            body = {**base, "clientOrderId": f"chaos-{SEED}-{i}-{attempt}"}
            order_id = await self.submit(i % CLIENTS, body, rng.choice(self.targets))
            attempt += 1
            if order_id is None:
                await asyncio.sleep(backoff(attempt, rng))
        if order_id is not None:
            await self.watch(order_id, rng)

    async def submit(self, client: int, body: dict[str, Any], target: str) -> str | None:
        op = self.history.submit_started(client, body, target)
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

    async def watch(self, order_id: str, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        last = 0
        done = False
        attempt = 0
        while not done and loop.time() < self.deadline:
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
                        msg = await ws.receive(timeout=STALL_S)
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                        message = msg.json()
                        self.history.received(conn, message)
                        if "seq" in message:
                            self._fire(str(message.get("status")))
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
            if not done:
                attempt += 1
                await asyncio.sleep(backoff(attempt, rng))


STAGES = ["intake", "pending", "routing", "building", "submitted"]


async def nemesis(
    history: History,
    replicas: Sequence[Replica],
    workload: Workload,
    kills: int,
    rng: random.Random,
    max_down: float = 0.0,
) -> None:
    """`kills` times: after a seeded pause of 1-2.5 s, pick a stage (every stage in turn,
    in seeded order), wait until a client sees an order reach it (or a POST is in flight,
    for "intake"; at most 3 s), and kill -9 a seeded random replica at once (for "intake",
    one a POST is waiting on); restart it after a seeded pause of up to `max_down` s."""
    plan: list[str] = []
    while len(plan) < kills:
        plan += rng.sample(STAGES, len(STAGES))
    for stage in plan[:kills]:
        await asyncio.sleep(rng.uniform(1.0, 2.5))
        trigger = workload.trigger(stage)
        if stage != "intake" or not +workload.posts_in_flight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    await trigger.wait()
        busy = [r for r in replicas if workload.posts_in_flight[r.url] > 0]
        replica = rng.choice(busy if stage == "intake" and busy else list(replicas))
        history.killed(replica.name, stage)
        await replica.kill()
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
    unfinished: Callable[[], Awaitable[list[str]]],
    orders: int,
    rate: float,
    kills: int,
    max_down: float = 0.0,
) -> Run:
    history = History()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + orders / rate + 25
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as http:
        workload = Workload(history, http, [r.url for r in replicas], deadline)
        chaos = asyncio.create_task(
            nemesis(history, replicas, workload, kills, random.Random(SEED), max_down)
        )
        await workload.run(orders, rate)
        await chaos
        # Orders of indeterminate submits had no watcher: watch what is still unfinished
        # to its end too (the history records these streams; the checker judges them).
        await asyncio.gather(
            *(
                workload.watch(order_id, random.Random(f"{SEED}/drain/{order_id}"))
                for order_id in await unfinished()
            )
        )
        async with http.get(f"{chain.url}/admin/ledger") as resp:
            ledger: list[dict[str, Any]] = (await resp.json())["entries"]
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


def judge(run: Run, tmp_path: Path) -> None:
    anomalies = check(run.history, run.store, run.ledger)
    report = summary(run.history, run.store, run.ledger, anomalies)
    run.history.dump(tmp_path / "history.json")
    print(f"\nchaos (seed {SEED}): {json.dumps(report)}")
    assert report["kills"] >= 1
    assert not anomalies, "\n".join([json.dumps(report), *anomalies[:30]])


# -- the tests -------------------------------------------------------------------------------


async def test_sqlite_engine_killed_repeatedly(tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    store_url = f"sqlite:///{db}"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute(sql).fetchall()

    async def order_ids() -> list[str]:
        return [r[0] for r in query("SELECT order_id FROM orders")]

    async def unfinished() -> list[str]:
        return [r[0] for r in query(f"SELECT order_id FROM orders {UNFINISHED}")]

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
            kills=6,
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

    async def unfinished() -> list[str]:
        rows = await fetch(f'SELECT order_id FROM "{schema}".orders {UNFINISHED}')
        return [r["order_id"] for r in rows]

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
            kills=5,
            # Down for up to 2.5 s: past the 1 s lease, the other replica takes over.
            max_down=2.5,
        )
    judge(run, tmp_path)
