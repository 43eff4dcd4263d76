"""The scaled-out topology as real processes: the chain service, engine replicas on
PostgreSQL + Redis, and nginx in front with the proxy settings the compose file uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import REQUIRE_SERVICES, free_port

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Process:
    process: asyncio.subprocess.Process
    url: str
    log: Path

    def kill(self) -> None:
        """kill -9: no shutdown, no lease released."""
        self.process.kill()


@asynccontextmanager
async def process(
    args: list[str], ready: str, url: str, log: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Process]:
    """Start a process and wait until a line of its stdout (or stderr) contains `ready`."""
    handle = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=log.parent,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    stdout = proc.stdout

    async def copy_rest() -> None:
        while line := await stdout.readline():
            handle.write(line)

    copier: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(20):
            while ready not in (line := (await stdout.readline()).decode()):
                handle.write(line.encode())
                assert line, f"{args[0:3]} exited before it was ready; see {log}"
        copier = asyncio.create_task(copy_rest())
        yield Process(proc, url, log)
    finally:
        if proc.returncode is None:
            # SIGTERM: nginx's master then stops its workers (SIGKILL would orphan them).
            proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if copier is not None:
            copier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await copier
        handle.close()


def chain_service(tmp_path: Path) -> AbstractAsyncContextManager[Process]:
    port = free_port()
    args = [sys.executable, "-m", "order_engine.chain", "--port", str(port), "--profile", "instant"]
    return process(args, "listening on", f"http://127.0.0.1:{port}", tmp_path / "chain.log")


def engine(
    tmp_path: Path, name: str, store_url: str, chain_url: str, redis_url: str, *extra: str
) -> AbstractAsyncContextManager[Process]:
    port = free_port()
    env = {
        "PORT": str(port),
        "ORDER_ENGINE_STORE_URL": store_url,
        "REDIS_URL": redis_url,
        "ORDER_ENGINE_VENUES_CHAIN_URL": chain_url,
        "ORDER_ENGINE_ENGINE_REPLICA_ID": name,
        "ORDER_ENGINE_ENGINE_LEASE_S": "1.0",
        "ORDER_ENGINE_ENGINE_CLAIM_INTERVAL_MS": "50",
        "ORDER_ENGINE_ENGINE_RETRY_BASE_MS": "5",
    }
    args = [sys.executable, "-m", "order_engine", *extra]
    return process(args, "listening on", f"http://127.0.0.1:{port}", tmp_path / f"{name}.log", env)


def nginx(tmp_path: Path, upstreams: list[str]) -> AbstractAsyncContextManager[Process]:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if binary is None:
        reason = "nginx is not installed (apt-get install nginx-light)"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    servers = "\n".join(
        f"        server {u.removeprefix('http://')} max_fails=1 fail_timeout=5s;"
        for u in upstreams
    )
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "nginx" / folder).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx" / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {tmp_path}/nginx/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/nginx/client_body;
    proxy_temp_path {tmp_path}/nginx/proxy;
    fastcgi_temp_path {tmp_path}/nginx/fastcgi;
    uwsgi_temp_path {tmp_path}/nginx/uwsgi;
    scgi_temp_path {tmp_path}/nginx/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream order_engine {{
        least_conn;
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {REPO}/deploy/nginx/proxy.conf;
            proxy_pass http://order_engine;
        }}
    }}
}}
""")
    args = [binary, "-p", str(tmp_path / "nginx"), "-c", str(conf)]
    # nginx logs this once its listening sockets are open.
    return process(args, "start worker process", f"http://127.0.0.1:{port}", tmp_path / "nginx.log")


@asynccontextmanager
async def redis_server(port: int, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A Redis of this test's own, so it can be stopped mid-stream."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    process = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(10):
        while b"Ready to accept connections" not in (line := await process.stdout.readline()):
            assert line, "redis-server exited before it was ready"
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
