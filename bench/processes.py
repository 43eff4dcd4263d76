"""The processes a scenario needs, started with the test suite's launcher, and the load
generator.

Servers are started by `tests.support.processes` (see its docstring for why it lives there
and how a server is started, judged ready and stopped); this module adds what only the
benchmark runs: the floor app, a Redis of its own when one can be started, and the load
generator, whose result is the last line of its stdout.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from tests.support import processes as shared
from tests.support.processes import (
    REPO,
    SERVER_READY,
    MissingProgram,
    Process,
    ProcessFailed,
    free_port,
    launch,
    run,
)


def raise_nofile_limit() -> int:
    """Soft limit up to the hard one; children inherit it, so servers and the load generator
    can each hold 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def floor_app(workdir: Path) -> contextlib.AbstractAsyncContextManager[Process]:
    port = free_port()
    args = [sys.executable, "-m", "bench.floor_app", "--port", str(port)]
    return launch(args, SERVER_READY, f"http://127.0.0.1:{port}", workdir / "floor.log")


@asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[str]:
    """A Redis of the benchmark's own when `redis-server` is installed: the engine publishes
    on one fixed channel, which other users of a shared Redis would also be sent. Otherwise
    the local default Redis."""
    try:
        server = shared.redis_server(free_port(), workdir)
    except MissingProgram:
        yield os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        return
    async with server as process:
        yield process.url


async def run_load(spec: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator once; its result is the last line of its stdout."""
    what = f"load generator ({spec['mode']})"
    try:
        done = await run(
            [sys.executable, "-m", "bench.load"],
            cwd=REPO,
            input=orjson.dumps(spec),
            timeout=timeout,
        )
    except TimeoutError:
        raise ProcessFailed(f"{what} still running after {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        raise ProcessFailed(f"{what} failed: {' | '.join(tail)}")
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result
