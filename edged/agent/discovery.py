"""LAN discovery (mDNS/DNS-SD via AsyncZeroconf): the edge announces `_edged._tcp.local.` and finds a
controller announcing `_originctl._tcp.local.` for `--origin auto`.

TXT of an edge: id (node ID, empty before enrollment), name, version, gpu (model or "none"), site,
http_port. Service names and the interface choice ($EDGENET_MDNS_INTERFACES) are edged/common/mdns.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

import edged
from edged.agent.errors import ControllerUnavailable
from edged.agent.status import NodeStatus
from edged.common.mdns import (
    CONTROLLER_SERVICE,
    EDGE_SERVICE,
    RESOLVE_TIMEOUT_MS,
    local_addresses,
    mdns_interfaces,
)
from edged.config import Config, parse_hostport

log = logging.getLogger("edged.agent.discovery")

REFRESH = 5.0  # s between checks whether the announced TXT record is still current


class NodeIdentity(Protocol):
    """What the announcement needs of the agent (edged.agent.link.Agent has it)."""

    @property
    def node_id(self) -> str: ...

    @property
    def gpu_models(self) -> tuple[str, ...]: ...


class Advertiser:
    """Announces this edge on the LAN while it runs; start after Agent.start(), stop before Agent.stop()."""

    def __init__(self, cfg: Config, status: Callable[[], NodeStatus], agent: NodeIdentity | None = None) -> None:
        self.cfg = cfg
        self._status = status
        self._agent = agent
        self._zc: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None
        self._task: asyncio.Task[None] | None = None

    def _properties(self) -> dict[str, str]:
        status = self._status()
        host, port = parse_hostport(self.cfg.http.listen, "http.listen")
        gpu = "none"
        node_id = ""
        if self._agent is not None:
            node_id = self._agent.node_id
            gpu = ", ".join(self._agent.gpu_models) or "none"
        return {"id": node_id, "name": self.cfg.node.name or socket.gethostname(), "version": edged.__version__,
                "gpu": gpu, "site": self.cfg.node.site, "http_port": str(status.http_port or port)}

    def _service(self) -> ServiceInfo:
        props = self._properties()
        host, _ = parse_hostport(self.cfg.http.listen, "http.listen")
        label = (props["id"] or f"{props['name']}-{props['http_port']}")[:63]
        hostname = socket.gethostname().split(".")[0] or "edged"
        return ServiceInfo(EDGE_SERVICE, f"{label}.{EDGE_SERVICE}", port=int(props["http_port"]),
                           addresses=[socket.inet_aton(a) for a in local_addresses(host)], properties=props,
                           server=f"{hostname}.local.")

    async def start(self) -> None:
        self._zc = AsyncZeroconf(interfaces=mdns_interfaces(), ip_version=IPVersion.V4Only)
        self._info = self._service()
        await self._zc.async_register_service(self._info, allow_name_change=True)
        self._task = asyncio.create_task(self._refresh(), name="edged-mdns-refresh")

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            assert self._zc is not None and self._info is not None
            try:
                fresh = self._service()
                if fresh.name != self._info.name:  # enrolled since: the node ID names the service now
                    await self._zc.async_unregister_service(self._info)
                    await self._zc.async_register_service(fresh, allow_name_change=True)
                    self._info = fresh
                elif fresh.properties != self._info.properties:
                    fresh = ServiceInfo(EDGE_SERVICE, self._info.name, port=fresh.port,
                                        addresses=fresh.addresses, properties=fresh.properties,
                                        server=fresh.server)
                    await self._zc.async_update_service(fresh)
                    self._info = fresh
            except Exception:  # discovery is a convenience: never let it take the edge down
                log.exception("updating the mDNS announcement failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._zc is not None:
            with contextlib.suppress(Exception):
                await self._zc.async_unregister_all_services()
            await self._zc.async_close()
            self._zc = None


async def find_controller(wait: float = 3.0, ca_fingerprint: str = "") -> str:
    """HOST:PORT of a controller announcing itself (the one whose CA matches, when a fingerprint is given)."""
    names: list[str] = []
    seen = asyncio.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed and name not in names:
            names.append(name)
            seen.set()

    zc = AsyncZeroconf(interfaces=mdns_interfaces(), ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(zc.zeroconf, [CONTROLLER_SERVICE], handlers=[on_change])
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        checked = 0
        while loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), max(0.0, deadline - loop.time()))
            seen.clear()
            for name in names[checked:]:
                checked += 1
                info = AsyncServiceInfo(CONTROLLER_SERVICE, name)
                if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                    continue
                ca = ((info.properties or {}).get(b"ca") or b"").decode(errors="replace")
                if ca_fingerprint and ca and ca != ca_fingerprint:
                    continue
                addrs = info.parsed_addresses()
                if addrs and info.port:
                    return f"{addrs[0]}:{info.port}"
    finally:
        await browser.async_cancel()
        await zc.async_close()
    raise ControllerUnavailable(f"no controller announced {CONTROLLER_SERVICE} on the LAN within {wait:g} s; "
                                "pass --origin HOST:PORT instead of auto")
