"""The real PostgreSQL and Redis servers the scaled-out tests talk to."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

POSTGRES_URL = os.environ.get(
    "ORDER_ENGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_HOST = os.environ.get("ORDER_ENGINE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ORDER_ENGINE_TEST_REDIS_PORT", "6379"))

# CI sets this: a test that needs PostgreSQL or Redis then fails instead of skipping.
REQUIRE_SERVICES = os.environ.get("ORDER_ENGINE_REQUIRE_SERVICES") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_server(name: str, host: str, port: int) -> None:
    """Skip (saying why) when a server is not reachable; fail instead under CI."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        reason = f"{name} is not reachable on {host}:{port} ({exc})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; ORDER_ENGINE_REQUIRE_SERVICES=1 makes it mandatory")
    pytest.skip(reason)


def require_postgres() -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(POSTGRES_URL)
    require_server("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)


def require_redis() -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A store URL whose tables live in a fresh schema, dropped afterwards."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
