"""`python -m bench.reads`: an order's lookup while clients page through the history.

Fills a SQLite store with `--orders` orders (a tenth failed), then runs `--scanners` loops of
`?status=failed&limit=500`-style history queries against it while looking orders up one by
one, and prints the lookup's p50 and p99 with and without the scans. The store reads the
history on a connection of its own, so the lookups should barely notice.

python -m bench.reads                      # 50,000 orders, 40 scanners
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from order_engine.orders import Order, OrderEvent, Status
from order_engine.store.base import OrderQuery
from order_engine.store.sqlite import SQLiteStore

LOOKUPS = 300


def _order_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def _fill(store: SQLiteStore, count: int) -> None:
    async def one(n: int) -> None:
        status = Status.FAILED if n % 10 == 0 else Status.CONFIRMED
        at = 1_000.0 + n
        order = Order(_order_id(n), "SOL", "USDC", 10**9, 50, status, 1, 0, at, at)
        await store.create(order, OrderEvent(order.order_id, 1, Status.PENDING, "", at, {}))

    for start in range(0, count, 2_000):
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 2_000))))


async def _lookups(store: SQLiteStore, count: int) -> tuple[float, float]:
    took = []
    for n in range(LOOKUPS):
        started = time.perf_counter()
        await store.get(_order_id(n * 97 % count))
        took.append(time.perf_counter() - started)
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.99) - 1]


async def run(count: int, scanners: int) -> list[tuple[str, str]]:
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "orders.db", synchronous="OFF")
    await store.open()
    try:
        await _fill(store, count)
        quiet = await _lookups(store, count)
        scanning = True

        async def scan() -> None:
            query = OrderQuery(statuses=(Status.FAILED,), limit=500)
            while scanning:
                await store.find(query)

        tasks = [asyncio.create_task(scan()) for _ in range(scanners)]
        busy = await _lookups(store, count)
        scanning = False
        await asyncio.gather(*tasks)
    finally:
        await store.close()
    return [
        (f"lookup p50 / p99, {count:,} orders, quiet", _ms(quiet)),
        (f"lookup p50 / p99, {scanners} history scanners", _ms(busy)),
    ]


def _ms(p50_p99: tuple[float, float]) -> str:
    return f"{p50_p99[0] * 1000:.1f} / {p50_p99[1] * 1000:.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--scanners", type=int, default=40)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.orders, args.scanners))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
