"""The live dashboard: one static page and its assets, served by the engine itself."""

from __future__ import annotations

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


def _file(name: str) -> web.Response:
    entry = _STATIC.joinpath(name)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix not in _TYPES or not entry.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=entry.read_bytes(),
        content_type=_TYPES[suffix],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def dashboard_routes() -> list[web.RouteDef]:
    return [web.get("/", index), web.get("/static/{name}", static)]
