"""The controller's HTTP front: /healthz, /metrics, and viewer routing at /play/CHANNEL.

GET /play/CHANNEL answers 302 to the master playlist on the best edge for the client (router.py), or,
with `Accept: application/json`, 200 and {url, node, reason, detail, alternates}. No route: 404 with a
JSON reason (unknown-channel, offline), or 503 (unavailable: live only on nodes that take no viewers
now). Answers are never cached: the best edge changes with health and load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric

from originctl import __version__
from originctl.metrics import ControllerMetrics
from originctl.model import NodeState, Route
from originctl.server.registry import Registry
from originctl.server.router import Router, client_address

REGISTRY_KEY = web.AppKey("registry", Registry)
METRICS_KEY = web.AppKey("metrics", ControllerMetrics)
ROUTER_KEY = web.AppKey("router", Router)
ChatHealth = Callable[[], dict[str, Any]]
CHAT_HEALTH_KEY: web.AppKey[ChatHealth] = web.AppKey("chat_health")

_CHANNEL = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # originctl/server/channels.py CHANNEL_RE
_NO_STORE = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    counts = dict.fromkeys((s.value for s in NodeState), 0)
    for entry in registry.nodes.values():
        counts[entry.health.state.value] += 1
    body: dict[str, Any] = {"status": "ok", "version": __version__, "nodes": counts}
    chat = request.app.get(CHAT_HEALTH_KEY)
    if chat is not None:  # the chat bus (with NATS: whether the controller follows the chat stream, and why not)
        body["chat"] = chat()
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    nodes = request.app[REGISTRY_KEY].views()  # snapshot on the loop; render in a thread
    gauges: dict[str, tuple[str, float]] = {}
    families: list[Metric] = []
    router = request.app.get(ROUTER_KEY)
    if router is not None:
        gauges["originctl_channels"] = ("Channels defined on this controller", len(router.channels))
        gauges["originctl_streams_live"] = ("Live streams across the fleet", len(router.streams.live()))
        gauges["originctl_route_table_nodes"] = ("Nodes in the current routing table", len(router.table.nodes))
        if router.relays is not None:
            per_channel, fan_max, parents = router.relays.gauges()
            edges = GaugeMetricFamily("originctl_relay_edges", "Edges relaying the channel (its relay tree less the "
                                      "ingest edge), live channels only", labels=["channel"])
            for ch, n in sorted(per_channel.items()):
                edges.add_metric([ch], n)
            families.append(edges)
            gauges["originctl_relay_fanout_max"] = ("The most children one parent serves in one relay tree", fan_max)
            gauges["originctl_relay_parents"] = ("Parents serving children, summed over the relay trees", parents)
    body = await asyncio.to_thread(request.app[METRICS_KEY].render, nodes, gauges, families)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def route_json(route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": route.channel, "client_ip": route.client_ip, "reason": route.reason,
                            "detail": route.detail}
    if route.routed:
        body.update(url=route.url, node=route.node_id,
                    alternates=[{"node": n, "url": u} for n, u in route.alternates])
        if route.distance_km is not None:
            body["distance_km"] = round(route.distance_km, 1)
    else:
        body["error"] = route.reason
    return body


async def play(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    ip = client_address(request.remote or "", request.headers.get("X-Forwarded-For"), router.trusted)
    route = router.decide(request.match_info["channel"], ip)
    if route.routed:
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(route_json(route), headers=_NO_STORE)
        return web.Response(status=302, headers={**_NO_STORE, "Location": route.url},
                            text=f"{route.url}\n")
    status = 503 if route.reason == "unavailable" else 404
    return web.json_response(route_json(route), status=status, headers=_NO_STORE)


def make_app(registry: Registry, controller_metrics: ControllerMetrics, router: Router | None = None, *,
             chat_health: ChatHealth | None = None) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = controller_metrics
    if chat_health is not None:
        app[CHAT_HEALTH_KEY] = chat_health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if router is not None:
        app[ROUTER_KEY] = router
        app.router.add_get(f"/play/{{channel:{_CHANNEL}}}", play)
    return app
