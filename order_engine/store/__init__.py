"""Storage backends behind one `Store` protocol, picked by URL scheme."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from order_engine.store.base import (
    DuplicateOrder,
    OrderQuery,
    SeqConflict,
    Store,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)


class UnsupportedStoreURL(ValueError):
    pass


def store_from_url(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    max_batch: int = 256,
    owner: str = "local",
    lease_s: float = 30.0,
    connect_wait_s: float = 0.0,
) -> Store:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite://:memory:` or
    `postgresql://user@host:port/db[?schema=name]`. Backends are imported lazily.
    `connect_wait_s`: how long PostgreSQL may take to answer at start."""
    if url.startswith("sqlite://"):
        from order_engine.store.sqlite import SQLiteStore

        path = url.removeprefix("sqlite://")
        path = path.removeprefix("/") if path != ":memory:" else path
        if not path:
            raise UnsupportedStoreURL(f"sqlite URL has no path: {url!r}")
        return SQLiteStore(
            path, synchronous=sqlite_synchronous, max_batch=max_batch, owner=owner, lease_s=lease_s
        )
    if url.startswith(("postgresql://", "postgres://")):
        from order_engine.store.postgres import PostgresStore

        dsn, schema = _split_schema(url)
        return PostgresStore(
            dsn,
            schema=schema,
            max_batch=max_batch,
            owner=owner,
            lease_s=lease_s,
            connect_wait_s=connect_wait_s,
        )
    raise UnsupportedStoreURL(f"unsupported store URL {url!r} (use sqlite:// or postgresql://)")


def _split_schema(url: str) -> tuple[str, str | None]:
    """`?schema=` is ours (tables live in that schema); other parameters go to the driver."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not schema.replace("_", "").isalnum():
        raise UnsupportedStoreURL(f"schema name must be letters, digits and _: {schema!r}")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


__all__ = [
    "DuplicateOrder",
    "OrderQuery",
    "SeqConflict",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "store_from_url",
]
