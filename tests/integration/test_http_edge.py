"""The server's edge, served as the command line serves it: requests aiohttp's parser refuses
are answered in the JSON error shape, connections over a cap are refused at once, and
request heads that do not come in time, or connections left idle, are closed."""

from __future__ import annotations

import asyncio
import gc
import logging
import select
import socket
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from order_engine.app import SERVICES, build_app
from order_engine.config import Settings
from order_engine.serving.protocol import _AIOHTTP_STATE, GuardedRequestHandler
from order_engine.venues import SimulatedMarket
from tests.support.factories import make_settings
from tests.support.served import WAIT_S, Raw, Served, served

OTHER_ADDRESS = "127.0.0.2"  # Linux routes all of 127/8 to loopback


def edge_settings(tmp_path: Path, **limits: Any) -> Settings:
    """Test settings with no per-address cap unless `limits` sets one."""
    caps = {"connections_per_address": 0, **limits}
    return make_settings(tmp_path, limits=caps)


@pytest.fixture
async def engine(tmp_path: Path, market: SimulatedMarket) -> AsyncIterator[Served]:
    settings = edge_settings(tmp_path)
    async with served(build_app(settings, market=market), settings) as server:
        yield server


async def refused(server: Served, request: bytes) -> tuple[int, dict[str, Any]]:
    return await refused_on(server, request)


