"""The scenarios: which processes each one starts, and how the load generator drives them.

Each scenario starts its own fresh server processes (so one row's memory and CPU are not
another's), runs the load generator against them and returns one or more rows. A row's
`peak_rss_bytes` and `cpu_ms_per_op` are those of the measured processes only: the engine
(or the floor app). The chain service, PostgreSQL and Redis stand for external systems
(a real chain, managed databases) and are not charged to the engine.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import procfs
from bench.processes import floor_app, redis_server, run_load
from tests.support.databases import fresh_schema
from tests.support.processes import Process as Server
from tests.support.processes import chain_service, engine

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """How hard and how long each scenario runs."""

    warmup: float
    duration: float
    post_clients: int
    e2e_clients: int
    realistic_clients: int
    realistic_rpc_clients: int
    realistic_warmup: float
    fanout_watchers: int
    idle_connections: int

    @classmethod
    def full(cls, duration: float) -> Plan:
        # 32 POSTing clients saturate the floor app and the engine's intake here, and 64
        # watching clients one engine's pipeline (more only queue up). In the realistic
        # profile an order spends ~1.5 s landing (0.4-2.5 s), off the workers; a closed
        # loop of N clients completes at most N / 1.5 s: 2,400 allow ~1,600/s, more than
        # one engine completes on the fastest 2-core machine we measured on (there 800
        # clients bound the row at 454/s with the engine not yet busy; 1,600 gave 696/s,
        # 2,400 733/s with its queue growing). The workers of the venue-call row, held
        # ~185 ms per order by the quote calls, complete ~50/s: 200 clients keep them busy
        # without queueing orders past the client timeout. The warm-up covers the slowest
        # landing (2.5 s) so the pipeline is full when the window opens.
        return cls(1.0, duration, 32, 64, 2400, 200, 4.0, 1000, 10_000)

    @classmethod
    def smoke(cls) -> Plan:
        return cls(0.3, 1.0, 4, 4, 20, 5, 1.0, 20, 100)


@dataclass(frozen=True, slots=True)
class Checkout:
    """Which engine code a row runs: this checkout's (the default) or another one, with its
    own interpreter (e.g. an older commit in a worktree of its own, to compare in one run)."""

    python: str = sys.executable
    root: Path | None = None

    @classmethod
    def other(cls, root: Path, python: str | None = None) -> Checkout:
        root = root.resolve()
        return cls(python or str(root / ".venv" / "bin" / "python"), root)

    def engine(
        self, workdir: Path, name: str, *, env: dict[str, str] | None = None, **options: Any
    ) -> AbstractAsyncContextManager[Server]:
        env = dict(env or {})
        if self.root is not None:
            # Ahead of this checkout, which the launcher puts on PYTHONPATH.
            env["PYTHONPATH"] = str(self.root)
        return engine(workdir, name, env=env, python=self.python, **options)


@dataclass(frozen=True, slots=True)
class Context:
    plan: Plan
    workdir: Path
    postgres_url: str
    server: Checkout = Checkout()
    # Another checkout whose e2e row runs beside this one's in every run (`e2e_base`).
    baseline: Checkout | None = None

    def scratch(self, name: str) -> Path:
        """A directory of its own for each row: its logs and its SQLite file."""
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_timeout(self, warmup: float = 0.0) -> float:
        return 120 + 2 * (self.plan.warmup + warmup + self.plan.duration)


def _sqlite(workdir: Path) -> str:
    return f"sqlite:///{workdir}/bench.db"


def _peak_rss(servers: Sequence[Server]) -> int:
    return sum(procfs.peak_rss_bytes(s.pid) for s in servers)


def _throughput_spec(ctx: Context, mode: str, servers: Sequence[Server], **extra: Any) -> Row:
    return {
        "mode": mode,
        "urls": [s.url for s in servers],
        "pids": [s.pid for s in servers],
        "warmup": ctx.plan.warmup,
        "duration": ctx.plan.duration,
        **extra,
    }


async def _measure(ctx: Context, spec: Row, servers: Sequence[Server], **row: Any) -> Row:
    result = await run_load(spec, ctx.load_timeout(spec.get("warmup", 0.0)))
    return {**row, **result, "peak_rss_bytes": _peak_rss(servers)}


# -- 1. floor -------------------------------------------------------------------------------


async def floor(ctx: Context) -> list[Row]:
    async with floor_app(ctx.scratch("floor")) as app:
        spec = _throughput_spec(ctx, "post", [app], concurrency=ctx.plan.post_clients)
        return [await _measure(ctx, spec, [app], row="floor", label="floor: bare aiohttp POST")]


# -- 2. accept ------------------------------------------------------------------------------


async def accept(ctx: Context) -> list[Row]:
    work = ctx.scratch("accept")
    # Intake outruns execution, so the default queue (10,000) fills within seconds and the
    # rest of the window would measure the 503 back-pressure: a queue big enough for the
    # window keeps this row about accepting. Execution still runs beside it.
    env = {"ORDER_ENGINE_ENGINE_QUEUE_SIZE": "1000000"}
    async with ctx.server.engine(work, "accept", store_url=_sqlite(work), env=env) as e:
        spec = _throughput_spec(ctx, "post", [e], concurrency=ctx.plan.post_clients)
        return [await _measure(ctx, spec, [e], row="accept", label="accept: POST -> 201")]


# -- 3. end to end ----------------------------------------------------------------------------

SYNC_FULL = {"ORDER_ENGINE_STORE_SQLITE_SYNCHRONOUS": "FULL"}  # the default, spelled out
SYNC_NORMAL = {"ORDER_ENGINE_STORE_SQLITE_SYNCHRONOUS": "NORMAL"}


async def _e2e_row(
    ctx: Context, name: str, env: dict[str, str], checkout: Checkout | None = None, **row: Any
) -> Row:
    work = ctx.scratch(name)
    code = checkout or ctx.server
    async with code.engine(work, name, store_url=_sqlite(work), env=env) as e:
        spec = _throughput_spec(ctx, "e2e", [e], concurrency=ctx.plan.e2e_clients)
        return await _measure(ctx, spec, [e], row=name, **row)


async def _paced_row(ctx: Context, name: str, env: dict[str, str], rate: float, label: str) -> Row:
    work = ctx.scratch(name)
    async with ctx.server.engine(work, name, store_url=_sqlite(work), env=env) as e:
        spec = _throughput_spec(ctx, "paced", [e], rate=rate)
        return await _measure(ctx, spec, [e], row=name, label=label)


async def _session_row(ctx: Context, name: str, env: dict[str, str], **row: Any) -> Row:
    """The e2e row's orders and durability, all on one trading session: as many orders in
    flight as the e2e row has clients."""
    work = ctx.scratch(name)
    async with ctx.server.engine(work, name, store_url=_sqlite(work), env=env) as e:
        spec = _throughput_spec(ctx, "session", [e], concurrency=ctx.plan.e2e_clients)
        return await _measure(ctx, spec, [e], row=name, **row)


async def e2e(ctx: Context) -> list[Row]:
    base: list[Row] = []
    if ctx.baseline is not None:
        # The same load on the other checkout, right before this one's: the ratio of their
        # CPU per order is taken within each run.
        label = "e2e: POST -> confirmed (WS), FULL, baseline"
        base.append(await _e2e_row(ctx, "e2e_base", SYNC_FULL, ctx.baseline, label=label))
    full = await _e2e_row(ctx, "e2e", SYNC_FULL, label="e2e: POST -> confirmed (WS), FULL")
    session = await _session_row(
        ctx, "e2e_session", SYNC_FULL, label="e2e: one trading session, FULL"
    )
    normal = await _e2e_row(ctx, "e2e_normal", SYNC_NORMAL, label="e2e, SQLite NORMAL")
    # Open loop at half of this run's closed-loop maximum with the default FULL durability;
    # NORMAL at the same rate shows how much of the tail is the fsync of each commit.
    rate = max(full["rate"] / 2, 1.0)
    half = await _paced_row(ctx, "e2e_half", SYNC_FULL, rate, "e2e paced at max/2, FULL")
    half_normal = await _paced_row(
        ctx, "e2e_half_normal", SYNC_NORMAL, rate, "e2e paced at max/2, NORMAL"
    )
    # The closed loop's maximum is reached with orders queued (64 in flight), where every
    # commit, wake-up and write carries many of them: paced, an order costs about twice the
    # CPU, so half that maximum keeps the core all but busy. A third shows the tail below it.
    third = await _paced_row(
        ctx, "e2e_third", SYNC_FULL, max(full["rate"] / 3, 1.0), "e2e paced at max/3, FULL"
    )
    return [*base, full, session, normal, half, half_normal, third]


# -- 4. realistic -----------------------------------------------------------------------------


async def _realistic_row(
    ctx: Context,
    name: str,
    env: dict[str, str],
    label: str,
    rate: float | None = None,
    clients: int | None = None,
) -> Row:
    """Closed loop (the most it completes), or paced at `rate` (latency below saturation)."""
    work = ctx.scratch(name)
    async with ctx.server.engine(
        work, name, store_url=_sqlite(work), profile="realistic", env=env
    ) as e:
        load = (
            _throughput_spec(ctx, "e2e", [e], concurrency=clients or ctx.plan.realistic_clients)
            if rate is None
            else _throughput_spec(ctx, "paced", [e], rate=rate)
        )
        spec = {
            **load,
            "warmup": ctx.plan.realistic_warmup,
            # Expired or slipped orders that exhausted their retries are completed too.
            "count_failed": True,
        }
        return await _measure(ctx, spec, [e], row=name, label=label)


async def realistic(ctx: Context) -> list[Row]:
    # Quoted from the streamed pool states (the default), and, for comparison in the same
    # run, by asking each venue per order (50-250 ms a round trip) as before.
    streamed = await _realistic_row(ctx, "realistic", {}, "realistic venues, 10 workers")
    by_rpc = await _realistic_row(
        ctx,
        "realistic_rpc",
        {"ORDER_ENGINE_VENUES_QUOTE_FROM_STREAM": "false"},
        "realistic, quotes by venue calls",
        clients=ctx.plan.realistic_rpc_clients,
    )
    # How long an order waits before its transaction is sent, at half the most it completes:
    # a latency at saturation only measures the queue.
    half = await _realistic_row(
        ctx, "realistic_half", {}, "realistic paced at max/2", rate=max(streamed["rate"] / 2, 1.0)
    )
    return [streamed, by_rpc, half]


# -- 5. following the market ---------------------------------------------------------------

# A busy market: the chain service steps its market every 36 ms, so its account stream
# carries some 500 pool updates a second (18 pools) for a replica to follow.
BUSY_MARKET = """
[profiles.busy]
quote_latency_ms = [0.0, 0.0]
land_latency_ms = [0.0, 0.0]
drop_rate = 0.0
drift_interval_ms = 36.0
"""


async def _scrape(url: str, metric: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(f"{metric} "):
                return float(line.split()[1])
    raise RuntimeError(f"{metric} is not exported by {url}")


async def _idle_cpu(ctx: Context, name: str, chain: Server, follow: bool) -> Row:
    """An idle replica's CPU (share of one core) over the window, and the stream's rate."""
    work = ctx.scratch(name)
    env = {
        "ORDER_ENGINE_VENUES_CHAIN_URL": chain.url,
        "ORDER_ENGINE_VENUES_QUOTE_FROM_STREAM": "true" if follow else "false",
    }
    async with ctx.server.engine(work, name, store_url=_sqlite(work), env=env) as e:
        await asyncio.sleep(ctx.plan.warmup + 1.0)  # the snapshot is taken and applied
        seq0, cpu0 = await _scrape(e.url, "order_engine_market_data_seq"), procfs.cpu_seconds(e.pid)
        await asyncio.sleep(ctx.plan.duration)
        seq1, cpu1 = await _scrape(e.url, "order_engine_market_data_seq"), procfs.cpu_seconds(e.pid)
        return {
            "row": name,
            "cpu_util": (cpu1 - cpu0) / ctx.plan.duration,
            "updates_per_s": (seq1 - seq0) / ctx.plan.duration,
            "peak_rss_bytes": _peak_rss([e]),
        }


async def follow(ctx: Context) -> list[Row]:
    work = ctx.scratch("follow")
    config = work / "busy.toml"
    config.write_text(BUSY_MARKET)
    async with chain_service(work, "--config", str(config), "--profile", "busy") as chain:
        following = await _idle_cpu(ctx, "follow", chain, follow=True)
        idle = await _idle_cpu(ctx, "follow_off", chain, follow=False)
    rate = following["updates_per_s"]
    # What following costs: the idle replica's CPU with the stream, less without it.
    cost = following["cpu_util"] - idle["cpu_util"]
    return [
        {
            **following,
            "label": f"follow the pool stream ({rate:.0f} updates/s), idle replica",
            "rate": rate,
            "follow_cost_util": cost,
            # Scaled to the 500 updates/s of the target, the rate this profile aims at.
            "follow_cost_per_500": cost * 500 / rate if rate else None,
        },
        {**idle, "label": "same replica, quoting by venue calls (not following)"},
    ]


# -- 6. WebSocket fan-out and idle connections -------------------------------------------------


@asynccontextmanager
async def _held_engine(ctx: Context, name: str) -> AsyncIterator[tuple[Server, Server]]:
    """An engine whose venues are the chain service, so the benchmark can hold every
    transaction at `submitted` (`/admin/hold`) while watchers connect, then release it.
    With in-process instant venues an order finishes before anyone could subscribe."""
    work = ctx.scratch(name)
    async with chain_service(work) as chain:
        env = {"ORDER_ENGINE_VENUES_CHAIN_URL": chain.url}
        async with ctx.server.engine(work, name, store_url=_sqlite(work), env=env) as e:
            yield chain, e


async def fanout(ctx: Context) -> list[Row]:
    async with _held_engine(ctx, "fanout") as (chain, e):
        spec = {
            "mode": "fanout",
            "urls": [e.url],
            "pids": [e.pid],
            "chain_url": chain.url,
            "watchers": ctx.plan.fanout_watchers,
        }
        label = f"fan-out: 1 order -> {ctx.plan.fanout_watchers} WS"
        return [await _measure(ctx, spec, [e], row="fanout", label=label)]


async def idle(ctx: Context) -> list[Row]:
    async with _held_engine(ctx, "idle") as (chain, e):
        spec = {
            "mode": "idle",
            "urls": [e.url],
            "pids": [e.pid],
            "chain_url": chain.url,
            "watchers": ctx.plan.idle_connections,
        }
        label = f"idle: {ctx.plan.idle_connections} WS in one process"
        return [await _measure(ctx, spec, [e], row="idle", label=label)]


# -- 6. scaled: PostgreSQL + Redis, one and two engine processes -------------------------------


def services_reachable(postgres_url: str) -> str | None:
    """Why the scaled scenario cannot run here, or None when it can."""
    parts = urlsplit(postgres_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError as exc:
        return f"PostgreSQL is not reachable on {host}:{port} ({exc.strerror or exc})"
    if shutil.which("redis-server") is None:
        try:
            with socket.create_connection(("127.0.0.1", 6379), timeout=1):
                pass
        except OSError:
            return "Redis: neither redis-server installed nor a server on 127.0.0.1:6379"
    return None


async def _scaled_row(ctx: Context, replicas: int, redis_url: str) -> Row:
    name = f"scaled_{replicas}"
    work = ctx.scratch(name)
    async with AsyncExitStack() as stack:
        store_url = await stack.enter_async_context(fresh_schema(ctx.postgres_url, prefix="bench"))
        chain = await stack.enter_async_context(chain_service(work))
        env = {"REDIS_URL": redis_url, "ORDER_ENGINE_VENUES_CHAIN_URL": chain.url}
        engines = [
            await stack.enter_async_context(
                ctx.server.engine(work, f"{name}_r{i}", store_url=store_url, env=env)
            )
            for i in range(replicas)
        ]
        spec = _throughput_spec(
            ctx, "e2e", engines, concurrency=ctx.plan.e2e_clients, others={"chain": chain.pid}
        )
        label = f"e2e on PostgreSQL + Redis, {replicas} process" + ("es" if replicas > 1 else "")
        return await _measure(ctx, spec, engines, row=name, label=label)


async def scaled(ctx: Context) -> list[Row]:
    async with redis_server(ctx.scratch("redis")) as redis_url:
        one = await _scaled_row(ctx, 1, redis_url)
        two = await _scaled_row(ctx, 2, redis_url)
    return [one, two]


Scenario = Callable[[Context], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    "floor": floor,
    "accept": accept,
    "e2e": e2e,
    "realistic": realistic,
    "follow": follow,
    "fanout": fanout,
    "idle": idle,
    "scaled": scaled,
}
# Rows each scenario yields, so a report can say which are missing.
ROWS: dict[str, tuple[str, ...]] = {
    "floor": ("floor",),
    "accept": ("accept",),
    "e2e": (
        "e2e_base",
        "e2e",
        "e2e_session",
        "e2e_normal",
        "e2e_half",
        "e2e_half_normal",
        "e2e_third",
    ),
    "realistic": ("realistic", "realistic_rpc", "realistic_half"),
    "follow": ("follow", "follow_off"),
    "fanout": ("fanout",),
    "idle": ("idle",),
    "scaled": ("scaled_1", "scaled_2"),
}
