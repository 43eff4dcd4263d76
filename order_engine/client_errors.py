"""What the client raises: the server refused, an order was not found or could not be
cancelled, and a trading session's refusals and end."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The server refused, or cannot be reached: the message says which and why."""


class OrderNotFound(ClientError):
    """No such order (or, with authentication on, another client's)."""


class NotCancellable(ClientError):
    """The order's execution began, or it ended: it can no longer be cancelled."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class SessionRefused(ClientError):
    """A trading session's request refused: the server's `code`, and `retry_after` (seconds)
    when asking again later may succeed (rate limited, queue full)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"refused ({error.get('code', '')}): {error.get('message', '')}")
        self.code = str(error.get("code", ""))
        retry_after = error.get("retryAfter")
        self.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None


class SessionClosed(ClientError):
    """The trading session ended (the server closed it, or the connection dropped): what
    was in flight may be asked again on a new one (watch with `after`; submit again with
    the same idempotency key)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code
