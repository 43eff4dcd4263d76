"""Numbered SQL migrations per dialect (`<dialect>/NNN_name.sql`), applied in order."""

from __future__ import annotations

import logging
import sqlite3
import zlib
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

# Any constant shared by every replica: migrations run under this advisory lock, so two
# replicas starting together do not both apply them.
_POSTGRES_LOCK = zlib.crc32(b"order_engine.migrations")


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    """Apply the SQLite migrations not applied yet, each in a transaction of its own (the
    connection runs in autocommit mode: it issues BEGIN itself)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, sql in load_migrations("sqlite"):
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would COMMIT first: statements go one by one instead.
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (version,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("sqlite: applied migration %03d", version)


async def migrate_postgres(conn: asyncpg.Connection, schema: str | None) -> None:
    """Apply the PostgreSQL migrations not applied yet, all in one transaction."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _POSTGRES_LOCK)
        if schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in load_migrations("postgres"):
            if version not in applied:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("postgres: applied migration %03d", version)
