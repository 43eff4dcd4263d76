"""A store that cannot be opened at start says so in one line naming what and why; a
PostgreSQL that does not answer yet is waited for, with a growing delay, up to a limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from order_engine.store import StoreUnavailable, store_from_url
from tests.support.logs import logged
from tests.support.processes import free_port
from tests.support.services import postgres_behind_proxy, require_postgres


async def test_a_file_that_is_not_a_database_is_named_with_the_cause(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    path.write_bytes(b"not a database, not even close" * 100)
    store = store_from_url(f"sqlite:///{path}")
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    message = str(refused.value)
    assert str(path) in message and "not a database" in message
    assert "\n" not in message


async def test_postgres_not_answering_is_given_up_after_the_wait() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    store = store_from_url(url, connect_wait_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with logged("order_engine.store.postgres", "trying again") as retried:
        with pytest.raises(StoreUnavailable) as refused:
            await store.open()
        assert retried.is_set()
    assert loop.time() - started >= 0.25  # it waited, then gave up within the limit
    message = str(refused.value)
    assert "127.0.0.1" in message and "tries" in message and "postgres@" not in message


async def test_postgres_that_comes_up_during_the_wait_is_used() -> None:
    require_postgres()
    async with postgres_behind_proxy() as proxy:
        proxy.cut()
        store = store_from_url(proxy.url, connect_wait_s=10)  # type: ignore[attr-defined]
        with logged("order_engine.store.postgres", "trying again") as retried:
            opening = asyncio.create_task(store.open())
            async with asyncio.timeout(5):
                await retried.wait()
        proxy.restore()
        async with asyncio.timeout(10):
            await opening
        try:
            await store.ping()
        finally:
            await store.close()
