"""Log lines: the formatters that format a time once per second write what logging's own
formatting (text) and `datetime.isoformat` (JSON) write, at any moment."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from order_engine.logs import JsonFormatter, TextFormatter

ORDER_ID = "01a22b50-c72c-71ca-8de3-5f8d6192b793"


def record(created: float) -> logging.LogRecord:
    r = logging.LogRecord(
        "order_engine.engine", logging.INFO, __file__, 1, "[%s] %s", (ORDER_ID, "confirmed"), None
    )
    r.created = created
    r.msecs = (created - int(created)) * 1000  # as LogRecord sets it
    return r


# Moments in order, several within one second, so the cached second is used and replaced.
moments = st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=30).map(
    lambda xs: sorted(x + d for x in xs for d in (0.0, 0.0004, 0.5, 0.9996))
)


@given(moments)
def test_text_lines_are_what_logging_writes(times: list[float]) -> None:
    ours = TextFormatter()
    theirs = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for t in times:
        assert ours.format(record(t)) == theirs.format(record(t))


@given(moments)
def test_json_lines_carry_the_iso_time_and_the_order_id(times: list[float]) -> None:
    ours = JsonFormatter()
    for t in times:
        entry = orjson.loads(ours.format(record(t)))
        assert entry == {
            "ts": datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "order_engine.engine",
            "orderId": ORDER_ID,
            "message": "confirmed",
        }
