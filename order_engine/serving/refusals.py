"""What a client is told when it is refused before any handler runs (a request aiohttp's
parser rejected, a connection over a cap, a request head that never arrived): the API's own
`{"error": {...}}` shape, as every other refusal."""

from __future__ import annotations

from http import HTTPStatus

import orjson
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from order_engine.api.errors import ApiError

# aiohttp's parser raises no type of its own for this one, only this message.
_TOO_MANY_HEADERS = "Too many headers"
_MAX_REASON = 200


def parser_refusal(exc: BaseException | None, *, max_headers: int) -> ApiError:
    """The answer to a request the HTTP parser could not read (`exc`: what it raised)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the allowed"
        return ApiError(
            431, "headers_too_large", f"the request line or a header is longer than {limit} bytes"
        )
    reason = _reason(exc) if isinstance(exc, HttpProcessingError) else ""
    if reason.startswith(_TOO_MANY_HEADERS):
        return ApiError(431, "headers_too_large", f"more than {max_headers} headers")
    return ApiError(400, "bad_request", f"malformed HTTP request: {reason or 'unreadable'}")


def handler_failure(status: int) -> ApiError:
    """What aiohttp answers when a handler raised past every middleware (500), or let a
    TimeoutError out (504)."""
    if status == HTTPStatus.GATEWAY_TIMEOUT:
        return ApiError(504, "timeout", "the request timed out on the server")
    if 400 <= status < 500:
        return ApiError(status, "bad_request", HTTPStatus(status).phrase)
    return ApiError(status, "internal_error", "the request failed on the server")


def too_many_connections(per_address: int) -> ApiError:
    return ApiError(
        429,
        "too_many_connections",
        f"at most {per_address} connections at once per address: reuse them (keep-alive)"
        " or close some",
        headers={"Retry-After": "1"},
    )


def server_busy(total: int) -> ApiError:
    return ApiError(
        503,
        "server_busy",
        f"the server holds its most connections ({total}): retry shortly",
        headers={"Retry-After": "1"},
    )


def head_timeout(seconds: float) -> ApiError:
    return ApiError(
        408, "request_timeout", f"the request's headers did not arrive within {seconds:g} s"
    )


def raw_response(error: ApiError) -> bytes:
    """A whole HTTP/1.1 answer to write on a connection before (or instead of) any request
    the server read: it closes the connection."""
    body = orjson.dumps(error.body())
    lines = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _reason(exc: HttpProcessingError) -> str:
    """The parser's words without the bytes it quotes and the caret under them:
    'Invalid method encountered:\\n\\n  b"GARBAGE"\\n     ^' -> 'Invalid method encountered'."""
    words = []
    for line in str(exc.message).splitlines():
        line = line.strip()
        if not line or line.startswith(("b'", 'b"', "bytearray(")) or set(line) <= {"^", "~"}:
            continue
        words.append(line.rstrip(":"))
    return ": ".join(words)[:_MAX_REASON]
