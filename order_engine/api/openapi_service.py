"""The service's other paths in the OpenAPI document: stats, the market snapshot, the
dashboard and its assets, metrics, health checks and the document itself."""

from __future__ import annotations

from typing import Any

from order_engine.api.openapi_common import error_responses, json_response

STATS_PATH: dict[str, Any] = {
    "get": {
        "summary": "Queue, in-flight and open orders; every order counted by status",
        "operationId": "stats",
        "description": "queueDepth, inFlight, held and openOrders are this process's "
        "(armed limit and sniper orders by type); byStatus counts every order in the "
        "store, every status present (0 if none). With authentication on, the stats are "
        "still global: every client's orders, not only the caller's.",
        "responses": {
            "200": json_response("Stats", "the stats"),
            **error_responses(401, 429, 503),
        },
    }
}

MARKET_PATH: dict[str, Any] = {
    "get": {
        "summary": "Each venue's current price of every pair, from the streamed pools",
        "operationId": "marketPrices",
        "description": "Both directions of every pair a venue has a pool for (named as "
        "orders name them: SOL, not wSOL), each venue's price for a small reference trade "
        "(`amountIn`, the same on every venue). The first message of /api/market/stream.",
        "responses": {
            "200": json_response("MarketPrices", "the current prices"),
            "503": json_response(
                "Error",
                "market data is off (`market_data_off`) or the streamed pools are behind "
                "the chain (`market_data_stale`)",
            ),
            **error_responses(401, 429),
        },
    }
}

DASHBOARD_PATH: dict[str, Any] = {
    "get": {
        "summary": "The live dashboard (HTML); its assets are under /static/",
        "operationId": "dashboard",
        "security": [],
        "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {}}}}},
    }
}

ASSET_PATH: dict[str, Any] = {
    "get": {
        "summary": "A dashboard asset (script, style sheet)",
        "operationId": "dashboardAsset",
        "security": [],
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "the asset"},
            **error_responses(404),
        },
    }
}

METRICS_PATH: dict[str, Any] = {
    "get": {
        "summary": "Prometheus metrics (text exposition format)",
        "operationId": "metrics",
        "responses": {
            "200": {"description": "metrics", "content": {"text/plain": {"schema": {}}}},
            **error_responses(401, 429),
        },
    }
}

HEALTHZ_PATH: dict[str, Any] = {
    "get": {
        "summary": "Liveness: the process answers",
        "operationId": "healthz",
        "security": [],
        "responses": {"200": json_response("Health", "alive")},
    }
}

READYZ_PATH: dict[str, Any] = {
    "get": {
        "summary": "Readiness: the store answers",
        "operationId": "readyz",
        "security": [],
        "responses": {
            "200": json_response("Health", "ready"),
            "503": json_response("Health", "not ready"),
        },
    }
}

OPENAPI_PATH: dict[str, Any] = {
    "get": {
        "summary": "This document",
        "operationId": "openapi",
        "responses": {
            "200": {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **error_responses(401, 429),
        },
    }
}