async def refused_on(
    server: Served, request: bytes, source: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The answer to `request`, which must close the connection after it."""
    conn = await server.connect(source)
    await conn.send(request)
    answer = await conn.answer()
    assert await conn.closed() == b"", "the connection must close after a parser refusal"
    return answer.status, answer.error


HOST = b"Host: test\r\n"
UPGRADE = (
    b"GET /api/orders/stream HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
POST = b"POST /api/order/execute HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/9.9\r\n" + HOST + b"\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\n" + HOST + b"Bad Header: 1\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n", 400, "bad_request"),
        (POST + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
        (POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "bad_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "bad_request"),
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 431, "headers_too_large"),
        (
            b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 9_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (
            b"GET / HTTP/1.1\r\n"
            + HOST
            + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "headers_too_large",
        ),
    ],
    ids=[
        "bad-request-line",
        "bad-version",
        "bad-header-name",
        "nul-in-header",
        "bad-chunk-size",
        "chunked-and-length",
        "tls-on-http-port",
        "long-request-line",
        "long-header",
        "too-many-headers",
    ],
)
async def test_parser_refusals_are_json_errors(
    engine: Served, request_bytes: bytes, status: int, code: str
) -> None:
    answered, error = await refused(engine, request_bytes)
    assert (answered, error["code"]) == (status, code), error
    assert error["message"]


async def test_a_malformed_request_is_not_logged_as_an_error(
    engine: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can send garbage: each one an ERROR with a traceback would be a log flood."""
    with caplog.at_level(logging.DEBUG):
        answered, _ = await refused(engine, b"GARBAGE\r\n\r\n")
    assert answered == 400
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
    assert any("malformed request" in r.getMessage() for r in caplog.records)


async def test_a_failure_past_every_middleware_is_a_json_500(tmp_path: Path) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/broken", broken)
    async with served(app, edge_settings(tmp_path)) as server:
        conn = await server.connect()
        answer = await conn.get("/broken")
    assert answer.status == 500
    assert answer.error["code"] == "internal_error"


def test_the_aiohttp_internals_the_edge_touches_are_still_there() -> None:
    """The edge's handler touches these of aiohttp's RequestHandler: an aiohttp that renames
    them must fail here, by name, as well as in the behaviour tests."""
    assert set(_AIOHTTP_STATE) <= set(web.RequestHandler.__slots__)


# -- connection caps ----------------------------------------------------------------------


async def hold(server: Served, count: int, source: str | None = None) -> list[Raw]:
    """`count` keep-alive connections, each answered once (so the server has admitted it),
    then left idle."""
    held = []
    for _ in range(count):
        conn = await server.connect(source)
        await conn.get("/healthz")  # any answer: it was admitted
        held.append(conn)
    return held


async def test_an_address_over_its_cap_is_refused_while_others_are_served(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = edge_settings(tmp_path, connections_per_address=3)
    app = build_app(settings, market=market)
    async with served(app, settings, app[SERVICES].metrics) as server:
        held = await hold(server, 3)
        over = await server.connect()
        answer = await over.answer()  # at once, before any request is sent
        assert answer.status == 429
        assert answer.error["code"] == "too_many_connections"
        assert answer.headers["retry-after"] == "1"
        assert await over.closed() == b""

        other = await server.connect(OTHER_ADDRESS)
        metrics = await other.get("/metrics")
        assert metrics.status == 200
        assert 'order_engine_http_connections_refused_total{cap="per_address"} 1.0' in (
            metrics.body.decode()
        )
        assert "order_engine_http_connections 4.0" in metrics.body.decode()

        # One of the three closes (the server closes it, so it has counted it out): the
        # address has a place again.
        assert (await held[0].get("/healthz", close=True)).status == 200
        assert await held[0].closed() == b""
        again = await server.connect()
        assert (await again.get("/healthz")).status == 200


async def test_the_total_cap_refuses_everyone_with_503(tmp_path: Path) -> None:
    settings = edge_settings(tmp_path, max_connections=2)
    async with served(web.Application(), settings) as server:
        await hold(server, 1)
        await hold(server, 1, OTHER_ADDRESS)
        for source in (None, OTHER_ADDRESS):
            over = await server.connect(source)
            answer = await over.answer()
            assert answer.status == 503
            assert answer.error["code"] == "server_busy"
            assert await over.closed() == b""


async def test_exempt_addresses_are_not_capped(tmp_path: Path) -> None:
    """A proxy in connections_exempt carries every client's connections: it is never
    capped, while other peers still are."""
    settings = edge_settings(tmp_path, connections_per_address=1, connections_exempt=("127.0.0.1",))
    async with served(web.Application(), settings) as server:
        await hold(server, 3)
        await hold(server, 1, OTHER_ADDRESS)
        over = await server.connect(OTHER_ADDRESS)
        assert (await over.answer()).error["code"] == "too_many_connections"


async def test_websockets_count_in_the_total_not_against_their_address(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    """A WebSocket is capped per client by websockets_per_client: per address it gives its
    place back once upgraded, so both caps never count it twice."""
    settings = edge_settings(tmp_path, connections_per_address=2)
    app = build_app(settings, market=market)
    async with served(app, settings) as server:
        streams = []
        for _ in range(3):
            conn = await server.connect()
            await conn.send(UPGRADE)
            assert (await conn.answer()).status == 101
            streams.append(conn)
        assert server.rules.gate.count("127.0.0.1") == 0
        assert len(server.rules.gate) == 3
        await hold(server, 2)  # the address's two places are still free
        assert len(server.rules.gate) == 5


# -- timeouts -------------------------------------------------------------------------------


async def test_a_slow_request_head_is_cut_off_with_408(tmp_path: Path) -> None:
    """Slowloris: a head trickled in is answered 408 and closed after header_timeout_s,
    whatever the idle timeout; the others are served meanwhile."""
    settings = make_settings(tmp_path, server={"header_timeout_s": 0.3, "keepalive_timeout_s": 60})
    async with served(web.Application(), settings) as server:
        slow = await server.connect()
        await slow.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        other = await server.connect(OTHER_ADDRESS)
        assert (await other.get("/nothing")).status == 404  # served meanwhile
        answer = await slow.answer()
        assert answer.status == 408
        assert answer.error["code"] == "request_timeout"
        assert await slow.closed() == b""


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, server={"header_timeout_s": 0.3, "keepalive_timeout_s": 60})
    async with served(web.Application(), settings) as server:
        silent = await server.connect()
        assert await silent.closed() == b""  # closed without a word: nothing was asked


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"header_timeout_s": 60, "keepalive_timeout_s": 0.3})
    async with served(web.Application(), settings) as server:
        conn = await server.connect()
        assert (await conn.get("/nothing")).status == 404
        assert await conn.closed() == b""


