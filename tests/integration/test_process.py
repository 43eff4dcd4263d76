"""`python -m order_engine` as a user runs it: a real process, signals, restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import read_until_closed
from tests.support.processes import engine_process, free_port, run


async def test_banner_names_the_address_and_an_example(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        assert f"http://127.0.0.1:{port}" in engine.banner
        assert "curl" in engine.banner
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{engine.url}/api/order/execute",
                json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1},
            )
            assert resp.status == 201


async def test_sigterm_is_graceful_and_a_restart_finishes_the_order(tmp_path: Path) -> None:
    port = free_port()
    # Realistic venues: a transaction takes at least 400 ms to land, far beyond the grace.
    env = {
        "ORDER_ENGINE_VENUES_PROFILE": "realistic",
        "ORDER_ENGINE_SERVER_SHUTDOWN_GRACE_S": "0.05",
    }
    async with aiohttp.ClientSession() as http:
        async with engine_process(tmp_path, port, **env) as engine:
            resp = await http.post(
                f"{engine.url}/api/order/execute",
                json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1},
            )
            order_id = (await resp.json())["orderId"]
            ws = await http.ws_connect(f"{engine.url}/api/order/status?orderId={order_id}")
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while not seen or seen[-1]["status"] != "submitted":
                    seen.append(await ws.receive_json())
            engine.process.send_signal(signal.SIGTERM)
            seen += await read_until_closed(ws)
            assert ws.close_code == 1001  # going away, not a silent drop
            async with asyncio.timeout(15):
                assert await engine.process.wait() == 0
            assert seen[-1]["status"] == "submitted"

        # Same database, new process: the order is resumed and finishes.
        async with engine_process(tmp_path, port, **env) as engine:
            async with http.ws_connect(
                f"{engine.url}/api/order/status?orderId={order_id}&after={seen[-1]['seq']}"
            ) as ws:
                rest = await read_until_closed(ws, timeout=30)
            assert rest[-1]["status"] == "confirmed", rest
            assert rest[0]["seq"] == seen[-1]["seq"] + 1
            engine.process.send_signal(signal.SIGINT)
            async with asyncio.timeout(15):
                assert await engine.process.wait() == 0


async def test_bad_configuration_fails_with_one_line(tmp_path: Path) -> None:
    done = await run(
        [sys.executable, "-m", "order_engine"],
        cwd=tmp_path,
        env={"ORDER_ENGINE_ENGINE_WORKERS": "many"},
        timeout=20,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == ["order-engine: configuration error: engine.workers: 'many' is not a valid int"]


async def test_a_database_that_cannot_be_opened_is_one_line_naming_it(tmp_path: Path) -> None:
    database = tmp_path / "orders.db"
    database.write_bytes(b"this is not a SQLite database" * 100)
    env = {"PORT": str(free_port()), "ORDER_ENGINE_STORE_URL": f"sqlite:///{database}"}
    done = await run([sys.executable, "-m", "order_engine"], timeout=30, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"order-engine: cannot start: cannot open the SQLite database {database}:"
        " file is not a database"
    ]
