"""What an error of SQLite says about the database, as opposed to the row being written."""

from __future__ import annotations

import sqlite3


def is_outage(exc: Exception) -> bool:
    """An error of the database (locked, I/O, full, corrupt), not of the row being written:
    every write would meet it."""
    return isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or (
        type(exc) is sqlite3.DatabaseError
    )


def corruption(path: str, exc: object) -> str | None:
    """What to tell the operator if `exc` says the database file at `path` is malformed (it
    does not heal: only a backup helps), else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return None
    return (
        f"the database file {path} is corrupt ({exc}): restore it from a backup, then restart"
        " the engine"
    )
