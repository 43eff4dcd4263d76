"""Builds the aiohttp application and wires the parts: the only module that does."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import Counter

from order_engine.api.auth import ApiKeys
from order_engine.api.dashboard import dashboard_routes
from order_engine.api.edge import Edge
from order_engine.api.http import OrderSubmitter, RestHandlers, error_middleware
from order_engine.api.market import MarketStreams
from order_engine.api.openapi import openapi_document
from order_engine.api.order_parser import OrderParser
from order_engine.api.ratelimit import build_limiter
from order_engine.api.session import SessionEndpoint
from order_engine.api.sim import sim_routes
from order_engine.api.sockets import CLOSE_GOING_AWAY, Connections
from order_engine.api.tokens import token_routes
from order_engine.api.ws import OrderStreams
from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.engine.supervision import cancel_all
from order_engine.hub import Hub, MemoryHub
from order_engine.market import FeedSource, LocalFeedSource, MarketData, StreamedVenue, follow
from order_engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from order_engine.metrics import Metrics
from order_engine.routing import Router
from order_engine.store import Store, store_from_url
from order_engine.venues import SimulatedMarket
from order_engine.venues.base import Market, Venue
from order_engine.venues.chain_state import ChainState
from order_engine.venues.remote import RemoteMarket
from order_engine.venues.tokens import REGISTRY

log = logging.getLogger("order_engine.app")


@dataclass(slots=True)
class Services:
    """The running parts of one process, for handlers, tests and the CLI."""

    settings: Settings
    store: Store
    hub: Hub
    market: Market
    engine: Engine
    connections: Connections
    metrics: Metrics
    # The pool states streamed from the chain, and where they come from (None: not followed).
    market_data: MarketData | None = None
    feed: FeedSource | None = None


SERVICES = web.AppKey("services", Services)


def replica_id(settings: Settings) -> str:
    configured = settings.engine.replica_id
    return configured or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def build_market(settings: Settings) -> Market:
    if settings.venues.chain_url:
        return RemoteMarket(settings.venues.chain_url)
    path = settings.venues.chain_state
    state = ChainState(path) if path else None  # opened when the market starts
    return SimulatedMarket(settings.profile, seed=settings.venues.seed, state=state)


def build_services(settings: Settings, *, market: Market | None = None) -> Services:
    sqlite = settings.store.url.startswith("sqlite://")
    store = store_from_url(
        settings.store.url,
        sqlite_synchronous=settings.store.sqlite_synchronous,
        max_batch=settings.store.max_batch,
        owner=replica_id(settings),
        lease_s=settings.engine.lease_s,
        connect_wait_s=settings.store.connect_wait_s,
    )
    metrics = Metrics()
    store.observe_batches(metrics.store_batch.observe)
    hub: Hub
    if settings.hub.redis_url:
        from order_engine.hub.redis import RedisHub

        hub = RedisHub(
            settings.hub.redis_url,
            inbox_size=settings.hub.inbox_size,
            last_seqs=store.last_seqs,
            audit_interval=settings.hub.audit_interval_s,
        )
    else:
        hub = MemoryHub(settings.hub.inbox_size)
    if market is None:
        market = build_market(settings)
    # The market is followed whatever quotes routing: armed limit and sniper orders fire on it.
    feed = feed_source(market)
    venues: list[Venue] = list(market.venues.values())
    market_data = MarketData(max_staleness_slots=settings.venues.max_staleness_slots)
    if settings.venues.quote_from_stream:
        # Five quotes an order: each labelled child is looked up once, not per quote.
        quote_counters: dict[tuple[str, str], Counter] = {}

        def count_quote(venue: str, source: str) -> None:
            counter = quote_counters.get((venue, source))
            if counter is None:
                counter = quote_counters[venue, source] = metrics.quotes.labels(venue, source)
            counter.inc()

        venues = [StreamedVenue(v, market_data, counted=count_quote) for v in venues]
    metrics.market_data_staleness.set_function(market_data.staleness_slots)
    metrics.market_data_resyncs.set_function(lambda: market_data.resyncs)
    metrics.market_data_seq.set_function(lambda: market_data.seq)
    router = Router(
        venues,
        quote_timeout=settings.engine.quote_timeout_ms / 1000,
        split_min_gain_bps=settings.venues.split_min_gain_bps,
        split_steps=settings.venues.split_steps,
        max_price_impact_bps=settings.orders.max_price_impact_bps,
    )
    engine = Engine(
        store=store,
        hub=hub,
        router=router,
        chain=market.chain,
        registry=REGISTRY,
        settings=settings.engine,
        execute=settings.engine.role != "api",
        lease_s=settings.engine.lease_s,
        # One process per SQLite file: nobody else's orders to take over after start-up.
        claim_interval=None if sqlite else settings.engine.claim_interval_ms / 1000,
        metrics=metrics,
        market_data=market_data,
        quote_from_stream=settings.venues.quote_from_stream,
        default_expiry_s=settings.orders.default_expiry_s,
    )
    connections = Connections(per_client=settings.limits.websockets_per_client)
    metrics.watch(
        queue_depth=lambda: engine.queue_depth,
        held_orders=lambda: engine.held,
        armed_orders=engine.open_orders,
        transactions_in_flight=lambda: engine.transactions_in_flight,
        websockets=lambda: len(connections),
    )
    return Services(settings, store, hub, market, engine, connections, metrics, market_data, feed)


def feed_source(market: Market) -> FeedSource | None:
    """Where this process follows the pools from: the chain in this process, or the chain
    service's account stream."""
    if isinstance(market, SimulatedMarket):
        return LocalFeedSource(market.feed)
    if isinstance(market, RemoteMarket):
        return market.feed_source
    return None


