"""aiohttp, guarded: every connection of the front passes through the ConnectionGuard, and the
server's log turns each rejected request into one counted line instead of a traceback.

`GuardedRunner` is an AppRunner whose Server builds `GuardedHandler`s (aiohttp's RequestHandler plus
admission at `connection_made` and release at `connection_lost`); the guard reads each connection's
state from the handler between requests, so a request costs nothing extra.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any, cast

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from edged import metrics
from edged.http.guard import ConnectionGuard
from edged.log import QuietLog

# What a refused connection gets before the close: a player sees a status it retries on, not a reset.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
           b"Retry-After: 1\r\n\r\n")


class _Link:
    """The guard's view of one aiohttp connection (guard.Conn)."""

    __slots__ = ("handler", "transport")

    def __init__(self, handler: GuardedHandler, transport: asyncio.Transport) -> None:
        self.handler = handler
        self.transport = transport  # kept after aiohttp drops it: a close may still be flushing

    def waiting(self) -> bool:
        w = self.handler._waiter  # set while aiohttp's start() awaits the next request head
        return w is not None and not w.done()

    def requests(self) -> int:
        return self.handler._request_count

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()

    def closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.handler.force_close()  # wakes aiohttp's request loop and closes the transport
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()


class GuardedHandler(web_protocol.RequestHandler):
    __slots__ = ("_guard", "_link")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._link: _Link | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        link = _Link(self, tr)
        if not self._guard.admit(link, tr.get_extra_info("peername"), self._loop.time()):
            tr.write(REFUSAL)
            tr.close()
            return
        self._link = link
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        link = self._link
        if link is not None:
            self._link = None
            self._guard.release(link)
        super().connection_lost(exc)


class GuardedServer(web.Server):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> web_protocol.RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """AppRunner serving `app` through GuardedServer; `handler_args` go to each RequestHandler."""

    __slots__ = ("_guard", "_handler_args")

    def __init__(self, app: web.Application, guard: ConnectionGuard, **handler_args: Any) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=5.0, **handler_args)
        self._guard = guard
        self._handler_args = handler_args

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app's startup and freeze; its request entry points
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                             guard=self._guard, **self._handler_args)


def _exception(exc_info: object) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    return None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's server writes to. A malformed request (answered 400 and closed) becomes one
    debug line and a count, with a QuietLog warning per interval; a failing handler (500) one error line
    per interval saying where, with a traceback once per interval. Anything else passes through."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self._quiet = QuietLog(logger)

    def log(self, level: int, msg: object, *args: object, exc_info: object = None, **kwargs: Any) -> None:
        exc = _exception(exc_info)
        text = str(msg)
        if exc is None or not text.startswith(("Error handling request", "Unhandled exception")):
            self.logger.log(level, msg, *args, exc_info=exc_info, **kwargs)  # type: ignore[arg-type]
            return
        peer = args[0] if args else "-"
        if isinstance(exc, HttpProcessingError):
            metrics.HTTP_BAD_REQUESTS.inc()
            reason = " ".join(f"{type(exc).__name__}: {exc.message or exc}".split())[:200]
            self._quiet.warning("bad_request", "http conn=%s bad request answered 400: %s", peer, reason)
            return
        summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        if self._quiet.log("handler_error", logging.ERROR, "http conn=%s request failed (500): %s at %s",
                           peer, summary, _where(exc)):
            self.logger.error("traceback of the failure above (one per interval)", exc_info=exc)
