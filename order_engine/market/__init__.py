"""The market as this process follows it: pool states streamed from the chain, and quotes
computed from them locally (`MarketData`), with the venues' own quote calls as the fallback
while the stream is down or behind (`StreamedVenue`)."""

from order_engine.market.data import MarketData, StreamGap
from order_engine.market.follow import FeedSource, LocalFeedSource, follow
from order_engine.market.quotes import StreamedVenue

__all__ = [
    "FeedSource",
    "LocalFeedSource",
    "MarketData",
    "StreamGap",
    "StreamedVenue",
    "follow",
]
