"""`python -m order_engine submit|watch|cancel`: the command-line client against a real
server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import engine_process, free_port, run, spawn

# Far above the market (SOL is about 150 USDC): armed until cancelled or expired.
FAR_LIMIT = "1000000"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def cli(*args: str, url: str) -> tuple[int, str, str]:
    done = await run([sys.executable, "-m", "order_engine", *args, "--url", url], timeout=60)
    return done.returncode, done.stdout, done.stderr


async def test_submit_shows_every_stage_and_exits_0_when_confirmed(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        code, out, _ = await cli("submit", "SOL", "USDC", "1.5", url=engine.url)
        assert code == 0, out
        stages = [line.split()[1] for line in out.splitlines()[1:]]
        assert stages == ["pending", "routing", "building", "submitted", "confirmed"]
        order_id = out.splitlines()[0].split()[1]
        code, again, _ = await cli("watch", order_id, url=engine.url)
        assert code == 0
        assert again.splitlines()[1:] == out.splitlines()[1:]


async def test_a_failed_order_exits_1_and_a_refused_one_2(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        code, out, _ = await cli("submit", "SOL", "USDC", "10000000", url=engine.url)
        assert code == 1, out
        assert "price_impact_too_high" in out.splitlines()[-1]
        code, _, err = await cli("submit", "SOL", "DOGE", "1", url=engine.url)
        assert code == 2
        assert "unknown_token" in err


async def test_watch_reconnects_across_a_server_restart(tmp_path: Path) -> None:
    """The server stops (1001) while the order waits on the chain; the client resumes
    with after=<seq> on the restarted server and sees the rest, nothing twice."""
    port = free_port()
    env = {"ORDER_ENGINE_VENUES_PROFILE": "realistic", "ORDER_ENGINE_SERVER_SHUTDOWN_GRACE_S": "0"}
    url = f"http://127.0.0.1:{port}"
    submit = [sys.executable, "-m", "order_engine", "submit", "SOL", "USDC", "1", "--url", url]
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(engine_process(tmp_path, port, **env))
        process = await stack.enter_async_context(spawn(submit))
        assert process.stdout is not None
        async with asyncio.timeout(20):
            lines = [(await process.stdout.readline()).decode()]
            while "submitted" not in lines[-1]:
                lines.append((await process.stdout.readline()).decode())
        engine.process.send_signal(signal.SIGTERM)
        await engine.process.wait()
        async with engine_process(tmp_path, port, **env):
            rest, _ = await asyncio.wait_for(process.communicate(), 30)
    lines += rest.decode().splitlines(keepends=True)
    seqs = [int(line.split()[0]) for line in lines[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert process.returncode == 0, lines
    assert lines[-1].split()[1] == "confirmed"


async def test_json_logs_carry_one_object_per_line_with_the_order_id(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ORDER_ENGINE_VENUES_PROFILE": "instant",
        "ORDER_ENGINE_SERVER_LOG_FORMAT": "json",
        "ORDER_ENGINE_SERVER_LOG_LEVEL": "DEBUG",  # an order's stages are logged at DEBUG
    }
    async with engine_process(tmp_path, port, **env) as engine:
        code, out, _ = await cli("submit", "SOL", "USDC", "1", url=engine.url)
        assert code == 0
        order_id = out.splitlines()[0].split()[1]
    lines = (tmp_path / f"engine-{port}.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    mine = [e for e in entries if e.get("orderId") == order_id]
    assert [e["message"] for e in mine if e["message"] in STAGES] == list(STAGES)
    decision = next(e for e in mine if e["message"].startswith("routing 1 SOL -> USDC"))
    assert "Raydium" in decision["message"] and "Meteora" in decision["message"]


STAGES = ("building", "submitted", "confirmed")


def stages(out: str) -> list[str]:
    """The status column of `submit`/`watch` output (its first line names the order)."""
    return [line.split()[1] for line in out.splitlines()[1:]]


async def stored(url: str, order_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/order/{order_id}") as resp:
        assert resp.status == 200
        order: dict[str, Any] = (await resp.json())["order"]
        return order


async def test_a_limit_order_waits_open_until_cancel_ends_it_exit_3(tmp_path: Path) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(
            engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant")
        )
        url = engine.url
        placed_at = time.time()
        submit = [
            *("submit", "SOL", "USDC", "1.5", "--limit-price", FAR_LIMIT),
            *("--expires-in", "3600", "--url", url),
        ]
        process = await stack.enter_async_context(
            spawn([sys.executable, "-m", "order_engine", *submit])
        )
        assert process.stdout is not None
        async with asyncio.timeout(20):  # the order is armed: its watcher waits on
            lines = [(await process.stdout.readline()).decode()]
            while " open " not in lines[-1]:
                lines.append((await process.stdout.readline()).decode())
        order_id = lines[0].split()[1]
        assert f"limit {FAR_LIMIT}" in lines[-1]
        order = await stored(url, order_id)
        assert (order["status"], order["orderType"], order["limitPrice"]) == (
            "open",
            "limit",
            FAR_LIMIT,
        )
        assert order["expiresAt"] == pytest.approx(placed_at + 3600, abs=30)

        code, out, err = await cli("cancel", order_id, url=url)
        assert code == 0, err
        printed = dict(line.split(maxsplit=1) for line in out.splitlines())
        assert printed["order"] == order_id
        assert printed["status"] == "cancelled"
        assert printed["type"] == "limit"
        assert printed["limit"] == f"{FAR_LIMIT} USDC per SOL"
        assert printed["swap"] == "1.5 SOL -> USDC"

        # The watcher saw it end: cancelled, exit 3.
        rest, _ = await asyncio.wait_for(process.communicate(), 20)
        lines += rest.decode().splitlines(keepends=True)
        assert process.returncode == 3, lines
        assert stages("".join(lines)) == ["pending", "open", "cancelled"]
        assert "[was open]" in lines[-1]

        # A later watch replays it to the same end.
        code, again, _ = await cli("watch", order_id, url=url)
        assert code == 3
        assert stages(again) == ["pending", "open", "cancelled"]

        # Too late now: exit 1, the status printed; as JSON too.
        code, out, err = await cli("cancel", order_id, url=url)
        assert code == 1
        assert out.splitlines() == [f"order      {order_id}", "status     cancelled"]
        assert "only a pending or open order can be cancelled" in err
        code, out, _ = await cli("cancel", order_id, "--json", url=url)
        assert code == 1
        assert json.loads(out) == {"orderId": order_id, "status": "cancelled"}

        # No such order, or not an order id: exit 2.
        code, out, err = await cli("cancel", UNKNOWN_ID, url=url)
        assert (code, out) == (2, "")
        assert "order_not_found" in err
        code, _, err = await cli("cancel", "not-an-id", url=url)
        assert code == 2
        assert "invalid_order_id" in err


async def test_a_limit_order_that_expires_exits_4(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        expires_at = time.time() + 4  # epoch seconds: past the CLI's start-up, then soon
        code, out, err = await cli(
            *("submit", "SOL", "USDC", "1", "--limit-price", FAR_LIMIT),
            *("--expires-at", f"{expires_at:.3f}"),
            url=engine.url,
        )
        assert code == 4, (out, err)
        assert stages(out) == ["pending", "open", "expired"]
        order_id = out.splitlines()[0].split()[1]
        order = await stored(engine.url, order_id)
        assert order["status"] == "expired"
        assert order["expiresAt"] == pytest.approx(expires_at, abs=0.01)
        code, again, _ = await cli("watch", order_id, url=engine.url)
        assert code == 4
        assert again.splitlines()[1:] == out.splitlines()[1:]


async def test_a_limit_the_market_pays_fires_and_confirms_then_cannot_be_cancelled(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC).replace(microsecond=0)
        code, out, err = await cli(
            *("submit", "SOL", "USDC", "1", "--limit-price", "100"),
            *("--expires-at", in_an_hour.isoformat()),
            url=engine.url,
        )
        assert code == 0, (out, err)
        lines = out.splitlines()
        assert stages(out) == ["pending", "open", "routing", "building", "submitted", "confirmed"]
        assert "limit 100" in lines[2]
        assert "[trigger slot " in lines[3]
        order_id = lines[0].split()[1]
        order = await stored(engine.url, order_id)
        assert order["expiresAt"] == in_an_hour.timestamp()
        assert float(order["amountOut"]) >= 100  # never below its limit

        code, out, err = await cli("cancel", order_id, url=engine.url)
        assert code == 1
        assert out.splitlines()[1] == "status     confirmed"
        assert f"order {order_id} is confirmed" in err


async def test_limit_options_are_checked(tmp_path: Path) -> None:
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        # An expiry without a limit price: refused before anything is sent.
        code, out, err = await cli(
            "submit", "SOL", "USDC", "1", "--expires-in", "60", url=engine.url
        )
        assert (code, out) == (2, "")
        assert "--expires-in and --expires-at need --limit-price" in err
        for bad in (["--expires-in", "0"], ["--expires-in", "nan"]):
            code, _, err = await cli(
                "submit", "SOL", "USDC", "1", "--limit-price", "1", *bad, url=engine.url
            )
            assert code == 2
            assert "positive number of seconds" in err
        code, _, err = await cli(
            "submit", "SOL", "USDC", "1", "--limit-price", "1", "--expires-in", "60",
            "--expires-at", "2030-01-01T00:00:00Z", url=engine.url,
        )  # fmt: skip
        assert code == 2
        assert "not allowed with argument" in err
        # The server's refusals: exit 2, its code named.
        code, _, err = await cli(
            "submit", "SOL", "USDC", "1", "--limit-price", "abc", url=engine.url
        )
        assert code == 2
        assert "invalid_limit_price" in err
        code, _, err = await cli(
            "submit", "SOL", "USDC", "1", "--limit-price", "1", "--expires-at", "tomorrow",
            url=engine.url,
        )  # fmt: skip
        assert code == 2
        assert "invalid_expiry" in err


async def test_help_states_the_exit_codes() -> None:
    for command, expected in (
        ("submit", "0 confirmed, 1 failed, 3 cancelled, 4 expired"),
        ("watch", "0 confirmed, 1 failed, 3 cancelled, 4 expired"),
        ("cancel", "0 cancelled (the order is printed), 1 not cancellable"),
    ):
        done = await run([sys.executable, "-m", "order_engine", command, "--help"], timeout=30)
        assert done.returncode == 0
        assert expected in " ".join(done.stdout.split())
