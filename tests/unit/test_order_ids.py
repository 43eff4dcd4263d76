"""Order ids: time-ordered version-7 UUIDs, their random bits read from the system's random
source in batches."""

from __future__ import annotations

import os
import time
import uuid

from order_engine.engine.intake import _OrderIds, new_order_id


def test_ids_are_distinct_version_7_uuids_across_batches() -> None:
    ids = [new_order_id() for _ in range(3 * _OrderIds.BATCH + 7)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_an_id_begins_with_the_millisecond_it_was_made_in() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_order_id() for _ in range(2 * _OrderIds.BATCH)]
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(text).int >> 80 for text in ids]
    assert all(before <= stamp <= after for stamp in stamps)
    # Ordered by time: a later millisecond's ids sort after an earlier one's.
    assert stamps == sorted(stamps)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_the_random_bits_differ_within_one_millisecond() -> None:
    ids = [new_order_id() for _ in range(64)]
    tails = {uuid.UUID(text).int & ((1 << 74) - 1) for text in ids}
    assert len(tails) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_order_id()  # the batch is read, most of it left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, "".join(new_order_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parents = "".join(new_order_id() for _ in range(5))
    assert len(child) == len(parents) == 5 * 36
    assert not {child[i : i + 36] for i in range(0, 180, 36)} & {
        parents[i : i + 36] for i in range(0, 180, 36)
    }
