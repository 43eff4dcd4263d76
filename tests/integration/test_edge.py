"""The edge, before any handler: rate limits before API keys, `Expect: 100-continue` answered
only once a request is admitted, the WebSocket key as a subprotocol, and buckets shared by
replicas through Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.auth import SUBPROTOCOL, new_key
from order_engine.api.ratelimit import MemoryLimiter, TokenBuckets
from order_engine.api.ratelimit_redis import RedisLimiter
from order_engine.app import build_app
from order_engine.config import Settings
from order_engine.venues import SimulatedMarket
from tests.support.clients import read_until_closed, services
from tests.support.factories import ORDER, make_settings
from tests.support.proxy import TcpProxy
from tests.support.services import require_redis

ALICE, ALICE_ENTRY = new_key("alice")
# A bucket of 3 that refills one token per 1000 s: the 4th request is refused.
TIGHT = {"requests_per_s": 0.001, "burst": 3, "trust_forwarded_for": True}
STATS = "/api/stats"

Client = TestClient[Any, Application]


async def serve(aiohttp_client: Any, settings: Settings, market: SimulatedMarket) -> Client:
    client: Client = await aiohttp_client(build_app(settings, market=market))
    return client


@pytest.fixture
async def guarded(aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket) -> Client:
    """API keys on, and a tight limit keyed by the address the (trusted) proxy saw."""
    settings = make_settings(tmp_path, auth={"api_keys": (ALICE_ENTRY,)}, limits=TIGHT)
    return await serve(aiohttp_client, settings, market)


def from_(address: str, key: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": address}
    return headers | ({"x-api-key": key} if key is not None else {})


async def statuses(client: Client, headers: dict[str, str], times: int) -> list[int]:
    return [(await client.get(STATS, headers=headers)).status for _ in range(times)]


# -- item 1: 401s are limited too ------------------------------------------------------------


async def test_guessing_keys_meets_429_like_any_traffic(guarded: Client) -> None:
    assert await statuses(guarded, from_("203.0.113.7", "guess"), 4) == [401, 401, 401, 429]
    refused = await guarded.get(STATS, headers=from_("203.0.113.7"))  # no key at all: the same
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


async def test_a_right_guess_from_an_exhausted_address_is_refused_too(guarded: Client) -> None:
    """Else 200 against 429 would tell a guesser which guess was right, at any rate."""
    await statuses(guarded, from_("203.0.113.7", "guess"), 3)
    assert await statuses(guarded, from_("203.0.113.7", ALICE), 1) == [429]


async def test_failures_elsewhere_and_valid_requests_spend_no_valid_keys_address(
    guarded: Client,
) -> None:
    await statuses(guarded, from_("203.0.113.7", "guess"), 4)  # the guesser is limited
    # Alice, at another address, keeps her whole budget; her requests spend her key's
    # bucket, not her address's: a wrong key from there is still answered 401, not 429.
    assert await statuses(guarded, from_("203.0.113.8", ALICE), 4) == [200, 200, 200, 429]
    assert await statuses(guarded, from_("203.0.113.8", "typo"), 1) == [401]


# -- item 2: Expect: 100-continue ------------------------------------------------------------


async def expect_continue(client: Client, headers: dict[str, str]) -> tuple[bytes, int | None]:
    """POSTs an order with `Expect: 100-continue`, sending the body only if the server asks
    for it: the first status line it answers, and the final status once the body went."""
    assert client.server.host is not None and client.server.port is not None
    body = orjson.dumps(ORDER)
    head = b"POST /api/order/execute HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    head += b"Expect: 100-continue\r\n"
    head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"\r\n")
        async with asyncio.timeout(10):
            first = await reader.readline()
            if not first.startswith(b"HTTP/1.1 100 "):
                return first, None
            assert await reader.readline() == b"\r\n"
            writer.write(body)
            final = await reader.readline()
            return first, int(final.split()[1])
    finally:
        writer.close()


async def test_expect_continue_without_a_key_is_401_before_the_body(guarded: Client) -> None:
    first, _ = await expect_continue(guarded, from_("203.0.113.7", "guess"))
    assert first.startswith(b"HTTP/1.1 401 "), first


async def test_expect_continue_over_the_limit_is_429_before_the_body(guarded: Client) -> None:
    await statuses(guarded, from_("203.0.113.7", ALICE), 3)
    first, _ = await expect_continue(guarded, from_("203.0.113.7", ALICE))
    assert first.startswith(b"HTTP/1.1 429 "), first


async def test_expect_continue_with_a_key_continues_and_counts_once(guarded: Client) -> None:
    assert await expect_continue(guarded, from_("203.0.113.7", ALICE)) == (
        b"HTTP/1.1 100 Continue\r\n",
        201,
    )
    # A bucket of 3: the request above spent one token, not two (edge, then middleware).
    assert await statuses(guarded, from_("203.0.113.7", ALICE), 3) == [200, 200, 429]


# -- item 3: the key as a WebSocket subprotocol ----------------------------------------------


async def test_a_websocket_takes_the_key_as_a_subprotocol_and_never_echoes_it(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, auth={"api_keys": (ALICE_ENTRY,)})
    client = await serve(aiohttp_client, settings, market)
    created = await client.post("/api/order/execute", json=ORDER, headers={"x-api-key": ALICE})
    url = f"/api/order/status?orderId={(await created.json())['orderId']}"
    async with client.ws_connect(url, protocols=(SUBPROTOCOL, f"key.{ALICE}")) as ws:
        assert ws.protocol == SUBPROTOCOL
        assert (await read_until_closed(ws))[-1]["status"] == "confirmed"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(url, protocols=(SUBPROTOCOL, "key.wrong"))
    assert refused.value.status == 401
    assert ALICE not in str(refused.value.headers)
    # Without a protocol the server could answer, the offer is refused before aiohttp's
    # handshake would log it (the key with it) as not overlapping.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(url, protocols=(f"key.{ALICE}",))
    assert refused.value.status == 400


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "key-in-header-too"])
async def test_a_lone_key_subprotocol_is_refused_and_never_logged(
    aiohttp_client: Any,
    tmp_path: Path,
    market: SimulatedMarket,
    caplog: pytest.LogCaptureFixture,
    auth: bool,
) -> None:
    """Whether keys are checked or the key came in a header, an offer aiohttp could not answer
    never reaches its handshake, which would log the offered protocols, key and all."""
    settings = make_settings(tmp_path, auth={"api_keys": (ALICE_ENTRY,) if auth else ()})
    client = await serve(aiohttp_client, settings, market)
    secret = "key.never-logged-0123456789"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(
            "/api/orders/stream", protocols=(secret,), headers={"x-api-key": ALICE}
        )
    assert refused.value.status == 400
    assert not [r for r in caplog.records if secret in r.getMessage()]


# -- item 4: buckets shared through Redis ----------------------------------------------------


def with_redis(tmp_path: Path, redis_url: str, prefix: str) -> Settings:
    return make_settings(
        tmp_path,
        hub={"redis_url": redis_url},
        limits={"requests_per_s": 0.001, "burst": 3, "redis_prefix": prefix},
    )


@pytest.fixture
def redis_url() -> str:
    return require_redis()


async def test_replicas_sharing_a_redis_share_one_budget(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, redis_url: str
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    one = await serve(aiohttp_client, with_redis(tmp_path / "one", redis_url, prefix), market)
    two = await serve(aiohttp_client, with_redis(tmp_path / "two", redis_url, prefix), market)
    assert await statuses(one, {}, 2) == [200, 200]
    assert await statuses(two, {}, 2) == [200, 429]  # the budget was 3 for both together
    assert await statuses(one, {}, 1) == [429]


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """The shared Redis behind a proxy the test can cut."""
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_while_redis_is_down_each_replica_limits_alone_and_counts_it(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, redis_proxy: TcpProxy
) -> None:
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    client = await serve(
        aiohttp_client, with_redis(tmp_path, url, f"test:{uuid.uuid4().hex}:"), market
    )
    assert await statuses(client, {}, 2) == [200, 200]
    redis_proxy.cut()
    # Never a 500, never unlimited: this replica's own bucket of 3 holds meanwhile.
    assert await statuses(client, {}, 4) == [200, 200, 200, 429]
    fallbacks = services(client).metrics.registry.get_sample_value(
        "order_engine_rate_limit_local_fallbacks_total"
    )
    assert fallbacks == 4


async def test_more_requests_at_once_than_connections_still_share_redis(redis_url: str) -> None:
    """A burst wider than the connection pool waits for a connection: it is no outage, and
    no request falls back to this replica's own buckets (the pool used to refuse at once)."""
    fallbacks: list[str] = []
    limiter = RedisLimiter(
        redis_url,
        1000.0,
        1000,
        prefix=f"test:{uuid.uuid4().hex}:",
        fallback=MemoryLimiter(TokenBuckets(1000.0, 1000)),
        on_fallback=lambda: fallbacks.append("local"),
        max_connections=8,
    )
    try:
        waits = await asyncio.gather(*(limiter.take(f"ip:{i}") for i in range(200)))
    finally:
        await limiter.close()
    assert waits == [0] * 200
    assert fallbacks == []


async def test_a_limiter_shares_its_buckets_again_once_redis_answers(
    redis_proxy: TcpProxy,
) -> None:
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    local = MemoryLimiter(TokenBuckets(0.001, 3))
    limiter = RedisLimiter(
        url, 0.001, 3, prefix=f"test:{uuid.uuid4().hex}:", fallback=local, retry_s=0
    )
    try:
        assert [await limiter.take("ip:x") for _ in range(2)] == [0, 0]  # Redis: 1 left
        redis_proxy.cut()
        assert [await limiter.take("ip:x") for _ in range(3)] == [0, 0, 0]  # local: 3
        redis_proxy.restore()
        assert await limiter.take("ip:x") == 0  # Redis's last token
        assert await limiter.take("ip:x") > 0
    finally:
        await limiter.close()
