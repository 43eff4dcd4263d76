"""Prometheus metrics of one process, in a registry of its own (one per application)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Stage latencies run from a few ms (instant venues) to tens of seconds (retries, slow chain).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BPS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "order_engine_events", "Order events committed, by status", ["status"], registry=r
        )
        self.finished = Counter(
            "order_engine_orders_finished",
            "Orders that reached a terminal status, with the failure code",
            ["status", "code"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "order_engine_stage_seconds",
            "Time from an order's previous event to this status",
            ["status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.order_seconds = Histogram(
            "order_engine_order_seconds",
            "Time from pending to a terminal status",
            ["status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.venue_wins = Counter(
            "order_engine_venue_wins",
            "Routing decisions won, by venue (a split counts for its largest leg)",
            ["venue", "split"],
            registry=r,
        )
        self.quotes = Counter(
            "order_engine_quotes",
            "Quote requests of routing, by venue and by where the price came from (stream or rpc)",
            ["venue", "source"],
            registry=r,
        )
        self.market_data_staleness = Gauge(
            "order_engine_market_data_staleness_slots",
            "How far the streamed pool states may be behind the chain (+Inf: stream down)",
            registry=r,
        )
        self.market_data_seq = Gauge(
            "order_engine_market_data_seq",
            "The last message of the chain's account stream applied (it counts messages)",
            registry=r,
        )
        self.market_data_resyncs = Gauge(
            "order_engine_market_data_resyncs",
            "Times the streamed pool states were rebuilt from a snapshot after a break",
            registry=r,
        )
        self.quote_spread_bps = Histogram(
            "order_engine_quote_spread_bps",
            "How much more the winning venue's quote paid than the other's",
            buckets=_BPS,
            registry=r,
        )
        self.store_batch = Histogram(
            "order_engine_store_batch_size",
            "Writes committed per store transaction (group commit)",
            buckets=_BATCH,
            registry=r,
        )
        # Counted by the server's edge (order_engine.serving), below any request handling.
        self.connections = Gauge(
            "order_engine_http_connections",
            "Open client connections, WebSockets included",
            registry=r,
        )
        self.connections_refused = Counter(
            "order_engine_http_connections_refused",
            "Connections refused on arrival: over the per-address or the total cap",
            ["cap"],
            registry=r,
        )
        self.head_timeouts = Counter(
            "order_engine_http_head_timeouts",
            "Connections closed because a request's head did not arrive in time",
            registry=r,
        )
        self.queue_depth = Gauge(
            "order_engine_queue_depth", "Orders waiting for a worker", registry=r
        )
        self.held_orders = Gauge(
            "order_engine_held_orders",
            "Orders this process holds (queued, being worked on, awaiting confirmation)",
            registry=r,
        )
        self.armed_orders = Gauge(
            "order_engine_armed_orders",
            "Limit and sniper orders this process holds open, waiting for their trigger",
            ["type"],
            registry=r,
        )
        self.transactions_in_flight = Gauge(
            "order_engine_transactions_in_flight",
            "Transactions being built or sent whose fate the chain has not told yet",
            registry=r,
        )
        self.websockets = Gauge(
            "order_engine_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.rate_limit_fallbacks = Counter(
            "order_engine_rate_limit_local_fallbacks",
            "Requests limited by this replica's own buckets because Redis failed",
            registry=r,
        )

    def watch(
        self,
        *,
        queue_depth: Callable[[], float],
        held_orders: Callable[[], float],
        armed_orders: Callable[[], Mapping[str, int]],
        transactions_in_flight: Callable[[], float],
        websockets: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time: nothing to keep in step on the hot path."""
        self.queue_depth.set_function(queue_depth)
        self.held_orders.set_function(held_orders)
        for kind in ("limit", "sniper"):
            self.armed_orders.labels(kind).set_function(partial(_count_of, armed_orders, kind))
        self.transactions_in_flight.set_function(transactions_in_flight)
        self.websockets.set_function(websockets)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _count_of(counts: Callable[[], Mapping[str, int]], key: str) -> float:
    return counts()[key]
