"""Fixtures for every test; the helpers behind them live in `tests/support/`.

- settings, market, client: a real server on a real port with the instant market.
- any_store_client: the same, once over SQLite and once over PostgreSQL (a fresh schema).
- faulty_store, memory_hub, engine: an Engine driven directly, over a real SQLite store
  whose calls a test can make fail (`faulty_store.faults`, see tests/support/faulty_store.py).
- chain_process: the chain service as a real process.

A program a launcher needs (nginx, redis-server) that is missing skips the test, saying why,
or fails it under CI (ORDER_ENGINE_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import build_app
from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.hub import MemoryHub
from order_engine.store import Store, store_from_url
from order_engine.store.sqlite import SQLiteStore
from order_engine.venues import SimulatedMarket
from order_engine.venues.profiles import PROFILES
from tests.support.engines import build_engine
from tests.support.factories import make_settings
from tests.support.faulty_store import FaultyStore
from tests.support.processes import MissingProgram, Process, chain_service
from tests.support.services import RUN_SLOW, postgres_schema, unavailable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="a slow scenario: `make test-all` and CI run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingProgram as exc:
        unavailable(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingProgram as exc:
        unavailable(str(exc))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, market: SimulatedMarket
) -> TestClient[Any, Application]:
    """A real server on a real port, with the instant market, and a client for it."""
    app = build_app(settings, market=market)
    result: TestClient[Any, Application] = await aiohttp_client(app)
    return result


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store_client(
    request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> AsyncIterator[TestClient[Any, Application]]:
    """`client`, over each store: what the API answers must not depend on the backend."""
    if request.param == "sqlite":
        yield await aiohttp_client(build_app(make_settings(tmp_path), market=market))
        return
    async with postgres_schema() as url:
        settings = make_settings(tmp_path, store={"url": url})
        client: TestClient[Any, Application] = await aiohttp_client(
            build_app(settings, market=market)
        )
        yield client
        await client.close()  # the engine stops writing before its schema is dropped


@pytest.fixture
async def faulty_store(tmp_path: Path) -> AsyncIterator[FaultyStore]:
    """A real SQLite store (in `tmp_path`) behind a FaultyStore; faults are cleared before
    it closes, so a test's outage never fails its own teardown."""
    store = FaultyStore(SQLiteStore(tmp_path / "engine.db", synchronous="NORMAL"))
    await store.open()
    try:
        yield store
    finally:
        store.faults.clear()
        await store.close()


@pytest.fixture
async def memory_hub() -> AsyncIterator[MemoryHub]:
    hub = MemoryHub()
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


@pytest.fixture
async def engine(
    faulty_store: FaultyStore, memory_hub: MemoryHub, market: SimulatedMarket, settings: Settings
) -> AsyncIterator[Engine]:
    """A started Engine over `faulty_store` and `memory_hub`, with the instant market; wait
    on it with tests.support.engines.reach."""
    await market.start()
    started = build_engine(store=faulty_store, hub=memory_hub, market=market, settings=settings)
    await started.start()
    try:
        yield started
    finally:
        faulty_store.faults.clear()
        await started.stop(grace=0)
        await market.stop()


@pytest.fixture
async def chain_process(tmp_path: Path) -> AsyncIterator[Process]:
    """`python -m order_engine.chain` with the instant profile, stopped after the test."""
    async with chain_service(tmp_path) as process:
        yield process


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A store of each backend, each in a fresh database (a file, or a schema of its own)
    so runs never collide: tests of the store contract run against both."""
    if request.param == "sqlite":
        s = store_from_url(f"sqlite:///{tmp_path}/store.db", sqlite_synchronous="NORMAL")
        await s.open()
        yield s
        await s.close()
        return
    async with postgres_schema() as url:
        s = store_from_url(url)
        await s.open()
        yield s
        await s.close()
