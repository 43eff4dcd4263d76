"""One process per SQLite file: an exclusive lock on `<database>.lock`.

The claim of a SQLite store takes over every order leased to another id, since only a dead
process could have left them: a second live engine on the file would take the first's orders
in flight and send them again. So the store holds this lock while it is open, and the kernel
drops it if the process dies.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import ClassVar

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl


class DatabaseInUse(Exception):
    """Another process has the database open: one engine per SQLite file."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(
            f"{path}: another engine is using it{holder};"
            " one engine per SQLite file, PostgreSQL for several"
        )
        self.path = path
        self.pid = pid


class ProcessLock:
    """Held while any store of this process has the database open. Stores of one process
    share it (tests open several on one file), so it is counted here rather than taken per
    store: flock would refuse a second descriptor of the same process."""

    _guard = threading.Lock()
    _held: ClassVar[dict[str, tuple[int, int]]] = {}  # lock file -> (descriptor, stores)

    @classmethod
    def acquire(cls, database: str) -> str:
        path = os.path.realpath(database)
        lock_path = f"{path}.lock"
        with cls._guard:
            fd, stores = cls._held.get(lock_path, (-1, 0))
            if stores == 0:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _try_lock(fd):
                    pid = _holder(fd)
                    os.close(fd)
                    raise DatabaseInUse(path, pid)
                # For the message a refused engine prints: where to look for the other one.
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            cls._held[lock_path] = (fd, stores + 1)
        return lock_path

    @classmethod
    def release(cls, lock_path: str) -> None:
        with cls._guard:
            fd, stores = cls._held.pop(lock_path)
            if stores > 1:
                cls._held[lock_path] = (fd, stores - 1)
            else:
                # The file stays: removing it would let a process that opened it just now
                # lock a name nobody else locks any more.
                os.close(fd)


def _try_lock(fd: int) -> bool:
    """False if another process holds the lock; never waits."""
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _holder(fd: int) -> int | None:
    try:
        return int(os.read(fd, 32))
    except (OSError, ValueError):  # not written yet, or unreadable under a mandatory lock
        return None
