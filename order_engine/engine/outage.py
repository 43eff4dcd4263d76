"""The store refusing writes (a full disk, a lost database), as the engine lives through it.

Each order whose write failed is read back and tried again (`Resumer.on_error`); were
each to wait the same short delay, a long outage would spin every stalled order and write a
warning per try onto the very disk that is full. Instead the wait doubles with every failed
write, up to the retry ceiling, for all orders at once, and the outage is logged when it
begins and when it ends.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("order_engine.engine")


class WriteOutage:
    def __init__(self, base_s: float, max_s: float) -> None:
        self._base = base_s
        self._max = max_s
        self._next = base_s
        self._since: float | None = None  # monotonic time of the first failed write
        self._failed = 0

    def failed(self, error: Exception) -> float:
        """A write failed: how long the order waits before it is read back and retried."""
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "store writes are failing (%s): orders wait and retry, backing off to %.1fs",
                error,
                self._max,
            )
        self._failed += 1
        delay, self._next = self._next, min(self._next * 2, self._max)
        return delay

    def written(self) -> None:
        """A write committed: the outage, if there was one, is over."""
        if self._since is None:
            return
        log.warning(
            "store writes succeed again after %.1fs and %d failed write(s)",
            time.monotonic() - self._since,
            self._failed,
        )
        self._since, self._failed, self._next = None, 0, self._base
