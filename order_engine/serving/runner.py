"""The app served on listening sockets under the connection rules
(`protocol.GuardedRequestHandler`): what the command line runs until it is told to stop, and
what tests start to reach the same path.

aiohttp's own sites make its plain `RequestHandler`; `GuardedSite` is `web.SockSite` with a
protocol factory of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from yarl import URL

from order_engine.config import Settings
from order_engine.metrics import Metrics
from order_engine.serving.gate import ConnectionGate
from order_engine.serving.protocol import ConnectionRules, GuardedRequestHandler

log = logging.getLogger("order_engine.serving")


class GuardedSite(web.BaseSite):
    __slots__ = ("_factory", "_name", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        factory: Callable[[], GuardedRequestHandler],
        backlog: int,
    ) -> None:
        # The loop listens on the socket again with this: the socket's own is not kept.
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._factory = factory
        host, port = sock.getsockname()[:2]
        self._name = str(URL.build(scheme="http", host=host, port=port))

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, sock=self._sock, backlog=self._backlog
        )


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    sockets: Sequence[socket.socket],
    settings: Settings,
    metrics: Metrics | None = None,
) -> AsyncIterator[ConnectionRules]:
    """Started (the app's start-up run, every socket accepting) inside; stopped gracefully
    on leaving, as `web.run_app` stops."""
    gate = ConnectionGate.from_settings(settings.limits)
    rules = ConnectionRules(gate, settings.server.header_timeout_s, metrics)
    if metrics is not None:
        metrics.connections.set_function(gate.__len__)
    runner = web.AppRunner(app, shutdown_timeout=settings.server.shutdown_grace_s + 5)
    try:
        await runner.setup()
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        keepalive_timeout = settings.server.keepalive_timeout_s

        def handler() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                server, rules=rules, loop=loop, keepalive_timeout=keepalive_timeout, access_log=None
            )

        for sock in sockets:
            await GuardedSite(runner, sock, handler, settings.server.backlog).start()
        per_address, total = gate.limits
        log.info(
            "connections: at most %s per address, %s in all; request heads due within %g s,"
            " idle connections closed after %g s",
            per_address or "any number",
            total or "any number",
            settings.server.header_timeout_s,
            keepalive_timeout,
        )
        yield rules
    finally:
        await runner.cleanup()


async def serve(
    app: web.Application,
    sockets: Sequence[socket.socket],
    settings: Settings,
    metrics: Metrics,
    ready: Callable[[], None],
) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully; a second signal while stopping
    ends the process at once (SIGINT as KeyboardInterrupt)."""
    async with serving(app, sockets, settings, metrics):
        ready()
        await _signalled()


async def _signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
    except NotImplementedError:  # Windows: Ctrl-C cancels the task instead
        pass
    try:
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
