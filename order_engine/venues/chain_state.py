"""The simulated chain's durable state: a SQLite file of its own, as a validator keeps its
ledger apart from any client's database.

It holds what a restarted chain needs to go on as if it had never stopped: every settled
transaction (landed with its receipt, or failed with its error), the transactions received
but not yet landed, every pool's state, the market's own state (its clock, fair prices,
launched tokens) and the slot clock's anchor. One process per file (a lock, as the
engine's store takes): two chains writing one history would each undo the other.

Writes come in batches (`ChainBatch`), each ONE transaction: the chain groups what lands in
a turn of the event loop, so a burst of landings costs one commit. They run on the event
loop's thread: the chain's landing is synchronous (nothing may observe a landing between
the pools moving and its commit), and a WAL commit without fsync costs tens of microseconds.
`synchronous=NORMAL`: a commit survives the process dying (kill -9), not a power cut. The
log's checkpoints, which sync both files, run on a thread of their own (`WalCheckpointer`).

A pool is a `pools` row (its state but its bins) and, for a pool with bins (DLMM: hundreds),
a `bins` row per bin: a landing moves one bin or a few, and its commit writes those (and the
pool's small row), not the whole pool again.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from order_engine.store.sqlite_checkpoint import WalCheckpointer
from order_engine.store.sqlite_lock import DatabaseInUse, ProcessLock
from order_engine.venues.base import (
    LedgerEntry,
    LegFill,
    Receipt,
    Tx,
    TxState,
    TxStatus,
)
from order_engine.venues.tokens import REGISTRY, TokenRegistry
from order_engine.venues.wire import (
    Fields,
    error_from_json,
    error_to_json,
    leg_fill_from_fields,
    leg_fill_to_json,
    tx_from_fields,
    tx_to_json,
)

log = logging.getLogger("order_engine.venues")

MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    signature TEXT NOT NULL UNIQUE,
    slot INTEGER NOT NULL,
    state TEXT NOT NULL,
    token_in TEXT,
    token_out TEXT,
    amount_in TEXT,
    amount_out TEXT,
    legs TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS settled_landed ON settled (state, seq);
CREATE TABLE IF NOT EXISTS pending (
    signature TEXT PRIMARY KEY,
    tx TEXT NOT NULL,
    dropped INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
    pool_id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bins (
    pool_id TEXT NOT NULL,
    bin_id INTEGER NOT NULL,
    x TEXT NOT NULL,
    y TEXT NOT NULL,
    PRIMARY KEY (pool_id, bin_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_SETTLED_COLUMNS = "signature, slot, state, token_in, token_out, amount_in, amount_out, legs, error"


class ChainStateUnavailable(Exception):
    """The chain's state file cannot be opened (or another process holds it)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """A transaction's final fate; `entry` for one that landed."""

    signature: str
    slot: int
    status: TxStatus
    entry: LedgerEntry | None = None


@dataclass(frozen=True, slots=True)
class PoolRow:
    """A pool as committed: its state whole, or (not `whole`) whole but for its "bins",
    which lists only those that changed since the pool was last committed. Amounts in
    `bins` rows are text: a bin's x may not fit SQLite's 64-bit integers."""

    pool_id: str
    venue: str
    state: dict[str, Any]
    whole: bool = True


@dataclass(slots=True)
class ChainBatch:
    """What one commit writes."""

    received: list[tuple[Tx, bool]] = field(default_factory=list)  # (tx, dropped)
    settled: list[Settled] = field(default_factory=list)
    pools: list[PoolRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.received or self.settled or self.pools or self.meta)


@dataclass(frozen=True, slots=True)
class Loaded:
    pools: dict[str, tuple[str, dict[str, Any]]]  # pool id -> (venue, whole state)
    meta: dict[str, Any]


class ChainState:
    def __init__(self, path: str | Path = MEMORY) -> None:
        """A file is opened by `open()` (the market's start); memory at once."""
        self.path = str(path)
        self.durable = self.path != MEMORY
        self._lock: str | None = None
        self._db: sqlite3.Connection | None = None
        self._checkpointer: WalCheckpointer | None = None
        if not self.durable:
            self.open()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the chain state {self.path} is not open")
        return self._db

    def open(self) -> None:
        """Open (creating) the file; again, nothing. Raises ChainStateUnavailable."""
        if self._db is not None:
            return
        try:
            if self.durable:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._lock = ProcessLock.acquire(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            _move_bins_out_of_pools(db)
            self._db = db
            if self.durable:
                self._checkpoint_apart(db)
        except DatabaseInUse as exc:
            holder = f" (pid {exc.pid})" if exc.pid is not None else ""
            raise ChainStateUnavailable(
                f"the chain state {self.path} is in use by another process{holder}:"
                " one simulated chain per file"
            ) from None
        except (sqlite3.Error, OSError) as exc:
            self._unlock()
            raise ChainStateUnavailable(f"cannot open the chain state {self.path}: {exc}") from exc

    def _checkpoint_apart(self, db: sqlite3.Connection) -> None:
        checkpointer = WalCheckpointer(self.path)
        try:
            checkpointer.take_over(db)
        except sqlite3.Error as exc:
            # Commits checkpoint as SQLite does by default: slower now and then, still right.
            log.warning("checkpoints of %s stay in its commits: %s", self.path, exc)
            return
        self._checkpointer = checkpointer

    def close(self) -> None:
        db, self._db = self._db, None
        checkpointer, self._checkpointer = self._checkpointer, None
        try:
            if checkpointer is not None:
                checkpointer.stop()
            if db is not None:
                db.close()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            ProcessLock.release(self._lock)
            self._lock = None

    # -- writes ------------------------------------------------------------------------

    def commit(self, batch: ChainBatch) -> None:
        """Everything in `batch` or nothing. Raises sqlite3.Error."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO pending (signature, tx, dropped) VALUES (?, ?, ?)",
                [
                    (tx.signature, orjson.dumps(tx_to_json(tx)).decode(), int(dropped))
                    for tx, dropped in batch.received
                ],
            )
            db.executemany(
                f"INSERT OR IGNORE INTO settled ({_SETTLED_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [_settled_row(s) for s in batch.settled],
            )
            db.executemany(
                "DELETE FROM pending WHERE signature = ?", [(s.signature,) for s in batch.settled]
            )
            for row in batch.pools:  # in order: a later row of a pool is newer
                _write_pool(db, row)
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(key, orjson.dumps(value).decode()) for key, value in batch.meta.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reads -------------------------------------------------------------------------

    def load(self) -> Loaded:
        pools: dict[str, tuple[str, dict[str, Any]]] = {
            pool_id: (venue, orjson.loads(state))
            for pool_id, venue, state in self.db.execute("SELECT pool_id, venue, state FROM pools")
        }
        # Each pool's bins sorted, as `state()` lists them (the table's key order: free).
        bins = self.db.execute("SELECT pool_id, bin_id, x, y FROM bins ORDER BY pool_id, bin_id")
        for pool_id, bin_id, x, y in bins:
            stored = pools.get(pool_id)
            if stored is not None:
                stored[1].setdefault("bins", []).append([bin_id, int(x), int(y)])
        meta = {key: orjson.loads(value) for key, value in self.db.execute("SELECT * FROM meta")}
        return Loaded(pools, meta)

    def pending(self, registry: TokenRegistry = REGISTRY) -> list[tuple[Tx, bool]]:
        """The transactions received and not yet settled, in the order they came."""
        rows = self.db.execute("SELECT tx, dropped FROM pending ORDER BY rowid")
        return [
            (tx_from_fields(Fields(orjson.loads(tx), "tx", registry)), bool(dropped))
            for tx, dropped in rows
        ]

    def lookup(self, signature: str) -> Settled | None:
        row = self.db.execute(
            f"SELECT {_SETTLED_COLUMNS} FROM settled WHERE signature = ?", (signature,)
        ).fetchone()
        return None if row is None else _settled_from_row(row)

    def ledger(self) -> list[LedgerEntry]:
        """Every landed transaction, in landing order."""
        rows = self.db.execute(
            f"SELECT {_SETTLED_COLUMNS} FROM settled WHERE state = ? ORDER BY seq",
            (TxState.LANDED.value,),
        )
        entries = [_settled_from_row(row).entry for row in rows]
        return [entry for entry in entries if entry is not None]

    def landed_count(self, signature: str) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM settled WHERE signature = ? AND state = ?",
            (signature, TxState.LANDED.value),
        ).fetchone()
        return int(row[0])


def _write_pool(db: sqlite3.Connection, row: PoolRow) -> None:
    state = row.state
    bins = state.get("bins")
    if bins is not None:
        state = {name: value for name, value in state.items() if name != "bins"}
        if row.whole:
            db.execute("DELETE FROM bins WHERE pool_id = ?", (row.pool_id,))
        db.executemany(
            "INSERT OR REPLACE INTO bins (pool_id, bin_id, x, y) VALUES (?, ?, ?, ?)",
            [(row.pool_id, bin_id, str(x), str(y)) for bin_id, x, y in bins],
        )
    db.execute(
        # An upsert changes the row in place; a REPLACE would delete it and insert it again,
        # writing the primary key's index too: one more page in every commit's WAL frames.
        "INSERT INTO pools (pool_id, venue, state) VALUES (?, ?, ?) ON CONFLICT (pool_id)"
        " DO UPDATE SET venue = excluded.venue, state = excluded.state",
        (row.pool_id, row.venue, orjson.dumps(state).decode()),
    )


def _move_bins_out_of_pools(db: sqlite3.Connection) -> None:
    """A file written before bins had a table of their own holds each pool's whole state,
    bins included, in its `pools` row. Such a row is rewritten as a whole row is committed
    now: its bins into `bins` (replacing any there: the row is whole, and only an older
    version writes bins in a row, so it is the newer), the rest in the row. Once, at open,
    in one transaction; after it, a row's state never holds bins, and a commit that upserts
    only a pool's changed bins leaves none of its others stale."""
    old = [
        PoolRow(pool_id, venue, orjson.loads(state))
        for pool_id, venue, state in db.execute(
            "SELECT pool_id, venue, state FROM pools WHERE instr(state, '\"bins\"') > 0"
        )
    ]
    old = [row for row in old if "bins" in row.state]
    if not old:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for row in old:
            _write_pool(db, row)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _settled_row(s: Settled) -> tuple[Any, ...]:
    error = None if s.status.error is None else orjson.dumps(error_to_json(s.status.error))
    entry = s.entry
    if entry is None:
        return (s.signature, s.slot, s.status.state.value, None, None, None, None, None, error)
    legs = orjson.dumps([leg_fill_to_json(leg) for leg in entry.legs]).decode()
    return (
        s.signature,
        s.slot,
        s.status.state.value,
        entry.token_in,
        entry.token_out,
        str(entry.amount_in),
        str(entry.amount_out),
        legs,
        error,
    )


def _settled_from_row(row: tuple[Any, ...]) -> Settled:
    signature, slot, state, token_in, token_out, amount_in, amount_out, legs, error = row
    if state == TxState.LANDED.value:
        fills: tuple[LegFill, ...] = tuple(
            leg_fill_from_fields(Fields(leg, "legs")) for leg in orjson.loads(legs)
        )
        entry = LedgerEntry(
            signature, slot, token_in, token_out, int(amount_in), int(amount_out), fills
        )
        receipt = Receipt(signature, slot, entry.amount_in, entry.amount_out, fills)
        return Settled(signature, slot, TxStatus(TxState.LANDED, receipt=receipt), entry)
    failure = error_from_json(orjson.loads(error)) if error is not None else None
    return Settled(signature, slot, TxStatus(TxState(state), error=failure))
