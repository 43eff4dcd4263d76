"""Log lines for people (text) or machines (one JSON object per line).

The engine logs one line per order at INFO (how it ended), so a line's cost is paid for
every order: py-spy put it at about 5% of a trading session's event-loop time. Records
leave out what no format here shows (process, thread and multiprocessing names: a system
call or a lookup each), and the time is formatted once per second, not per line."""

from __future__ import annotations

import logging
import re
import time

import orjson

# The engine starts every line about an order with "[<order id>] ".
_ORDER = re.compile(r"^\[([0-9a-f-]{36})\] ")


class _PerSecond:
    """A record's time, its whole-second part formatted once per second: in UTC as
    `datetime.fromtimestamp(created, UTC).isoformat()` shows it (JSON lines), or in local
    time as logging's `asctime` does, with the record's own milliseconds (text lines)."""

    def __init__(self, whole: str, fraction: str, *, utc: bool) -> None:
        self._whole = whole  # strftime format of the second
        self._fraction = fraction  # %-format of the milliseconds
        self._utc = utc
        self._second = -1
        self._text = ""

    def format(self, created: float, msecs: float | None = None) -> str:
        second = int(created)
        if msecs is not None:
            millis = int(msecs)
        else:
            micros = round((created - second) * 1_000_000)  # half to even, as datetime
            if micros == 1_000_000:
                second, micros = second + 1, 0
            millis = micros // 1000
        if second != self._second:
            moment = time.gmtime(second) if self._utc else time.localtime(second)
            self._second, self._text = second, time.strftime(self._whole, moment)
        return self._text + self._fraction % millis


class TextFormatter(logging.Formatter):
    """`<asctime> <level> <logger> <message>`, asctime as logging's default shows it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._times = _PerSecond("%Y-%m-%d %H:%M:%S", ",%03d", utc=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._times.format(record.created, record.msecs)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._times = _PerSecond("%Y-%m-%dT%H:%M:%S", ".%03d+00:00", utc=True)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": self._times.format(record.created),
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
    # Documented switches: records skip what neither format shows.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
