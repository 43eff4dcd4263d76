"""Order ids: random version-4 UUIDs, read from the system's random source in batches."""

from __future__ import annotations

import os
import uuid

from order_engine.engine.intake import _OrderIds, new_order_id


def test_ids_are_distinct_version_4_uuids_across_batches() -> None:
    ids = [new_order_id() for _ in range(3 * _OrderIds.BATCH + 7)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


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
