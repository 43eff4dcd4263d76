"""Process set-up shared by the engine and the chain service."""

from __future__ import annotations

import asyncio
import gc
import os
import socket

# Full collections after this many middle ones rather than 10: a process holding many
# long-lived objects (armed orders) otherwise pays a traversal of all of them every few
# thousand allocations; a burst of 1,000 orders firing among 100,000 armed ones took 471 ms
# to route with the default and 186 ms with this (`python -m bench.triggers`). Garbage in
# cycles is rare here and waits longer, bounded all the same.
FULL_COLLECTION_EVERY = 1_000
# Young collections after this many allocations rather than 700: an order allocates
# thousands of short-lived containers (requests, tasks, futures, events), most of them gone
# by the next collection when it comes later; each one collected young is traversed once
# instead of being promoted and traversed again. About 3% less CPU per order (e2e).
YOUNG_COLLECTION_EVERY = 20_000


def install_uvloop() -> None:
    """uvloop when it is installed (it is a dependency, except on Windows): a faster loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_gc() -> None:
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, FULL_COLLECTION_EVERY)


def listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to, as aiohttp's own site would
    open them. A server binds these before its start-up runs, so that a port in use fails
    there, before start-up has taken on any work (an engine resumes unfinished orders)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name != "nt":  # there it would let a second server take the same port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 address has a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listening, not only bound: a second server's bind fails even with SO_REUSEADDR.
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
