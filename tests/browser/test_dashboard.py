"""The dashboard in a real headless Chromium against a real `python -m order_engine` process.

Needs Debian's `chromium` (never a downloaded browser): without it the tests skip, saying why,
except under CI (ORDER_ENGINE_REQUIRE_SERVICES=1) where they fail. With
ORDER_ENGINE_UPDATE_SCREENSHOT=1 the main test also writes docs/dashboard.png.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, Route, async_playwright, expect

from order_engine.api.auth import new_key
from tests.support.processes import engine_process, free_port
from tests.support.services import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard.png"
UPDATE_SCREENSHOT = os.environ.get("ORDER_ENGINE_UPDATE_SCREENSHOT") == "1"
INSTANT = {"ORDER_ENGINE_VENUES_PROFILE": "instant"}
# A limit far above the market (SOL is about 150 USDC): armed until cancelled or expired.
FAR_LIMIT = "1000"

pytestmark = pytest.mark.timeout(120)


def chromium_path() -> str:
    """Debian's chromium; skip (fail under CI) when it is not installed."""
    found = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium",) if Path(p).exists()), None
    )
    if found is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; ORDER_ENGINE_REQUIRE_SERVICES=1 makes it mandatory")
        pytest.skip(reason)
    return found


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    expect.set_options(timeout=20_000)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_dashboard(chromium: Browser, url: str) -> tuple[Page, list[str]]:
    """The page, once its firehose is open and its history loaded, and its errors so far."""
    page = await chromium.new_page(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    response = await page.goto(f"{url}/")
    assert response is not None
    assert response.status == 200
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(page.locator("body")).to_have_attribute("data-history", "loaded")
    return page, errors


async def post_order(http: aiohttp.ClientSession, url: str, **order: Any) -> str:
    resp = await http.post(f"{url}/api/order/execute", json=order)
    body = await resp.json()
    assert resp.status == 201, body
    order_id: str = body["orderId"]
    return order_id


def row(page: Page, order_id: str) -> Locator:
    return page.locator(f'#orders tbody tr[data-order-id="{order_id}"]')


def open_row(page: Page, order_id: str) -> Locator:
    return page.locator(f'#open-orders tbody tr[data-order-id="{order_id}"]')


async def stored(http: aiohttp.ClientSession, url: str, order_id: str) -> dict[str, Any]:
    resp = await http.get(f"{url}/api/order/{order_id}")
    assert resp.status == 200
    order: dict[str, Any] = (await resp.json())["order"]
    return order


async def until_status(http: aiohttp.ClientSession, url: str, order_id: str, status: str) -> None:
    """Reads the order's stream until it reaches `status` (fails if it ends first)."""
    async with (
        asyncio.timeout(20),
        http.ws_connect(f"{url}/api/order/status?orderId={order_id}") as ws,
    ):
        async for msg in ws:
            event = msg.json()
            if event["status"] == status:
                return
    raise AssertionError(f"order {order_id} ended without reaching {status}")


async def test_dashboard_streams_orders_and_submits_one(tmp_path: Path) -> None:
    port = free_port()
    async with (
        engine_process(tmp_path, port, **INSTANT) as engine,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        url = engine.url
        earlier = [await post_order(http, url, tokenIn="SOL", tokenOut="USDC", amount="2")]

        page, errors = await open_dashboard(chromium, url)
        # History: an order finished before the page opened is listed.
        await expect(row(page, earlier[0])).to_have_attribute("data-status", "confirmed")

        # Live: orders submitted elsewhere after the history was loaded arrive on the firehose,
        # both directions of SOL/USDC so the chart has a market to draw.
        live = []
        for i, amount in enumerate(["1", "300", "4", "900", "0.5", "150"]):
            sell, buy = ("SOL", "USDC") if i % 2 == 0 else ("USDC", "SOL")
            live_id = await post_order(http, url, tokenIn=sell, tokenOut=buy, amount=amount)
            await expect(row(page, live_id)).to_have_attribute("data-status", "confirmed")
            live.append(live_id)

        # The form: a new order whose stages are shown until it is confirmed.
        await page.select_option("#token-in", "SOL")
        await page.select_option("#token-out", "USDC")
        await page.fill("#amount", "2.5")
        await page.fill("#slippage", "75")
        await page.get_by_role("button", name="Swap", exact=True).click()
        detail = page.locator("#order-detail")
        await expect(detail).to_have_attribute("data-status", "confirmed")
        order_id = await detail.get_attribute("data-order-id")
        assert order_id
        assert order_id not in [*earlier, *live]
        for stage in ("pending", "routing", "building", "submitted", "confirmed"):
            await expect(detail.locator(f'li[data-stage="{stage}"]')).to_have_attribute(
                "data-state", "done"
            )
        await expect(row(page, order_id)).to_have_attribute("data-status", "confirmed")

        # What the engine did is what the page shows.
        resp = await http.get(f"{url}/api/order/{order_id}")
        stored = await resp.json()
        order = stored["order"]
        assert (order["tokenIn"], order["tokenOut"], order["amount"]) == ("SOL", "USDC", "2.5")
        assert order["slippageBps"] == 75
        assert order["status"] == "confirmed"
        building = next(e for e in stored["events"] if e["status"] == "building")["data"]
        await expect(row(page, order_id).locator("td").nth(5)).to_have_text(order["dex"])

        # The routing decision: every venue's quote, the winner, by how much.
        decision = page.locator("#decision")
        await expect(decision).to_have_attribute("data-order-id", order_id)
        await expect(decision.locator("tr[data-dex]")).to_have_count(len(building["quotes"]))
        winner = decision.locator('tr[data-winner="true"]')
        await expect(winner).to_have_count(1)
        await expect(winner).to_have_attribute("data-dex", building["dex"])
        for quote in building["quotes"]:
            await expect(decision.locator(f'tr[data-dex="{quote["dex"]}"]')).to_have_attribute(
                "data-amount-out", quote["amountOut"]
            )
        if len(building["quotes"]) > 1:
            await expect(decision.locator("[data-margin-bps]")).to_contain_text("bps")
        await expect(decision.locator(".reason")).to_have_text(building["reason"])

        # Counts, stage latencies and the price chart.
        total = len(earlier) + len(live) + 1
        await expect(page.locator("#stat-confirmed")).to_have_text(str(total))
        await expect(page.locator("#stat-failed")).to_have_text("0")
        for stage in ("routing", "building", "submitted", "confirmed"):
            median = page.locator(f'#latency tr[data-stage="{stage}"] .median')
            await expect(median).to_have_text(re.compile(r"^[0-9.]+ m?s$"))
        chart = page.locator("#price-chart")
        await expect(chart).to_have_attribute("data-pair", "SOL→USDC")
        await expect(chart).to_have_attribute("data-points", re.compile(r"^([4-9]|[1-9][0-9]+)$"))
        await expect(chart).to_have_attribute("data-live-points", re.compile(r"^[1-9][0-9]*$"))
        await expect(page.locator("#chart-empty")).to_be_hidden()

        if UPDATE_SCREENSHOT:
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT))
        assert errors == []


