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
# Young collections keep CPython's default (700 allocations). Orders in flight hold their
# tasks, coroutines and events for as long as their transactions take to land (seconds with
# realistic venues), and every young collection traverses all that was allocated since the
# last one: at 20,000 a young collection found 60,000-80,000 objects and stopped the loop
# 30-50 ms, a middle one ~150-200 ms (realistic venues paced at 340 orders/s: the POST's way
# in p99 72 ms, 10 with the default). Paced instant orders' p99 and the closed loop's CPU per
# order were no worse with the default either (e2e 0.79-0.84 ms against 0.87-0.88). Objects
# that outlive a young collection reach the oldest generation sooner, so garbage in cycles
# waits for a full collection: a closed WebSocket must not leave any (serving/protocol.py;
# with aiohttp's cycle per WebSocket the e2e row's RSS went 84 -> 180 MiB).


def install_uvloop() -> None:
    """uvloop when it is installed (it is a dependency, except on Windows): a faster loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_gc() -> None:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


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
