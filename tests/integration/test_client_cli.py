"""`python -m order_engine submit|watch`: the command-line client against a real server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from tests.support.processes import engine_process, free_port, run, spawn


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
    env = {"ORDER_ENGINE_VENUES_PROFILE": "instant", "ORDER_ENGINE_SERVER_LOG_FORMAT": "json"}
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