async def test_the_price_chart_moves_with_the_market_before_any_order(tmp_path: Path) -> None:
    port = free_port()
    # The realistic market drifts on its own: its pools move with no order placed.
    async with (
        engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="realistic") as engine,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        page, errors = await open_dashboard(chromium, engine.url)
        await expect(page.locator("#market-conn")).to_have_attribute("data-state", "open")
        chart = page.locator("#price-chart")
        await expect(chart).to_have_attribute("data-pair", "SOL→USDC")
        await expect(page.locator("#chart-empty")).to_be_hidden()
        # The first message gives each venue's price; the drift adds more as it moves them.
        await expect(chart).to_have_attribute("data-live-points", re.compile(r"^([5-9]|\d{2,})$"))
        for dex in ("Raydium", "Meteora"):
            price = page.locator(f'#chart-legend [data-dex="{dex}"] .mono')
            await expect(price).to_have_text(re.compile(r"^1[45][0-9](\.[0-9]+)?$"))  # USDC per SOL
        await expect(page.locator("#stat-total")).to_have_text("0")
        resp = await http.get(f"{engine.url}/api/orders")
        assert (await resp.json())["orders"] == []
        assert errors == []


async def test_dashboard_reconnects_when_the_engine_restarts(tmp_path: Path) -> None:
    port = free_port()
    async with aiohttp.ClientSession() as http, browser() as chromium:
        async with engine_process(tmp_path, port, **INSTANT) as engine:
            page, _ = await open_dashboard(chromium, engine.url)
            engine.process.send_signal(signal.SIGTERM)  # closes the firehose with 1001
            await expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
            assert await engine.process.wait() == 0
        # Failed reconnection attempts log errors in the console: expected while it is down.
        async with engine_process(tmp_path, port, **INSTANT) as engine:
            await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            order_id = await post_order(http, engine.url, tokenIn="JUP", tokenOut="USDC", amount=5)
            await expect(row(page, order_id)).to_have_attribute("data-status", "confirmed")


