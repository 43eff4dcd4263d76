"""`python -m bench.triggers`: what armed limit orders cost one process.

Arms `--orders` limit orders (100,000 by default) through a real engine on SQLite, following
the in-process market's account stream; all but `--crossed` (1,000) sit far above the market.
Then it measures, and prints as a table:

- the process's RSS with every order armed (goal: at most 300 MiB);
- the CPU share at `--updates` pool updates per second on the orders' own pair, none
  crossing a limit, with the orders armed and, for comparison, before any was (goal: at
  most 10% of a core more);
- one price move that crosses the `--crossed` orders: how long until every one of them is
  stored as `routing` (goal: 100 ms), and that each then ends confirmed or armed again;
- `--snipers` (100) sniper orders armed on an upcoming token, then its launch: how long
  until all are routing, and how many slots each landed after the update that fired it
  (goal: 0 or 1).

python -m bench.triggers                      # the issue's sizes (about a minute to arm)
python -m bench.triggers --orders 10000       # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from bench.procfs import rss_bytes
from order_engine.engine import Engine, OrderRequest
from order_engine.hub import MemoryHub
from order_engine.hub.base import Subscription
from order_engine.market import LocalFeedSource, MarketData, follow
from order_engine.orders import OrderType, Status
from order_engine.runtime import tune_gc
from order_engine.store.sqlite import SQLiteStore
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.support.engines import build_engine
from tests.support.factories import make_settings

SOL, USDC = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
AMOUNT = SOL.to_base(Decimal("0.1"))
MOVE_BPS = 100.0  # the move that crosses the near orders: they sit 20 bps above the market
SNIPED = "SNEK"  # the upcoming token the snipers wait for


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best_price(market: SimulatedMarket) -> Decimal:
    best = max(v.best_quote(SOL, USDC, AMOUNT).amount_out for v in market.venues.values())
    return USDC.to_ui(best) / SOL.to_ui(AMOUNT)


async def _wiggle(market: SimulatedMarket, per_s: float, seconds: float) -> float:
    """Pool updates on SOL/USDC, alternately up and down a little; the CPU share of the
    whole process meanwhile."""
    start_cpu, start = _cpu(), time.perf_counter()
    step = 1 / per_s
    sign = 1.0
    deadline = start + seconds
    while (now := time.perf_counter()) < deadline:
        market.move_price("SOL", "USDC", sign * 1.0)
        sign = -sign
        await asyncio.sleep(max(0.0, start + step * round((now - start) / step + 1) - now))
    return (_cpu() - start_cpu) / (time.perf_counter() - start)


async def _arm(
    engine: Engine, price: Decimal, count: int, expires_at: float, *, spread: bool
) -> list[str]:
    """`spread`: limits from `price` up to 10% above it, else all at `price`."""
    ids = []
    for n in range(count):
        request = OrderRequest(
            SOL,
            USDC,
            AMOUNT,
            50,
            order_type=OrderType.LIMIT,
            limit_price=(price * (1 + Decimal(n % 97 if spread else 0) / 1000)).quantize(
                Decimal("0.0001")
            ),
            expires_at=expires_at,
        )
        ids.append((await engine.submit(request)).order_id)
    return ids


class _Tape:
    """Every event of the firehose as it comes, read at once so the inbox never fills: per
    order, (status, perf_counter) in order."""

    def __init__(self, sub: Subscription) -> None:
        self.events: dict[str, list[tuple[Status, float]]] = {}
        self._sub = sub
        self._changed = asyncio.Event()

    async def read(self) -> None:
        while True:
            event = await self._sub.next()
            if event is None:
                raise RuntimeError("the firehose dropped events")
            self.events.setdefault(event.order_id, []).append((event.status, time.perf_counter()))
            self._changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(600):
            while not done():
                self._changed.clear()
                await self._changed.wait()
                # Checked a few times a second, not per event: `done` may look at every order.
                await asyncio.sleep(0.02)

    def reached(self, order_id: str, status: Status, after: float = 0.0) -> float | None:
        return next(
            (t for s, t in self.events.get(order_id, ()) if s is status and t >= after), None
        )


async def _arm_snipers(engine: Engine, count: int, expires_at: float) -> list[str]:
    target = REGISTRY.resolve(SNIPED, upcoming=True)
    ids = []
    for _ in range(count):
        request = OrderRequest(
            SOL, target, AMOUNT, 500, order_type=OrderType.SNIPER, expires_at=expires_at
        )
        ids.append((await engine.submit(request)).order_id)
    return ids


async def _landing_lag(store: SQLiteStore, order_id: str) -> int | None:
    """Slots from the update that fired the order to the one it landed in (None: it did
    not land)."""
    events = {e.status: e.data for e in await store.events(order_id)}
    if Status.CONFIRMED not in events:
        return None
    slot: int = events[Status.CONFIRMED]["slot"] - events[Status.ROUTING]["trigger"]["slot"]
    return slot


async def run(
    orders: int, crossed: int, updates: float, seconds: float, snipers_count: int
) -> list[tuple[str, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    settings = make_settings(workdir, engine={"queue_size": orders + crossed, "workers": 10})
    market = SimulatedMarket(PROFILES["instant"], seed=1)
    store = SQLiteStore(workdir / "orders.db", synchronous="NORMAL")
    hub = MemoryHub(inbox_size=4 * orders + 1_000)  # the bench reads every event
    await store.open()
    await hub.start()
    await market.start()
    data = MarketData(max_staleness_slots=settings.venues.max_staleness_slots)
    following = asyncio.create_task(follow(data, LocalFeedSource(market.feed)))
    engine = build_engine(store=store, hub=hub, market=market, settings=settings, market_data=data)
    rows: list[tuple[str, str]] = []
    try:
        await data.reached(0)
        await engine.start()
        idle_before = await _wiggle(market, updates, seconds)
        price = _best_price(market)
        expires_at = time.time() + 3600
        async with hub.subscribe_all() as sub:
            tape = _Tape(sub)
            reading = asyncio.create_task(tape.read())
            try:
                far = await _arm(
                    engine, price * Decimal("1.5"), orders - crossed, expires_at, spread=True
                )
                near = await _arm(
                    engine, price * Decimal("1.002"), crossed, expires_at, spread=False
                )
                await tape.until(
                    lambda: all(tape.reached(o, Status.OPEN) is not None for o in far + near)
                )
                rows.append(("open limit orders", f"{engine.open_orders()['limit']:,}"))
                rss = rss_bytes(os.getpid()) / 2**20
                rows.append(("RSS with them armed (goal <= 300 MiB)", f"{rss:.0f} MiB"))
                idle_after = await _wiggle(market, updates, seconds)
                rows.append((f"CPU at {updates:.0f} updates/s, none armed", f"{idle_before:.1%}"))
                rows.append((f"CPU at {updates:.0f} updates/s, all armed", f"{idle_after:.1%}"))
                rows.append(
                    ("  difference (goal <= 10% of a core)", f"{idle_after - idle_before:+.1%}")
                )
                start = time.perf_counter()
                market.move_price("SOL", "USDC", MOVE_BPS)

                def routed(order_id: str) -> float | None:
                    return tape.reached(order_id, Status.ROUTING, start)

                def ended(order_id: str) -> Status | None:
                    for status in (Status.CONFIRMED, Status.FAILED, Status.OPEN):
                        after = routed(order_id)
                        if after is not None and tape.reached(order_id, status, after):
                            return status
                    return None

                await tape.until(lambda: all(ended(o) is not None for o in near))
                snipers = await _arm_snipers(engine, snipers_count, expires_at)
                await tape.until(lambda: all(tape.reached(o, Status.OPEN) for o in snipers))
                launched = time.perf_counter()
                market.launch(SNIPED)
                await tape.until(
                    lambda: all(
                        tape.reached(o, Status.CONFIRMED) or tape.reached(o, Status.FAILED)
                        for o in snipers
                    )
                )
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
        took = max(t for o in near if (t := routed(o)) is not None) - start
        rows.append(
            (f"{crossed:,} crossed: all routing after (goal 100 ms)", f"{took * 1000:.0f} ms")
        )
        confirmed = sum(1 for o in near if ended(o) is Status.CONFIRMED)
        rows.append(("  then confirmed / other", f"{confirmed} / {crossed - confirmed}"))
        rows.append(("far orders still open", f"{engine.open_orders()['limit']:,}"))
        sniped = max(t for o in snipers if (t := tape.reached(o, Status.ROUTING)) is not None)
        rows.append(
            (
                f"{snipers_count} snipers: all routing after launch",
                f"{(sniped - launched) * 1000:.0f} ms",
            )
        )
        lags = [lag for o in snipers if (lag := await _landing_lag(store, o)) is not None]
        rows.append(("  confirmed / failed", f"{len(lags)} / {len(snipers) - len(lags)}"))
        rows.append(("  landing slot - trigger slot (goal 0 or 1)", f"max {max(lags, default=0)}"))
    finally:
        await engine.stop(grace=1)
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await market.stop()
        await hub.stop()
        await store.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.triggers", description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--crossed", type=int, default=1_000)
    parser.add_argument("--updates", type=float, default=100.0, help="pool updates per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="per CPU measurement")
    parser.add_argument("--snipers", type=int, default=100, help="armed before a launch")
    args = parser.parse_args(argv)
    if not 0 < args.crossed <= args.orders:
        parser.error("--crossed must be between 1 and --orders")
    tune_gc()  # as the engine's process does
    rows = asyncio.run(run(args.orders, args.crossed, args.updates, args.seconds, args.snipers))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