async def test_a_websocket_is_not_cut_by_the_header_timeout(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    """The timer covers request heads only: a WebSocket open past it stays open."""
    settings = make_settings(tmp_path, server={"header_timeout_s": 0.2})
    app = build_app(settings, market=market)
    async with served(app, settings) as server:
        conn = await server.connect()
        await conn.send(UPGRADE)
        assert (await conn.answer()).status == 101
        # The clock: a silent connection opened later is closed by its own header timeout,
        # so the WebSocket's would have struck by then.
        silent = await server.connect()
        assert await silent.closed() == b""
        await conn.send(b"\x89\x80" + b"\x00" * 4)  # a ping, masked as a client's must be
        async with asyncio.timeout(WAIT_S):
            assert await conn.reader.readexactly(2) == b"\x8a\x00"  # its pong


# -- what a closed connection leaves behind ------------------------------------------------


def live_handlers() -> list[GuardedRequestHandler]:
    return [o for o in gc.get_objects() if isinstance(o, GuardedRequestHandler)]


@pytest.mark.parametrize("ending", ["closed", "dropped"])
async def test_a_closed_websocket_is_freed_as_it_closes(engine: Served, ending: str) -> None:
    """aiohttp leaves a closed WebSocket's handler, request and response in reference cycles
    that only the cyclic garbage collector frees (some 35 objects per WebSocket, and a client
    may open one per order): through the socket's data callback, and, when the client drops
    the connection without a close frame, through the error of the server's close. The
    engine breaks both, so all of it goes as it closes."""
    gc.collect()
    gc.disable()  # what is freed now is freed by reference counting alone
    try:
        conn = await engine.connect()
        await conn.send(UPGRADE)
        assert (await conn.answer()).status == 101
        [handler] = live_handlers()
        freed = asyncio.Event()
        weakref.finalize(handler, freed.set)
        del handler
        if ending == "closed":
            await conn.send(b"\x88\x80" + b"\x00" * 4)  # close, masked as a client's must be
            assert (await conn.closed()).startswith(b"\x88")  # the server's close, then EOF
        await conn.close()
        async with asyncio.timeout(WAIT_S):
            await freed.wait()
    finally:
        gc.enable()


# -- connections the engine has not accepted yet --------------------------------------------


def handshakes_held(port: int, count: int, within_s: float) -> int:
    """Opens `count` connections while the caller's event loop, the server's, does not run
    (a stalled loop accepts none): how many the kernel completes and holds for it, within
    `within_s`. Past the listen backlog a handshake is dropped (the client would retry a
    second later)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        waiting, held = set(socks), 0
        deadline = time.monotonic() + within_s
        while waiting and (left := deadline - time.monotonic()) > 0:
            _, done, _ = select.select([], list(waiting), [], left)
            waiting.difference_update(done)  # connected, or refused (then not held)
            held += sum(not s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in done)
        return held
    finally:
        for sock in socks:
            sock.close()


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


async def test_a_burst_of_connections_is_held_while_the_loop_is_busy(
    engine: Served,
) -> None:
    """aiohttp's own backlog (128) dropped the handshakes of a burst of clients (each retried
    a second later); the engine's holds them until its loop gets to them."""
    if somaxconn() < 600:
        pytest.skip("the kernel caps every listen backlog below 600 (net.core.somaxconn)")
    assert handshakes_held(engine.port, 600, WAIT_S) == 600


async def test_the_backlog_is_a_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"backlog": 8})
    async with served(web.Application(), settings) as server:
        # Linux holds one more than the backlog; the rest wait for a retry.
        held = handshakes_held(server.port, 64, 0.5)
    assert 8 <= held <= 9, held


# -- on uvloop, as the command line serves -------------------------------------------------


async def uvloop_scenario(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, limits={"connections_per_address": 2}, server={"header_timeout_s": 0.3}
    )
    async with served(web.Application(), settings) as server:
        await hold(server, 1)
        slow = await server.connect()
        await slow.send(b"GET / HTTP/1.1\r\n")
        over = await server.connect()
        assert (await over.answer()).error["code"] == "too_many_connections"
        status, error = await refused_on(server, b"GARBAGE\r\n\r\n", OTHER_ADDRESS)
        assert (status, error["code"]) == (400, "bad_request")
        assert (await slow.answer()).error["code"] == "request_timeout"


def test_the_rules_hold_on_uvloop(tmp_path: Path) -> None:
    """The command line runs on uvloop, whose transports and call order are its own."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvloop_scenario(tmp_path))
