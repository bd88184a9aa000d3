"""The one HTTP front: HLS, /healthz, /metrics, embedded in the daemon's loop via AppRunner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edged import metrics
from edged.config import Config, parse_hostport
from edged.http.guard import ConnectionGuard, Limits
from edged.http.hls import SERVED, HlsHandlers
from edged.http.meter import ViewerMeter
from edged.http.server import GuardedRunner, ServerLog
from edged.log import QuietLog
from edged.relay.commits import CommitBus
from edged.relay.gate import Gate
from edged.store.segments import SegmentStore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# handler names, also the metric's route label
_VIEWER_ROUTES = frozenset({"master", "media", "segment", "cmaf_segment", "part", "init"})
# handler name → the kind label of edged_http_requests_total
_KINDS = {"master": "master", "media": "playlist", "segment": "segment", "cmaf_segment": "segment", "part": "part",
          "init": "init", "healthz": "healthz", "metrics_view": "metrics"}
METER = web.AppKey("meter", ViewerMeter)
CORS_ORIGIN = web.AppKey("cors_origin", str)


@web.middleware
async def _cors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        resp: web.StreamResponse = web.Response(status=204)
    else:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # raised on (returning one is deprecated), with the same headers
            _finish(request, exc)
            raise
    _finish(request, resp)
    return resp


def _finish(request: web.Request, resp: web.StreamResponse) -> None:
    """CORS headers and the request's metrics."""
    origin = request.app[CORS_ORIGIN]
    resp.headers["Access-Control-Allow-Origin"] = origin
    resp.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = "Range, Origin, Accept"
    resp.headers["Access-Control-Expose-Headers"] = "Content-Length, Content-Range"
    route = getattr(request.match_info.route, "handler", None)
    name = getattr(route, "__name__", "other")
    if name in _VIEWER_ROUTES and resp.status < 400:
        body = getattr(resp, "body", None) if request.method != "HEAD" else None  # HEAD sends no body
        nbytes = len(body) if isinstance(body, bytes | bytearray) else 0
        metrics.HTTP_BYTES.labels(route=name).inc(nbytes)
        request.app[METER].async_record(request.remote, nbytes)
    kind = _KINDS.get(name, "other")
    if resp.status < 400 and name in _VIEWER_ROUTES:
        result = request.get(SERVED, "local")
    elif resp.status in (404, 503):
        result = str(resp.status)
    else:
        result = f"{resp.status // 100}xx"
    metrics.HTTP_REQUESTS.labels(kind=kind, result=result).inc()


class HttpFront:
    def __init__(self, cfg: Config, store: SegmentStore, health: Callable[[], dict[str, object]],
                 gate: Gate | None = None, routes: Callable[[web.Application], None] | None = None,
                 bus: CommitBus | None = None) -> None:
        """`bus`: the commit bus whose commits wake blocked LL-HLS requests (edged.http.blocking)."""
        self.cfg = cfg
        self.store = store
        self.health = health
        self.app = web.Application(middlewares=[_cors_and_metrics])
        self.app[CORS_ORIGIN] = cfg.http.cors_origin
        self.meter = ViewerMeter()
        self.app[METER] = self.meter
        self.hls = HlsHandlers(cfg, store, gate, bus)
        self.hls.add_routes(self.app)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", self.metrics_view)
        if routes is not None:  # more endpoints on the same front (the chat WebSocket)
            routes(self.app)
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.guard: ConnectionGuard | None = None
        self.port = 0

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", **self.health()})

    async def metrics_view(self, request: web.Request) -> web.StreamResponse:
        metrics.STORE_BYTES.set(self.store.total_bytes())
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        host, port = parse_hostport(self.cfg.http.listen, "http.listen")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limits = Limits.from_config(self.cfg.http, nofile if nofile != resource.RLIM_INFINITY else 1 << 20)
        self.guard = guard = ConnectionGuard(limits)
        metrics.HTTP_CONNECTION_LIMIT.set(limits.max_connections)
        # aiohttp's keep-alive timer is a backstop behind the guard's sweep (which counts what it closes)
        backstop = limits.keepalive_timeout + max(1.0, 2 * limits.sweep_interval)
        self._runner = GuardedRunner(self.app, guard, access_log=None, keepalive_timeout=backstop,
                                     logger=ServerLog(logging.getLogger("edged.http.server")))
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(guard))
        log.info("HTTP listening on %s:%d (at most %d connections, %d per address; descriptor limit %d)",
                 host, self.port, limits.max_connections, limits.per_address, nofile)

    async def _sweep(self, guard: ConnectionGuard) -> None:
        loop = asyncio.get_running_loop()
        quiet = QuietLog(log)
        while True:
            await asyncio.sleep(guard.limits.sweep_interval)
            try:
                guard.sweep(loop.time())
            except Exception as exc:  # a bug here must not end the timeouts for good
                quiet.log("sweep", logging.ERROR, "HTTP connection sweep failed: %r", exc)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
