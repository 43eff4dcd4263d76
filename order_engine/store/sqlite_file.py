"""Which file the SQLite store opened, checked before it writes and when asked if ready.

A database file deleted while the engine runs stays open in its connections: writes go on
succeeding into a ghost nobody will read again, and the next start finds a new empty
database where every order was. A file replaced under it is a stranger's. Either way the
store must stop, and say so, rather than write on.
"""

from __future__ import annotations

import logging
import os

from order_engine.store.base import StoreUnavailable

log = logging.getLogger("order_engine.store")


class DatabaseFile:
    def __init__(self, path: str) -> None:
        """`path` names the database file as the store just opened it."""
        self._path = path
        self._identity = self._stat()
        self._told = False  # logged once, not once per write

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """Raise StoreUnavailable if the path no longer names the file that was opened."""
        now = self._stat()
        if now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        message = (
            f"the database file {self._path} was {what} while the engine ran:"
            " nothing more is written; restore it, then restart the engine"
        )
        if not self._told:
            self._told = True
            log.error(message)
        raise StoreUnavailable(message)
