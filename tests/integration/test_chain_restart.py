"""A real chain does not forget: the simulated one keeps its ledger, the transactions it
received and its pools in a state file, so a process killed (-9) while orders are
`submitted` and started again on the same data lands each of them once, and no order is
executed twice. In one process (`python -m order_engine`, the in-process chain) and with
the chain service killed under a running engine."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp

from order_engine.venues.base import LedgerEntry
from order_engine.venues.chain_state import ChainState
from order_engine.venues.tokens import REGISTRY
from tests.support.clients import post_order_to, until_submitted
from tests.support.processes import Process, chain_service, engine, free_port, run

ORDERS = 6
ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"}
# Landings slow enough that every order is still `submitted` when the process is killed,
# and no background motion, so slippage never fails one.
CONFIG = """
[venues]
profile = "slowland"

[profiles.slowland]
quote_latency_ms = [0.0, 0.0]
land_latency_ms = [3000.0, 4000.0]
drop_rate = 0.0
drift_interval_ms = 0.0
launch_interval_s = 0.0
"""
WAIT_S = 60


def the_engine(tmp_path: Path, port: int, **env: str) -> AbstractAsyncContextManager[Process]:
    """The engine on `tmp_path`'s data (its SQLite store and, beside it, the chain's state
    file), on the same port each time: a restart of the same engine. Killed on exit."""
    config = tmp_path / "slowland.toml"
    config.write_text(CONFIG)
    env = {"ORDER_ENGINE_VENUES_PROFILE": "slowland", **env}
    return engine(
        tmp_path,
        "engine",
        port=port,
        env=env,
        args=["--config", str(config)],
        stop_signal=signal.SIGKILL,
    )


async def history(http: aiohttp.ClientSession, base: str, order_id: str) -> list[dict[str, Any]]:
    """Every event of the order, once the engine has finished it (it closes the stream)."""
    seen = []
    url = f"{base}/api/order/status?orderId={order_id}"
    async with asyncio.timeout(WAIT_S), http.ws_connect(url) as ws:
        async for msg in ws:
            seen.append(msg.json())
    return seen


async def orders_in_flight(
    http: aiohttp.ClientSession, base: str, chain_url: str | None = None
) -> list[str]:
    """Orders `submitted`, and with the chain service, received by it: a transaction the
    engine had not yet sent when the chain died is rebuilt once its blockhash expires,
    rightly, but a minute later."""
    order_ids = [await post_order_to(http, base) for _ in range(ORDERS)]
    signatures = await asyncio.gather(*(until_submitted(http, base, o, WAIT_S) for o in order_ids))
    if chain_url is not None:
        for signature in signatures:
            url = f"{chain_url}/admin/received/{signature}"
            async with http.get(url, params={"timeout": str(WAIT_S)}) as resp:
                assert resp.status == 200, await resp.text()
    return order_ids


async def killed(process: Process) -> None:
    process.kill()
    await process.wait()


def assert_executed_once(
    histories: dict[str, list[dict[str, Any]]], ledger: list[LedgerEntry]
) -> None:
    """Each order confirmed by the one transaction it sent, which landed once, paying what
    the order reports; and nothing else landed."""
    by_signature = {entry.signature: entry for entry in ledger}
    assert len(by_signature) == len(ledger), "a signature landed twice"
    sol, usdc = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
    for order_id, events in histories.items():
        statuses = [event["status"] for event in events]
        assert statuses[-1] == "confirmed", (order_id, events[-1])
        submitted = [event for event in events if event["status"] == "submitted"]
        assert len(submitted) == 1, (order_id, statuses)  # never sent again
        signature = submitted[0]["data"]["txHash"]
        confirmed = events[-1]["data"]
        assert confirmed["txHash"] == signature
        entry = by_signature[signature]
        assert sol.format(entry.amount_in) == confirmed["amountIn"]
        assert usdc.format(entry.amount_out) == confirmed["amountOut"]
    assert len(ledger) == len(histories), "a swap landed for no order"


def chain_ledger(path: Path) -> list[LedgerEntry]:
    """The ledger as the chain's file holds it (its process is gone)."""
    state = ChainState(path)
    state.open()
    try:
        return state.ledger()
    finally:
        state.close()


async def test_an_engine_killed_while_orders_are_submitted_lands_each_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with aiohttp.ClientSession() as http:
        async with the_engine(tmp_path, port) as first:
            order_ids = await orders_in_flight(http, first.url)
            await killed(first)
        async with the_engine(tmp_path, port) as second:
            finished = await asyncio.gather(
                *(history(http, second.url, order_id) for order_id in order_ids)
            )
            await killed(second)
    # The engine's default chain state: data/chain.db in its working directory.
    ledger = chain_ledger(tmp_path / "data" / "chain.db")
    assert_executed_once(dict(zip(order_ids, finished, strict=True)), ledger)


async def test_a_chain_service_killed_under_a_running_engine_lands_each_once(
    tmp_path: Path,
) -> None:
    config = tmp_path / "slowland.toml"
    config.write_text(CONFIG)
    state = tmp_path / "chain-state" / "chain.db"
    port = free_port()
    options = ("--port", str(port), "--config", str(config), "--profile", "slowland")
    options = (*options, "--state", str(state))
    chain_url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http, chain_service(tmp_path, *options) as chain:
        env = {
            "ORDER_ENGINE_VENUES_CHAIN_URL": chain_url,
            "ORDER_ENGINE_ENGINE_RETRY_MAX_MS": "500",
        }
        async with engine(tmp_path, "engine", env=env) as replica:
            order_ids = await orders_in_flight(http, replica.url, chain_url)
            await killed(chain)
            async with chain_service(tmp_path, *options) as restarted:
                finished = await asyncio.gather(
                    *(history(http, replica.url, order_id) for order_id in order_ids)
                )
                await killed(restarted)
    assert_executed_once(dict(zip(order_ids, finished, strict=True)), chain_ledger(state))


async def test_a_second_chain_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "chain.db"
    async with chain_service(tmp_path, "--state", str(state)) as first:
        second = await run(
            [sys.executable, "-m", "order_engine.chain", "--port", str(free_port())],
            timeout=30,
            cwd=tmp_path,
            env={"CHAIN_STATE": str(state)},
        )
        assert second.returncode == 1, second
        [line] = second.stderr.strip().splitlines()
        assert line == (
            f"order_engine.chain: cannot start: the chain state {state} is in use by another"
            f" process (pid {first.pid}): one simulated chain per file"
        )
