"""GET /metrics: Prometheus exposition with the engine's own numbers."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import post_order, services, watch

REPO = Path(__file__).resolve().parents[2]


async def scrape(client: TestClient[Any, Application]) -> dict[tuple[str, tuple[Any, ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics_count_orders_stages_venues_and_batches(
    client: TestClient[Any, Application],
) -> None:
    for _ in range(3):
        await watch(client, await post_order(client))
    services(client).market.chain.drop_next(3)  # three drops: the fourth order fails
    await watch(client, await post_order(client))
    m = await scrape(client)
    assert m[("order_engine_orders_finished_total", (("code", ""), ("status", "confirmed")))] == 3
    failed = ("order_engine_orders_finished_total", (("code", "tx_dropped"), ("status", "failed")))
    assert m[failed] == 1
    assert m[("order_engine_events_total", (("status", "pending"),))] == 4
    assert m[("order_engine_stage_seconds_count", (("status", "submitted"),))] == 6
    wins = sum(v for (name, _), v in m.items() if name == "order_engine_venue_wins_total")
    assert wins == 6  # 3 + 3 routing decisions (the failing order tried three times)
    assert m[("order_engine_quote_spread_bps_count", ())] == 6
    events = sum(v for (name, _), v in m.items() if name == "order_engine_events_total")
    assert events == 3 * 5 + 1 + 3 * 3 + 1  # the failing order: pending, 3 attempts, failed
    # Every event was written, some in one write with the next (a route quoted from the
    # stream, the transaction built): at least an order's creation, one write per attempt
    # and its end; at most one write per event.
    assert 3 * 3 + 5 <= m[("order_engine_store_batch_size_sum", ())] <= events
    assert m[("order_engine_queue_depth", ())] == 0
    assert m[("order_engine_held_orders", ())] == 0
    assert m[("order_engine_transactions_in_flight", ())] == 0


async def test_armed_orders_are_counted_by_type(client: TestClient[Any, Application]) -> None:
    order_id = await post_order(client, orderType="limit", limitPrice="1000000", expiresIn=600)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        async with asyncio.timeout(5):
            while (await ws.receive_json())["status"] != "open":
                pass
    m = await scrape(client)
    assert m[("order_engine_armed_orders", (("type", "limit"),))] == 1
    assert m[("order_engine_armed_orders", (("type", "sniper"),))] == 0


async def test_open_websockets_are_counted(client: TestClient[Any, Application]) -> None:
    services(client).market.chain.hold()
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        async with asyncio.timeout(5):
            while (await ws.receive_json())["status"] != "submitted":
                pass
        m = await scrape(client)
        assert m[("order_engine_websocket_connections", ())] == 1
        assert m[("order_engine_held_orders", ())] == 1
        # Sent, and held by the chain: its transaction is in flight.
        assert m[("order_engine_transactions_in_flight", ())] == 1
    services(client).market.chain.release()


async def test_the_grafana_dashboard_queries_only_metrics_the_engine_exports(
    client: TestClient[Any, Application],
) -> None:
    await watch(client, await post_order(client))
    exported = {name for name, _ in await scrape(client)}
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/order_engine.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"order_engine_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard has queries"
    assert queried <= exported, queried - exported
