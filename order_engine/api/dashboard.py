"""The live dashboard: one static page and its assets, served by the engine itself."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from aiohttp import web

_STATIC = resources.files("order_engine.api").joinpath("static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


async def index(request: web.Request) -> web.Response:
    return _file("index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if "/" in name or name.startswith(".") or name == "index.html":
        raise web.HTTPNotFound()
    return _file(name)


@lru_cache(maxsize=16)  # bounded: names come from URLs
def _read(name: str) -> bytes | None:
    """The packaged file, read once: the assets never change while the engine runs."""
    entry = _STATIC.joinpath(name)
    return entry.read_bytes() if entry.is_file() else None


def _file(name: str) -> web.Response:
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    body = _read(name) if suffix in _TYPES else None
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=body,
        content_type=_TYPES[suffix],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def dashboard_routes() -> list[web.RouteDef]:
    return [web.get("/", index), web.get("/static/{name}", static)]
