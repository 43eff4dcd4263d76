"""WAL checkpoints on a thread of their own, for a database written from the event loop.

SQLite checkpoints a WAL database inside the commit that takes the log past 1,000 pages:
that commit copies the log into the database and syncs both files. The simulated chain
commits on the event loop's thread (its landings must not be seen before they are stored),
so every few seconds under load one of its commits stalled the loop for 6-10 ms, and every
order in flight with it (31 such commits in 12 s at 220 orders/s; none without the
checkpoint in the commit).

Here the writer turns its automatic checkpoints off and this thread, on a connection of its
own, runs a PASSIVE checkpoint (it never waits for a reader or the writer) every interval:
the copying and the syncs leave the loop, and the sqlite3 module lets go of the GIL while
they run. The log grows by at most an interval's commits between two checkpoints.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("order_engine.store")

CHECKPOINT_INTERVAL_S = 0.5


class WalCheckpointer:
    def __init__(self, path: str, *, interval: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0  # run so far
        self._ran = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def take_over(self, writer: sqlite3.Connection) -> None:
        """Checkpoint for `writer` from now on. Raises sqlite3.Error if this thread's
        connection cannot be opened: the writer then keeps checkpointing itself."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            writer.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint {self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (after a checkpoint under way) and closes its connection: the
        writer's last close checkpoints what is left, as it always does."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        assert self._conn is not None
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                # The next interval tries again; the log grows meanwhile, nothing is lost.
                if not failing:
                    log.warning("checkpoint of %s failed: %s; trying again", self.path, exc)
                failing = True
                continue
            if failing:
                log.info("checkpoint of %s works again", self.path)
            failing = False
            with self._ran:
                self.checkpoints += 1
                self._ran.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Whether `count` checkpoints have run, waiting up to `timeout` s for them."""
        with self._ran:
            return self._ran.wait_for(lambda: self.checkpoints >= count, timeout)