def build_app(settings: Settings, *, market: Market | None = None) -> web.Application:
    services = build_services(settings, market=market)
    fallbacks = services.metrics.rate_limit_fallbacks
    limiter = build_limiter(settings.limits, settings.hub.redis_url, on_fallback=fallbacks.inc)
    edge = Edge(ApiKeys(settings.auth.api_keys), limiter, settings.limits.proxy_hops)
    # Outermost first: every refusal (limits, auth) is answered as JSON.
    middlewares = [error_middleware, edge.middleware]
    app = web.Application(middlewares=middlewares, client_max_size=settings.server.max_body_bytes)
    if limiter is not None:
        app.on_cleanup.append(lambda _: limiter.close())
    app[SERVICES] = services
    parser = OrderParser(
        REGISTRY,
        default_slippage_bps=settings.orders.default_slippage_bps,
        max_slippage_bps=settings.orders.max_slippage_bps,
        max_expiry_s=settings.orders.max_expiry_s,
    )
    submitter = OrderSubmitter(
        services.engine, services.store, idempotency_ttl_s=settings.orders.idempotency_ttl_s
    )
    rest = RestHandlers(
        submitter=submitter,
        engine=services.engine,
        store=services.store,
        hub=services.hub,
        parser=parser,
        registry=REGISTRY,
        max_body_bytes=settings.server.max_body_bytes,
        body_timeout_s=settings.server.body_timeout_s,
    )
    streams = OrderStreams(
        store=services.store,
        hub=services.hub,
        parser=parser,
        submitter=submitter,
        connections=services.connections,
        heartbeat=settings.websocket.heartbeat_s,
        send_timeout=settings.websocket.send_timeout_s,
        first_message_timeout=settings.websocket.first_message_timeout_s,
        max_message_bytes=settings.server.max_body_bytes,
        proxy_hops=settings.limits.proxy_hops,
    )
    trading = SessionEndpoint(
        store=services.store,
        hub=services.hub,
        engine=services.engine,
        parser=parser,
        submitter=submitter,
        streams=streams,
        connections=services.connections,
        send_timeout=settings.websocket.send_timeout_s,
        limiter=limiter,  # a session's every request counts as an HTTP request does
        proxy_hops=settings.limits.proxy_hops,
    )
    market_streams = MarketStreams(
        services.market_data, streams=streams, connections=services.connections
    )
    openapi_body = orjson.dumps(openapi_document())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=openapi_body, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        body = services.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    if settings.engine.role != "worker":  # a worker executes; it serves no public API
        # Expect: 100-continue is answered before middlewares run: the edge answers it.
        app.router.add_post("/api/order/execute", rest.execute, expect_handler=edge.expect)
        app.router.add_post("/api/orders/execute", rest.execute, expect_handler=edge.expect)
        app.router.add_get("/api/orders/execute", streams.execute)
        app.router.add_get("/api/order/status", streams.status)
        app.router.add_get("/api/order/{order_id}", rest.get_order)
        app.router.add_delete("/api/order/{order_id}", rest.cancel_order)
        app.router.add_get("/api/orders", rest.list_orders)
        app.router.add_get("/api/orders/stream", streams.firehose)
        app.router.add_get("/api/session", trading.session)
        # After the static /api/orders/... paths, which must keep winning over an order id.
        app.router.add_get("/api/orders/{order_id}", rest.get_order)
        app.router.add_delete("/api/orders/{order_id}", rest.cancel_order)
        app.router.add_get("/api/stats", rest.stats)
        app.router.add_get("/api/market", market_streams.prices)
        app.router.add_get("/api/market/stream", market_streams.stream)
        app.router.add_get("/api/openapi.json", openapi)
        app.add_routes(dashboard_routes())
        app.add_routes(token_routes(REGISTRY))
        if settings.sim.controls:  # demos and tests only: whoever reaches them moves the market
            body_timeout_s = settings.server.body_timeout_s
            controls, data = services.market.controls, services.market_data
            for d in sim_routes(controls, data, body_timeout_s=body_timeout_s):
                app.router.add_route(d.method, d.path, d.handler, expect_handler=edge.expect)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", rest.healthz)
    app.router.add_get("/readyz", rest.readyz)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_shutdown)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open in dependency order, close in reverse."""
    s = app[SERVICES]
    await s.store.open()
    try:
        await s.hub.start()
        try:
            await s.market.start()
            following = None
            if s.market_data is not None and s.feed is not None:
                following = asyncio.create_task(follow(s.market_data, s.feed), name="market-data")
            try:
                await s.engine.start()
                yield
            finally:
                # Normally stopped in on_shutdown already; this covers a failed start-up.
                await s.engine.stop(grace=0)
                if following is not None:
                    await cancel_all([following])
                await s.market.stop()
        finally:
            await s.hub.stop()
    finally:
        await s.store.close()


async def _shutdown(app: web.Application) -> None:
    """Graceful stop: refuse new orders (503), let stages under way reach the store, then
    close every WebSocket with 1001 (going away)."""
    s = app[SERVICES]
    await s.engine.stop(grace=s.settings.server.shutdown_grace_s)
    await s.connections.close_all(CLOSE_GOING_AWAY, b"server shutting down")
