"""The controller's HTTP front: /healthz and /metrics (issue 6 adds /play here)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from originctl import __version__
from originctl.metrics import ControllerMetrics
from originctl.model import NodeState
from originctl.server.registry import Registry

REGISTRY_KEY = web.AppKey("registry", Registry)
METRICS_KEY = web.AppKey("metrics", ControllerMetrics)


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    counts = dict.fromkeys((s.value for s in NodeState), 0)
    for entry in registry.nodes.values():
        counts[entry.health.state.value] += 1
    return web.json_response({"status": "ok", "version": __version__, "nodes": counts})


async def metrics(request: web.Request) -> web.Response:
    nodes = request.app[REGISTRY_KEY].views()  # snapshot on the loop; render in a thread
    body = await asyncio.to_thread(request.app[METRICS_KEY].render, nodes)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(registry: Registry, controller_metrics: ControllerMetrics) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = controller_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
