"""WebSocket clients that stop reading, or never send their order: the server's timeouts,
against a real server and clients that speak WebSocket over real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.sockets import CLOSE_GOING_AWAY
from order_engine.api.ws import CLOSE_POLICY
from order_engine.app import build_app
from order_engine.config import ConfigError, load_settings
from order_engine.orders import OrderEvent, Status
from order_engine.venues import SimulatedMarket
from tests.support.clients import post_order, read_until_closed, services
from tests.support.factories import ORDER, make_settings
from tests.support.logs import logged

# Far more than a loopback socket buffers (tcp_wmem caps at a few MiB): one such message
# leaves the server with data queued that a client that does not read never takes.
HUGE = 16 * 1024 * 1024
# A masked, empty ping: what a client sends without reading anything.
PING = b"\x89\x80" + os.urandom(4)


async def stalled_websocket(client: TestClient[Any, Application], path: str) -> socket.socket:
    """Open a WebSocket (the RFC 6455 handshake over a plain socket), then read nothing more:
    a client whose reader is stuck, with the smallest receive window the kernel allows."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
    sock.setblocking(False)
    try:
        host, port = client.server.host, client.server.port
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        head = b""
        async with asyncio.timeout(5):
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1024)
                assert chunk, head
                head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
    except BaseException:
        sock.close()
        raise
    return sock


def _hung_up(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()
    # Not POLLIN: data the client has not read is pending all along. A reset (or the end
    # of the stream) is what the server dropping the connection looks like from here.
    poller.register(sock.fileno(), select.POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


async def cut_off(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server has dropped the connection. The client speaks (a ping): a server
    that closed its socket answers with a reset, even to a client that reads nothing."""
    await asyncio.get_running_loop().sock_sendall(sock, PING)
    return await asyncio.to_thread(_hung_up, sock, timeout)


def huge_event(order_id: str, seq: int) -> OrderEvent:
    return OrderEvent(order_id, seq, Status.ROUTING, "x" * HUGE, 1.0, {})


async def serve(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, **websocket: float
) -> TestClient[Any, Application]:
    # The heartbeat would end a silent connection on its own: not within these tests.
    settings = make_settings(tmp_path, websocket={"heartbeat_s": 60.0, **websocket})
    client: TestClient[Any, Application] = await aiohttp_client(build_app(settings, market=market))
    return client


async def test_a_firehose_client_that_stops_reading_is_dropped(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await serve(aiohttp_client, tmp_path, market, send_timeout_s=0.2)
    with logged("order_engine.ws", "firehose that does not read") as dropped:
        sock = await stalled_websocket(client, "/api/orders/stream")
        try:
            assert not await cut_off(sock, timeout=0)
            await services(client).hub.publish(huge_event("any", 1))
            async with asyncio.timeout(10):
                await dropped.wait()
            assert await cut_off(sock)
        finally:
            sock.close()


async def test_an_order_watcher_that_stops_reading_is_dropped(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await serve(aiohttp_client, tmp_path, market, send_timeout_s=0.2)
    market.chain.hold()  # the order stays submitted: nothing else is published for it
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        async with asyncio.timeout(10):
            while (last := await ws.receive_json())["status"] != "submitted":
                pass
    with logged("order_engine.ws", "WebSocket that does not read") as dropped:
        sock = await stalled_websocket(client, f"/api/order/status?orderId={order_id}")
        try:
            await services(client).hub.publish(huge_event(order_id, last["seq"] + 1))
            async with asyncio.timeout(10):
                await dropped.wait()
            assert await cut_off(sock)
        finally:
            sock.close()
            market.chain.release()


async def test_a_client_that_does_not_take_the_close_frame_is_dropped_at_shutdown(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """Shutdown closes every WebSocket with 1001; one whose peer takes nothing more (here
    behind a message it never read) cannot receive the close frame and is cut off."""
    client = await serve(aiohttp_client, tmp_path, market, send_timeout_s=60.0)
    sock = await stalled_websocket(client, "/api/orders/stream")
    try:
        await services(client).hub.publish(huge_event("any", 1))
        async with asyncio.timeout(10):
            await services(client).connections.close_all(CLOSE_GOING_AWAY, b"shutting down")
        assert await cut_off(sock)
    finally:
        sock.close()


async def test_execute_refuses_a_client_silent_past_the_first_message_timeout(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await serve(
        aiohttp_client, tmp_path, market, send_timeout_s=60.0, first_message_timeout_s=0.2
    )
    async with client.ws_connect("/api/orders/execute") as ws:
        messages = await read_until_closed(ws, timeout=5)
        assert ws.close_code == CLOSE_POLICY
    assert [m["error"]["code"] for m in messages] == ["timeout"]


async def test_execute_waits_for_the_order_longer_than_the_send_timeout(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """The server's heartbeat ping (due after `heartbeat_s`) marks time: the order is sent
    after it, well past the send timeout, and is still taken."""
    settings = make_settings(
        tmp_path,
        websocket={"heartbeat_s": 0.5, "send_timeout_s": 0.1, "first_message_timeout_s": 30.0},
    )
    client = await aiohttp_client(build_app(settings, market=market))
    async with client.ws_connect("/api/orders/execute", autoping=False) as ws:
        first = await ws.receive(timeout=5)
        assert first.type is WSMsgType.PING, first
        await ws.pong(first.data)
        await ws.send_json(ORDER)
        async with asyncio.timeout(5):
            while (reply := await ws.receive()).type is WSMsgType.PING:
                await ws.pong(reply.data)
        assert reply.type is WSMsgType.TEXT, reply
        assert reply.json()["message"] == "Order submitted successfully."


def test_the_first_message_timeout_is_a_setting_like_the_others() -> None:
    env = {"ORDER_ENGINE_WEBSOCKET_FIRST_MESSAGE_TIMEOUT_S": "2.5"}
    assert load_settings(None, env=env).websocket.first_message_timeout_s == 2.5
    with pytest.raises(ConfigError, match="first_message_timeout_s"):
        load_settings(None, env={"ORDER_ENGINE_WEBSOCKET_FIRST_MESSAGE_TIMEOUT_S": "0"})
