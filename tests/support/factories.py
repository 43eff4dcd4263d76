"""Settings and orders as the tests make them: small, fast and deterministic."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from order_engine.config import Settings
from order_engine.engine import OrderRequest
from order_engine.venues.tokens import REGISTRY


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """The defaults, except: a SQLite file in `tmp_path` without fsync per commit (and the
    chain's state file there too), the instant venues, and retries and timeouts short
    enough for a test; `sections` last."""
    base = Settings().replace(
        store={"url": f"sqlite:///{tmp_path}/orders.db", "sqlite_synchronous": "NORMAL"},
        venues={"profile": "instant", "seed": 1, "chain_state": f"{tmp_path}/chain.db"},
        engine={
            "workers": 4,
            "retry_base_ms": 5.0,
            "retry_max_ms": 20.0,
            "quote_timeout_ms": 200.0,
        },
        server={"shutdown_grace_s": 2.0},
        websocket={"heartbeat_s": 5.0, "send_timeout_s": 2.0},
    )
    return base.replace(**sections) if sections else base


# The body of POST /api/order/execute most tests send.
ORDER: dict[str, Any] = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5}


def order_request(
    token_in: str = "SOL",
    token_out: str = "USDC",
    amount: str = "2",
    slippage_bps: int = 50,
    **fields: Any,
) -> OrderRequest:
    """A validated order, as the API hands it to the engine (`amount` in whole tokens);
    `fields`: more of OrderRequest's (order_type, limit_price, expires_at, ...)."""
    token = REGISTRY.resolve(token_in)
    return OrderRequest(
        token,
        REGISTRY.resolve(token_out, upcoming=True),
        token.to_base(Decimal(amount)),
        slippage_bps,
        **fields,
    )
