"""GET /api/tokens: every token this process knows, tradable or upcoming.

The list is the engine's own registry, so it says what an order may name here and now: an
upcoming token turns `tradable` once this process has seen its first pool (in one process
at once; scaled out, when the chain's stream brings the pool).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from order_engine.api.errors import json_response
from order_engine.venues.controls import listing_to_json
from order_engine.venues.tokens import REGISTRY, TokenRegistry, TokenState

# What the OpenAPI document says of the endpoint (`TOKENS_PATH` under "/api/tokens", the
# schema as `TokenList`), for the module that assembles it.
TOKEN_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tokens"],
    "additionalProperties": False,
    "properties": {
        "tokens": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["symbol", "mint", "decimals", "state"],
                "additionalProperties": False,
                "properties": {
                    "symbol": {"type": "string"},
                    "mint": {"type": "string", "description": "base58 mint address"},
                    "decimals": {"type": "integer", "minimum": 0},
                    "state": {
                        "enum": [state.value for state in TokenState],
                        "description": "upcoming: listed, no pool yet (a sniper order may "
                        "target it); tradable: orders may name it",
                    },
                },
            },
        }
    },
}
TOKENS_PATH: dict[str, Any] = {
    "get": {
        "summary": "Tokens: the tradable ones and those about to launch",
        "operationId": "listTokens",
        "responses": {
            "200": {
                "description": "every token, in the order listed",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/TokenList"}}
                },
            },
            "401": {
                "description": "an API key is required (when authentication is on)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "429": {
                "description": "rate limit reached (see Retry-After)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
}


def token_routes(registry: TokenRegistry = REGISTRY) -> list[web.RouteDef]:
    async def tokens(request: web.Request) -> web.Response:
        return json_response({"tokens": [listing_to_json(entry) for entry in registry.listing()]})

    return [web.get("/api/tokens", tokens)]