async def test_a_limit_order_is_placed_listed_as_open_and_cancelled(tmp_path: Path) -> None:
    port = free_port()
    async with (
        engine_process(tmp_path, port, **INSTANT) as engine,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        url = engine.url
        # An open order older than the history's first page (50 orders) is listed all the same.
        older = await post_order(
            http, url, tokenIn="SOL", tokenOut="USDC", amount="3", orderType="limit",
            limitPrice="999", expiresIn=600,
        )  # fmt: skip
        for _ in range(50):
            await post_order(http, url, tokenIn="USDC", tokenOut="SOL", amount="10")
        await until_status(http, url, older, "open")

        page, errors = await open_dashboard(chromium, url)
        listed = open_row(page, older)
        await expect(listed).to_have_attribute("data-status", "open")
        await expect(listed.locator("td.limit")).to_contain_text("≥ 999")
        await expect(listed.locator(".countdown")).to_have_text(re.compile(r"^in (9|10) min"))
        await expect(page.locator("#stat-open")).to_have_text("1")

        # The form: a limit order above the market, expiring in 2 hours.
        await page.get_by_text("Limit", exact=True).click()
        await expect(page.locator("#limit-price")).to_be_visible()
        await expect(page.locator("#limit-unit")).to_have_text("USDC per SOL")
        # The market's price now is given beside the limit, from the streamed pools.
        await expect(page.locator("#limit-hint")).to_contain_text(re.compile(r"≈ 1[45]\d"))
        await page.fill("#amount", "1.25")
        await page.fill("#limit-price", FAR_LIMIT)
        await page.fill("#expires-in", "2")
        await page.select_option("#expires-unit", "3600")
        placed_at = time.time()
        await page.get_by_role("button", name="Place limit order", exact=True).click()

        detail = page.locator("#order-detail")
        await expect(detail).to_have_attribute("data-status", "open")
        order_id = await detail.get_attribute("data-order-id")
        assert order_id
        await expect(detail.locator('li[data-stage="open"]')).to_have_attribute(
            "data-state", "current"
        )
        await expect(detail.locator('[data-fact="limit"]')).to_contain_text("≥ 1000 USDC per SOL")
        order = await stored(http, url, order_id)
        assert (order["orderType"], order["limitPrice"]) == ("limit", FAR_LIMIT)
        assert order["amount"] == "1.25"
        assert order["expiresAt"] == pytest.approx(placed_at + 7200, abs=30)

        # Listed among the open orders: type, limit, expiry, age.
        mine = open_row(page, order_id)
        await expect(mine).to_have_attribute("data-status", "open")
        await expect(mine.locator("td.type")).to_have_text("limit")
        await expect(mine.locator("td.limit")).to_contain_text("≥ 1000")
        await expect(mine.locator(".countdown")).to_have_text(
            re.compile(r"^in (1 h 59|2 h 00) min$")
        )
        await expect(mine.locator("td.age")).to_have_text(re.compile(r"^\d+ s$"))
        await expect(page.locator("#stat-open")).to_have_text("2")
        await expect(row(page, order_id)).to_have_attribute("data-status", "open")

        # Cancelled from the panel: gone from it, shown cancelled everywhere else.
        await mine.get_by_role("button", name=f"Cancel order {order_id}").click()
        result = page.locator("#cancel-result")
        await expect(result).to_have_attribute("data-kind", "ok")
        await expect(result).to_have_text(f"Order {order_id[:8]} cancelled.")
        await expect(mine).to_have_count(0)
        await expect(detail).to_have_attribute("data-status", "cancelled")
        await expect(detail.locator('li[data-stage="cancelled"]')).to_have_attribute(
            "data-state", "stopped"
        )
        await expect(row(page, order_id)).to_have_attribute("data-status", "cancelled")
        assert (await stored(http, url, order_id))["status"] == "cancelled"

        # Cancelled elsewhere: the firehose takes it off the panel.
        resp = await http.delete(f"{url}/api/order/{older}")
        assert resp.status == 200, await resp.json()
        await expect(listed).to_have_count(0)
        await expect(page.locator("#open-empty")).to_be_visible()
        await expect(page.locator("#stat-open")).to_have_text("0")
        assert errors == []


async def test_a_cancel_that_comes_too_late_says_why(tmp_path: Path) -> None:
    """The market crosses the limit while the page's DELETE is on its way: the engine
    answers 409 not_cancellable with the order's status, and the page says so."""
    port = free_port()
    env = {**INSTANT, "ORDER_ENGINE_SIM_CONTROLS": "true"}
    async with (
        engine_process(tmp_path, port, **env) as engine,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        url = engine.url
        market = await (await http.get(f"{url}/api/market")).json()
        sol_usdc = next(p for p in market["pairs"] if p["pair"] == "SOL→USDC")
        best = max(p["price"] for p in sol_usdc["prices"])
        # 1 % above the market now: armed, until SOL moves up 3 %.
        limit = f"{best * 1.01:.2f}"
        order_id = await post_order(
            http, url, tokenIn="SOL", tokenOut="USDC", amount="1", orderType="limit",
            limitPrice=limit,
        )  # fmt: skip
        page, errors = await open_dashboard(chromium, url)
        listed = open_row(page, order_id)
        await expect(listed).to_have_attribute("data-status", "open")

        async def market_moves_first(route: Route) -> None:
            # The DELETE is held until the move fired the order, then reaches the engine.
            if route.request.method == "DELETE":
                move = {"tokenA": "SOL", "tokenB": "USDC", "bps": 300}
                resp = await http.post(f"{url}/api/sim/move", json=move)
                assert resp.status == 200, await resp.json()
                await until_status(http, url, order_id, "routing")
            await route.continue_()

        await page.route(f"**/api/order/{order_id}", market_moves_first)
        await listed.get_by_role("button", name=f"Cancel order {order_id}").click()
        result = page.locator("#cancel-result")
        await expect(result).to_have_attribute("data-kind", "error")
        await expect(result).to_have_text(
            re.compile(
                rf"^Order {order_id[:8]} cannot be cancelled: it is "
                r"(routing|building|submitted|confirmed) \(409 not_cancellable\)\.$"
            )
        )
        await expect(listed).to_have_count(0)
        await expect(row(page, order_id)).to_have_attribute("data-status", "confirmed")
        order = await stored(http, url, order_id)
        assert order["status"] == "confirmed"
        # Routed with its trigger, and never filled below its limit.
        assert float(order["amountOut"]) >= float(limit)
        assert [e for e in errors if "status of 409" not in e] == []


async def test_a_fired_limit_order_shows_its_trigger_and_why_it_was_armed_again(
    tmp_path: Path,
) -> None:
    # Transactions are nearly all dropped (the seeded market drops the first ones): a limit
    # the market pays fires, its transaction is dropped, and it is armed again.
    (tmp_path / "config.toml").write_text("[profiles.instant]\ndrop_rate = 0.99\n")
    port = free_port()
    async with (
        engine_process(tmp_path, port, **INSTANT) as engine,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        url = engine.url
        page, errors = await open_dashboard(chromium, url)
        order_id = await post_order(
            http, url, tokenIn="SOL", tokenOut="USDC", amount="1", orderType="limit",
            limitPrice="100",
        )  # fmt: skip
        async with (
            asyncio.timeout(20),
            http.ws_connect(f"{url}/api/order/status?orderId={order_id}") as ws,
        ):
            events = [await ws.receive_json()]
            while not (events[-1]["status"] == "open" and "rearmed" in events[-1]["data"]):
                events.append(await ws.receive_json())
        fired = next(e for e in events if e["status"] == "routing")["data"]["trigger"]
        rearmed = events[-1]["data"]["rearmed"]

        listed = open_row(page, order_id)
        await expect(listed.locator(".retry")).to_have_attribute(
            "aria-label", f"armed again after {rearmed['code']}"
        )
        await listed.get_by_role("button", name=f"Show order {order_id}").click()
        detail = page.locator("#order-detail")
        await expect(detail).to_have_attribute("data-order-id", order_id)
        await expect(detail.locator('li[data-stage="open"]')).to_have_attribute(
            "data-state", "current"
        )
        # The latest trigger (the instant market does not move: the same price each time).
        await expect(detail.locator('[data-fact="trigger"]')).to_contain_text(
            re.compile(rf"^fired\s*price {fired['price']:.6g} at slot \d+")
        )
        await expect(detail.locator('[data-fact="rearmed"]')).to_contain_text(
            f"{rearmed['code']}: {rearmed['message']}"
        )
        await expect(detail.locator('[data-fact="limit"]')).to_contain_text("≥ 100 USDC per SOL")
        # Its wait for the price is no stage latency; the routing the trigger began is none.
        await expect(page.locator('#latency tr[data-stage="routing"] td').last).to_have_text("0")
        assert errors == []


async def test_with_a_key_the_streams_carry_it_as_a_subprotocol_never_in_a_url(
    tmp_path: Path,
) -> None:
    key, entry = new_key("alice")
    port = free_port()
    async with (
        engine_process(tmp_path, port, ORDER_ENGINE_AUTH_API_KEYS=entry, **INSTANT) as engine,
        aiohttp.ClientSession(headers={"x-api-key": key}) as http,
        browser() as chromium,
    ):
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        response = await page.goto(f"{engine.url}/")
        assert response is not None
        assert response.status == 200
        await page.fill("#api-key", key)
        await page.locator("#key-form").get_by_role("button", name="Save").click()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        await expect(page.locator("#market-conn")).to_have_attribute("data-state", "open")
        order_id = await post_order(http, engine.url, tokenIn="SOL", tokenOut="USDC", amount="1")
        await expect(row(page, order_id)).to_have_attribute("data-status", "confirmed")
        # An order from the form that is not finished yet when its POST is answered (a market
        # order may already be, then it needs no stream) is followed on /api/order/status.
        await page.get_by_text("Limit", exact=True).click()
        await page.fill("#amount", "2")
        await page.fill("#limit-price", FAR_LIMIT)
        async with page.expect_websocket(lambda ws: "/api/order/status" in ws.url) as status:
            await page.get_by_role("button", name="Place limit order", exact=True).click()
        await status.value
        await expect(page.locator("#order-detail")).to_have_attribute("data-status", "open")
        assert sockets and not [url for url in sockets if key in url or "apiKey" in url]
