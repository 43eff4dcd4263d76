"""The real PostgreSQL and Redis servers the tests talk to, and what a test does when a
server or program it needs is missing: skip, saying why, or fail under CI."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.databases import fresh_schema
from tests.support.proxy import TcpProxy

POSTGRES_URL = os.environ.get(
    "ORDER_ENGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_HOST = os.environ.get("ORDER_ENGINE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ORDER_ENGINE_TEST_REDIS_PORT", "6379"))

# CI sets this: a test that needs PostgreSQL, Redis or a program then fails instead of skipping.
REQUIRE_SERVICES = os.environ.get("ORDER_ENGINE_REQUIRE_SERVICES") == "1"
# Slow scenarios (chaos, scaled-out, browser, long fuzzing) run under CI and `make test-all`;
# a plain `make test` skips them, saying so, to stay quick for a newcomer.
RUN_SLOW = REQUIRE_SERVICES or os.environ.get("ORDER_ENGINE_SLOW_TESTS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, saying why; fail it instead when CI makes everything mandatory."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; ORDER_ENGINE_REQUIRE_SERVICES=1 makes it mandatory")
    pytest.skip(reason)


def require_server(name: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        unavailable(f"{name} is not reachable on {host}:{port} ({exc})")


def require_postgres() -> None:
    parts = urlsplit(POSTGRES_URL)
    require_server("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)


def require_redis() -> str:
    """The shared Redis's URL, once it answers."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A store URL whose tables live in a fresh schema, dropped afterwards."""
    require_postgres()
    async with fresh_schema(POSTGRES_URL) as url:
        yield url


@asynccontextmanager
async def postgres_behind_proxy() -> AsyncIterator[TcpProxy]:
    """A fresh schema's PostgreSQL behind a proxy the test can cut; the proxy's `url` is the
    store URL that reaches the schema through it."""
    async with postgres_schema() as url:
        parts = urlsplit(url)
        p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await p.start()
        # Without TLS: with asyncpg's default (sslmode=prefer) each connection first asks
        # for TLS, and a connection the cut proxy resets during that exchange is left open
        # by asyncpg (an "unclosed transport" warning from its pool's reconnects, about one
        # run in twenty). The local server offers no TLS: asking only cost a round trip.
        query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
        netloc = f"{parts.username}@127.0.0.1:{p.port}"
        p.url = urlunsplit(parts._replace(netloc=netloc, query=query))  # type: ignore[attr-defined]
        yield p
        await p.stop()
