"""Starting and stopping the real processes a scenario needs, and running the load generator.

Every server is started as a user would start it (`python -m ...` with environment
variables), is ready when its "listening on" banner reaches stdout, and is stopped with
SIGTERM, as a process manager would. Its log (stderr) goes to a file in the run's work
directory, never to a pipe nobody reads: a chatty server must not block on its own logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class ProcessFailed(RuntimeError):
    """A process exited or answered wrongly; the message says where its log is."""


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_nofile_limit() -> int:
    """Soft limit up to the hard one; children inherit it, so servers and the load generator
    can each hold 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDER_ENGINE_")}
    for key in ("PORT", "HOST", "DATABASE_URL", "REDIS_URL", "REDIS_HOST", "POSTGRES_HOST"):
        env.pop(key, None)  # the caller's own settings must not leak into a measured server
    # The bench package is imported from the checkout, whatever the working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


@dataclass(slots=True)
class Server:
    name: str
    process: asyncio.subprocess.Process
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@asynccontextmanager
async def server(
    name: str,
    args: list[str],
    workdir: Path,
    port: int,
    env: Mapping[str, str] | None = None,
    ready: str = "listening on",
) -> AsyncIterator[Server]:
    log = workdir / f"{name}.log"
    handle = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        env=_env(env or {}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=handle,
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    copier: asyncio.Task[None] | None = None
    try:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while ready not in (line := (await stdout.readline()).decode()):
                    if not line:
                        handle.flush()
                        raise ProcessFailed(
                            f"{name} exited before it was ready; see {log}: {_tail(log)}"
                        )
                    handle.write(line.encode())
        except TimeoutError:
            raise ProcessFailed(f"{name} not ready in {READY_TIMEOUT_S:.0f} s; see {log}") from None

        async def copy_rest() -> None:
            while line := await stdout.readline():
                handle.write(line)

        copier = asyncio.create_task(copy_rest())
        yield Server(name, proc, f"http://127.0.0.1:{port}", log)
    finally:
        await _stop(proc)
        if copier is not None:
            copier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await copier
        handle.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def floor_app(workdir: Path) -> contextlib.AbstractAsyncContextManager[Server]:
    port = free_port()
    args = [sys.executable, "-m", "bench.floor_app", "--port", str(port)]
    return server("floor", args, workdir, port)


def engine(
    workdir: Path,
    name: str,
    *,
    store_url: str,
    profile: str = "instant",
    env: Mapping[str, str] | None = None,
) -> contextlib.AbstractAsyncContextManager[Server]:
    """`python -m order_engine` with its defaults, except where the scenario says."""
    port = free_port()
    settings = {
        "PORT": str(port),
        "ORDER_ENGINE_STORE_URL": store_url,
        "ORDER_ENGINE_VENUES_PROFILE": profile,
        "ORDER_ENGINE_ENGINE_REPLICA_ID": name,
        **(env or {}),
    }
    return server(name, [sys.executable, "-m", "order_engine"], workdir, port, settings)


def chain_service(workdir: Path) -> contextlib.AbstractAsyncContextManager[Server]:
    port = free_port()
    args = [sys.executable, "-m", "order_engine.chain", "--port", str(port)]
    return server("chain", [*args, "--profile", "instant"], workdir, port)


@asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[str]:
    """A Redis of the benchmark's own when `redis-server` is installed: the engine publishes
    on one fixed channel, which other users of a shared Redis would also be sent. Otherwise
    the local default Redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        return
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    async with server("redis", [*args, "no"], workdir, port, ready="Ready to accept"):
        yield f"redis://127.0.0.1:{port}/0"


async def run_load(spec: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator once; its result is the last line of its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        cwd=REPO,
        env=_env({}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(orjson.dumps(spec))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        what = f"load generator ({spec['mode']})"
        raise ProcessFailed(f"{what} still running after {timeout:.0f} s") from None
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.decode().strip().splitlines()[-5:]
        raise ProcessFailed(f"load generator ({spec['mode']}) failed: {' | '.join(tail)}")
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result
