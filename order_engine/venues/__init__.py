"""Simulated Raydium and Meteora venues with real AMM math, and a simulated chain."""

from order_engine.venues.chain import LedgerEntry, SimulatedChain
from order_engine.venues.market import SimulatedMarket
from order_engine.venues.profiles import PROFILES, Profile
from order_engine.venues.venue import Faults, SimulatedVenue

__all__ = [
    "PROFILES",
    "Faults",
    "LedgerEntry",
    "Profile",
    "SimulatedChain",
    "SimulatedMarket",
    "SimulatedVenue",
]
