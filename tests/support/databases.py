"""Scratch PostgreSQL schemas, for tests and the benchmark alike (no pytest here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from order_engine.store.sqlite import SQLiteStore


@asynccontextmanager
async def fresh_schema(postgres_url: str, prefix: str = "t") -> AsyncIterator[str]:
    """A store URL whose tables live in a fresh schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}schema={schema}"
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@asynccontextmanager
async def sqlite_disk_full(store: SQLiteStore) -> AsyncIterator[None]:
    """A full disk under a SQLite store, until the block ends, without filling one: its
    writer may not grow the file past its size now (PRAGMA max_page_count, a setting of that
    connection, which is why this reaches inside the store), so a write that needs a page
    fails with SQLITE_FULL, "database or disk is full", as on a full disk."""

    def pages(limit: int | None) -> int:
        conn = store._writer
        assert conn is not None
        statement = "PRAGMA max_page_count" + ("" if limit is None else f" = {limit}")
        return int(conn.execute(statement).fetchone()[0])

    unlimited = await store._on_writer(lambda: pages(None))
    await store._on_writer(lambda: pages(1))  # never below the size now: exactly that
    try:
        yield
    finally:
        await store._on_writer(lambda: pages(unlimited))
