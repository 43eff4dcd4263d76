import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_engine.store.sqlite_checkpoint import WalCheckpointer

PAGE = 4096
# Well past the 1,000 pages of log at which a commit checkpoints by default.
ROWS = 1500


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x BLOB)")
    yield conn
    conn.close()


def _write(writer: sqlite3.Connection) -> None:
    for _ in range(ROWS):
        writer.execute("INSERT INTO t VALUES (randomblob(?))", (PAGE,))


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("wal-checkpoint")}


def test_the_writers_commits_no_longer_checkpoint(
    writer: sqlite3.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "db.sqlite"
    checkpointer = WalCheckpointer(str(path), interval=3600)  # its thread never gets to run
    checkpointer.take_over(writer)
    try:
        _write(writer)
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        # Everything is still in the log: no commit copied it into the database.
        assert path.stat().st_size < 10 * PAGE
        assert Path(f"{path}-wal").stat().st_size > ROWS * PAGE
    finally:
        checkpointer.stop()


def test_the_thread_copies_the_log_into_the_database(
    writer: sqlite3.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "db.sqlite"
    checkpointer = WalCheckpointer(str(path), interval=0.01)
    checkpointer.take_over(writer)
    try:
        _write(writer)
        after_writes = checkpointer.checkpoints
        # The next checkpoint starts after the last commit: it copies all of them.
        assert checkpointer.wait_for(after_writes + 1, timeout=30)
        assert path.stat().st_size > ROWS * PAGE
    finally:
        checkpointer.stop()


def test_stop_ends_the_thread(writer: sqlite3.Connection, tmp_path: Path) -> None:
    before = _threads()
    checkpointer = WalCheckpointer(str(tmp_path / "db.sqlite"), interval=0.01)
    checkpointer.take_over(writer)
    assert checkpointer.wait_for(1, timeout=30)
    assert len(_threads() - before) == 1
    checkpointer.stop()
    assert _threads() == before
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (0,)  # still usable
