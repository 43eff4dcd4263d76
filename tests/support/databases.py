"""Scratch PostgreSQL schemas, for tests and the benchmark alike (no pytest here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


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
