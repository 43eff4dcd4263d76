"""A frame that cannot wait is sent without a timer, on asyncio's transports and on uvloop's
(which the command line runs on and which subclass none of asyncio's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from order_engine.api.ws_send import cannot_wait


async def idle_then_full() -> tuple[bool, bool]:
    """On a real connection whose peer does not read: a small frame cannot wait while the
    buffer is empty; once it is past its high-water mark, one can."""
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer = await asyncio.wait_for(accepted, 5)
        transport = writer.transport
        idle = cannot_wait(transport, 100)
        _, high = transport.get_write_buffer_limits()
        # The peer reads nothing: past the kernel's buffers, the rest stays in the transport's.
        while transport.get_write_buffer_size() <= high:
            writer.write(b"x" * 1_000_000)
        full = cannot_wait(transport, 100)
        writer.transport.abort()
        return idle, full
    finally:
        client.transport.abort()
        server.close()
        await server.wait_closed()


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_frame_that_cannot_wait_is_known_on_either_loop(loop: str) -> None:
    factory = asyncio.new_event_loop if loop == "asyncio" else uvloop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(idle_then_full()) == (True, False)
