"""The simulated market served over HTTP: one chain and ledger shared by every replica."""

from order_engine.chain.server import build_chain_app
from order_engine.chain.shared import MARKET

__all__ = ["MARKET", "build_chain_app"]
