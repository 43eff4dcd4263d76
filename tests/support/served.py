"""The app served as the command line serves it (order_engine.serving, its connection rules
included), and raw HTTP connections to it: requests no client library would send,
connections left idle or fed slowly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from order_engine.config import Settings
from order_engine.metrics import Metrics
from order_engine.runtime import listen
from order_engine.serving import serving
from order_engine.serving.protocol import ConnectionRules

WAIT_S = 10.0  # bounds every wait here: a server that never answers fails the test


@dataclass(frozen=True, slots=True)
class Served:
    host: str
    port: int
    rules: ConnectionRules
    opened: list[Raw] = field(default_factory=list)  # closed when the server stops

    async def connect(self, source: str | None = None) -> Raw:
        """A raw connection, from `source` (another loopback address) if given."""
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=local)
        self.opened.append(Raw(reader, writer))
        return self.opened[-1]


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.json()["error"]
        return error


@dataclass(slots=True)
class Raw:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def get(self, path: str, *, close: bool = False) -> Answer:
        connection = b"close" if close else b"keep-alive"
        await self.send(
            b"GET %s HTTP/1.1\r\nHost: test\r\nConnection: %s\r\n\r\n" % (path.encode(), connection)
        )
        return await self.answer()

    async def answer(self) -> Answer:
        """The next response on the connection."""
        async with asyncio.timeout(WAIT_S):
            status_line = await self.reader.readline()
            assert status_line, "the server closed the connection without an answer"
            headers: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split()[1]), headers, body)

    async def closed(self) -> bytes:
        """Waits for the server to close the connection; what it sent until then."""
        async with asyncio.timeout(WAIT_S):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def served(
    app: web.Application, settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Served]:
    sockets = listen("127.0.0.1", 0, settings.server.backlog)
    try:
        async with serving(app, sockets, settings, metrics) as rules:
            server = Served("127.0.0.1", sockets[0].getsockname()[1], rules)
            try:
                yield server
            finally:
                for conn in server.opened:
                    await conn.close()
    finally:
        for sock in sockets:
            sock.close()
