"""A burst of frames written at once (`write_burst`) reads, with a real client, as the same
frames sent one by one would: each size of RFC 6455's length header, in order. It writes
nothing where the client asked for compression or where the burst could pause the
connection (past its high-water mark): the caller then sends the frames one by one."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import WSMsgType, web

from order_engine.api.ws_send import write_burst

# One of each length header: 7 bits, 16 bits, 64 bits; and text that is not ASCII.
TEXTS = ["a", "é" * 100, "x" * 125, "y" * 126, "z" * 65_535, "w" * 65_536, "€" * 40_000]


def app(written: list[bool], high_water: int) -> web.Application:
    async def burst(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        request.transport.set_write_buffer_limits(high=high_water)  # type: ignore[attr-defined]
        wrote = write_burst(ws, request.transport, TEXTS)
        written.append(wrote)
        if not wrote:
            for text in TEXTS:
                await ws.send_str(text)
        await ws.close()
        return ws

    application = web.Application()
    application.router.add_get("/burst", burst)
    return application


ROOM = 1 << 20  # the whole burst fits under this high-water mark
BURST_BYTES = sum(len(t.encode()) for t in TEXTS)


@pytest.mark.parametrize(
    ("compress", "high_water", "in_one_write"),
    [(0, ROOM, True), (15, ROOM, False), (0, BURST_BYTES // 2, False)],
    ids=["one-write", "deflate", "past-high-water"],
)
async def test_a_burst_reads_as_the_frames_sent_one_by_one(
    aiohttp_client: Any, compress: int, high_water: int, in_one_write: bool
) -> None:
    written: list[bool] = []
    client = await aiohttp_client(app(written, high_water))
    received = []
    async with client.ws_connect("/burst", compress=compress, max_msg_size=0) as ws:
        async for message in ws:
            assert message.type is WSMsgType.TEXT
            received.append(message.data)
    assert received == TEXTS
    assert written == [in_one_write]
