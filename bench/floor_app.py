"""The floor: a bare aiohttp app answering the engine's POST with a small JSON reply.

It runs as its own process, on the same event loop policy as the engine (uvloop when
installed), and parses the body as the engine must; the load generator drives it exactly as
it drives the engine, so the ratio of the two cancels the speed of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Sequence

import orjson
from aiohttp import web


def build_app() -> web.Application:
    counter = itertools.count(1)

    async def execute(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        reply = {"orderId": str(next(counter)), "status": "pending", "tokenIn": body["tokenIn"]}
        return web.Response(body=orjson.dumps(reply), status=201, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/order/execute", execute)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda _: print(f"floor listening on http://127.0.0.1:{args.port}", flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
