"""Process set-up shared by the engine and the chain service."""

from __future__ import annotations

import asyncio


def install_uvloop() -> None:
    """uvloop when it is installed (it is a dependency, except on Windows): a faster loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
