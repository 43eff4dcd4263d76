"""The simulated market served over HTTP: one chain and ledger shared by every replica."""

from order_engine.chain.server import MARKET, build_chain_app

__all__ = ["MARKET", "build_chain_app"]
