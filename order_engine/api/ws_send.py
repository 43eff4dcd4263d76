"""Sending on a WebSocket: a frame under the send timeout (a peer that does not read is a
slow consumer), without a timer when the send cannot wait, and a burst of frames in one
write to the connection."""

from __future__ import annotations

import asyncio
import struct

from aiohttp import web

from order_engine.api.sockets import SlowConsumer

# The most a text frame's header adds to its payload (RFC 6455: 2, 4 or 10 bytes, unmasked).
_FRAME_HEADER_MAX = 10


def cannot_wait(transport: asyncio.BaseTransport, nbytes: int) -> bool:
    """Whether writing `nbytes` more on `transport` surely does not pause it. Asked of its
    methods, not its type: uvloop's transports, which the command line runs on, subclass
    none of asyncio's."""
    limits = getattr(transport, "get_write_buffer_limits", None)
    size_of = getattr(transport, "get_write_buffer_size", None)
    if limits is None or size_of is None:
        return False
    low, high = limits()
    size = size_of()
    return bool(size <= low and size + nbytes <= high)


async def send_text(
    ws: web.WebSocketResponse,
    text: str,
    timeout: float,
    transport: asyncio.BaseTransport | None = None,
) -> None:
    """Send `text`; SlowConsumer if the peer does not take it within `timeout`.

    A send waits only while writing is paused: the connection's write buffer went past its
    high-water mark (the peer does not read) and has not drained to the low-water mark
    since. With the buffer at most at the low-water mark (so not paused) and, with this
    frame, under the high-water one (so not paused by it), the send cannot wait and needs
    no timer: creating and cancelling one per frame was a visible share of a stream's CPU."""
    # Every character is at most 4 bytes of UTF-8.
    if transport is not None and cannot_wait(transport, 4 * len(text) + _FRAME_HEADER_MAX):
        await ws.send_str(text)
        return
    try:
        async with asyncio.timeout(timeout):
            await ws.send_str(text)
    except TimeoutError:
        raise SlowConsumer from None


def text_frames(texts: list[str]) -> bytes:
    """`texts` as consecutive unmasked, uncompressed text frames (RFC 6455 5.2), as a
    server sends them."""
    out = bytearray()
    for text in texts:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            out += _FRAME_SHORT.pack(0x81, n)
        elif n < 65_536:
            out += _FRAME_MEDIUM.pack(0x81, 126, n)
        else:
            out += _FRAME_LONG.pack(0x81, 127, n)
        out += payload
    return bytes(out)


_FRAME_SHORT = struct.Struct("!BB")
_FRAME_MEDIUM = struct.Struct("!BBH")
_FRAME_LONG = struct.Struct("!BBQ")


def write_burst(
    ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, texts: list[str]
) -> bool:
    """Write `texts` as text frames in ONE write to the connection, or nothing and False:
    when the frames would need compressing (the client asked for it), or when the write
    could pause the connection (the caller then sends them one by one, each under the send
    timeout). A burst of frames written one by one costs a system call and a segment each.
    Raises ConnectionResetError if the connection is closing."""
    # Asked of its methods, not its type, as `cannot_wait` does (uvloop's transports).
    write = None if transport is None else getattr(transport, "write", None)
    if ws.compress or transport is None or write is None:
        return False
    frames = text_frames(texts)
    if not cannot_wait(transport, len(frames)):
        return False
    if ws.closed or transport.is_closing():
        raise ConnectionResetError("Cannot write to closing transport")
    write(frames)
    return True
