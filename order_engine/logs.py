"""Log lines for people (text) or machines (one JSON object per line)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import orjson

# The engine starts every line about an order with "[<order id>] ".
_ORDER = re.compile(r"^\[([0-9a-f-]{36})\] ")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        match = _ORDER.match(message)
        if match:
            entry["orderId"] = match.group(1)
            message = message[match.end() :]
        entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
