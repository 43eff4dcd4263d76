"""aiohttp's connection handler with the server's own rules: connections over a cap refused
at once, a request head that does not arrive in time cut off, and the errors aiohttp answers
itself (a request its parser rejects, a handler failing past every middleware) in the API's
JSON shape.

aiohttp has no public hook for any of these: `handle_error` builds its text/plain answer,
and a site's protocol factory is where a connection is first seen. So this subclasses its
`RequestHandler`, overriding only public methods; the attributes it touches (it reads
`_waiter` and `_request_count`, and clears `_data_received_cb` when the connection is lost)
are named in `_AIOHTTP_STATE`, and tests/integration/test_http_edge.py fails if an upgrade
of aiohttp drops them or stops calling these methods.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_websocket import WebSocketReader

from order_engine.api.errors import json_response
from order_engine.metrics import Metrics
from order_engine.serving.gate import ConnectionGate, Refusal, Ticket
from order_engine.serving.refusals import (
    handler_failure,
    head_timeout,
    parser_refusal,
    raw_response,
    server_busy,
    too_many_connections,
)

log = logging.getLogger("order_engine.serving")

# What of RequestHandler's own state is read here (see the module's docstring).
_AIOHTTP_STATE = ("_waiter", "_request_count", "_data_received_cb")


class ConnectionRules:
    """What every connection of one server shares: its gate, its timeouts, its counters."""

    def __init__(
        self, gate: ConnectionGate, header_timeout_s: float, metrics: Metrics | None = None
    ) -> None:
        self.gate = gate
        self.header_timeout_s = header_timeout_s
        self._metrics = metrics
        per_address, total = gate.limits
        self._refusals = {
            Refusal.PER_ADDRESS: raw_response(too_many_connections(per_address)),
            Refusal.TOTAL: raw_response(server_busy(total)),
        }
        self._timed_out = raw_response(head_timeout(header_timeout_s))

    def refused(self, cap: Refusal) -> bytes:
        """The answer to a connection over `cap`, counted."""
        if self._metrics is not None:
            self._metrics.connections_refused.labels(cap.value).inc()
        return self._refusals[cap]

    def head_timed_out(self) -> bytes:
        """The answer to a request head that did not arrive in time, counted."""
        if self._metrics is not None:
            self._metrics.head_timeouts.inc()
        return self._timed_out


class GuardedRequestHandler(web.RequestHandler):
    def __init__(self, manager: web.Server, *, rules: ConnectionRules, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._rules = rules
        self._ticket: Ticket | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # some of a request head came, not all of it yet

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted = self._rules.gate.admit(transport.get_extra_info("peername"))
        if isinstance(admitted, Refusal):
            # Never handed to aiohttp: no task, no parser fed. The answer fits the socket's
            # buffer; a client that had sent a request already may see a reset instead.
            writer = cast(asyncio.Transport, transport)  # uvloop's subclasses none of asyncio's
            writer.write(self._rules.refused(admitted))
            writer.close()
            return
        self._ticket = admitted
        super().connection_made(transport)
        self._arm_head_timer()  # the first request's head is due from the start

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        if self._ticket is not None:
            self._rules.gate.release(self._ticket)
        super().connection_lost(exc)
        # aiohttp keeps a WebSocket's data callback (a method of the WebSocketResponse, which
        # holds the request, which holds this handler) after the connection is gone: a cycle
        # that only the cyclic garbage collector frees, some 35 objects per WebSocket.
        self._data_received_cb = None

    def set_parser(self, parser: WebSocketReader, *args: Any, **kwargs: Any) -> None:
        """Called when the connection becomes a WebSocket: its place per address is given
        back (a WebSocket has its own cap per client); it still counts in the total."""
        super().set_parser(parser, *args, **kwargs)
        if self._ticket is not None:
            self._rules.gate.leave_address(self._ticket)

    # -- request heads ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        starts_head = bool(data) and self._idle()
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a whole head was read (or refused)
            self._head_started = False
            self._cancel_head_timer()
        elif starts_head:  # timed only when a head does not come whole, as most do
            self._head_started = True
            self._arm_head_timer()

    def _idle(self) -> bool:
        """Waiting for a request, none being handled (a body's bytes do not start a head)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._rules.header_timeout_s, self._head_due)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_due(self) -> None:
        self._head_timer = None
        if not self._idle():  # a request is being handled: its head came in time
            return
        answer = self._rules.head_timed_out()
        if self._head_started and self.transport is not None:
            self.transport.write(answer)
        self.force_close()

    # -- aiohttp's own answers --------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            # A malformed request is the client's fault and anyone can send one: a line at
            # DEBUG, not aiohttp's ERROR with a traceback per request (a log flood on demand).
            log.debug("refused a malformed request from %s: %s", request.remote, exc)
            if request.writer.output_size > 0:  # as aiohttp: nothing more can be said
                raise ConnectionError("a response was begun before the request failed")
            error = parser_refusal(exc, max_headers=self.max_headers)
        else:
            # aiohttp's answer is made for its checks and logging (it raises when a response
            # was already begun), then replaced by the same failure as JSON.
            super().handle_error(request, status, exc, message)
            error = handler_failure(status)
        response = json_response(error.body(), status=error.status, headers=error.headers)
        response.force_close()  # what the parser failed on leaves nothing else to read
        return response
