"""Waiting on what the service logs, instead of sleeping and hoping it happened."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logged(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when `logger` logs a message containing `text` (at INFO or above)."""
    seen = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Handler(logging.INFO)
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.INFO)
    target.addHandler(handler)
    try:
        yield seen
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
