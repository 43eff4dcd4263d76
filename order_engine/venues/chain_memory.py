"""What the simulated chain keeps in memory of signatures: the status of each received
(pending) and recently settled one, and which ones it built that were never sent.

Only recent statuses are kept (the chain's state file answers for every signature): settled
ones are forgotten oldest first, by slot, past a horizon or past a count. A signature built
here (64 fresh random bytes) and never sent cannot have settled, so its first send needs no
look in the file; a bounded number of them are remembered, one forgotten is looked up.
"""

from __future__ import annotations

from collections import deque

from order_engine.venues.base import TxState, TxStatus

PENDING = TxStatus(TxState.PENDING)
# Built and not yet sent: signatures a sender holds between its build and its submit.
UNSENT_REMEMBERED = 4096


class Signatures:
    def __init__(self) -> None:
        self._statuses: dict[str, TxStatus] = {}
        self._settled: deque[tuple[int, str]] = deque()  # (slot, signature), oldest first
        self._unsent: dict[str, None] = {}  # insertion-ordered: the oldest first

    def __len__(self) -> int:
        """Signatures whose status is held (received, or recently settled)."""
        return len(self._statuses)

    def __contains__(self, signature: str) -> bool:
        return signature in self._statuses

    def status(self, signature: str) -> TxStatus | None:
        return self._statuses.get(signature)

    def pending(self, signature: str) -> bool:
        return self._statuses.get(signature) is PENDING

    def received(self, signature: str) -> None:
        self._statuses[signature] = PENDING

    def settled(self, signature: str, slot: int, status: TxStatus) -> None:
        self._statuses[signature] = status
        self._settled.append((slot, signature))

    def forget(self, before_slot: int, keep_at_most: int) -> None:
        """Settled statuses older than `before_slot`, or beyond the most kept."""
        settled = self._settled
        while settled and (settled[0][0] < before_slot or len(settled) > keep_at_most):
            _, signature = settled.popleft()
            self._statuses.pop(signature, None)

    def built(self, signature: str) -> None:
        if len(self._unsent) >= UNSENT_REMEMBERED:
            del self._unsent[next(iter(self._unsent))]
        self._unsent[signature] = None

    def first_send(self, signature: str) -> bool:
        """Whether this is the first send of a signature built here (it is forgotten as
        unsent from now on)."""
        if signature not in self._unsent:
            return False
        del self._unsent[signature]
        return True
