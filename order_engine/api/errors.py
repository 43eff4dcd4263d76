"""Errors a client can cause, turned into HTTP answers only at the handler boundary."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def shown(text: str) -> str:
    """`text` as an answer can quote it: lone surrogates (which no JSON encoder takes) and
    NUL escaped."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


class ApiError(Exception):
    """A refusal with an HTTP status, a stable machine-readable code and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        # Messages and fields may quote what the client sent: a refusal must never fail to
        # encode, or the client would get a 500 (a closed socket on a WebSocket) instead.
        error: dict[str, Any] = {"code": self.code, "message": shown(self.message)}
        if self.field is not None:
            error["field"] = shown(self.field)
        return {"error": error}


def bad_request(code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(400, code, message, field)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), status=error.status, headers=error.headers)
