"""LAN discovery (mDNS/DNS-SD via AsyncZeroconf): the edge announces `_edged._tcp.local.` and finds a
controller announcing `_originctl._tcp.local.` for `--origin auto`.

TXT of an edge: id (node ID, empty before enrollment), name, version, gpu (model or "none"), site,
http_port. $EDGENET_MDNS_INTERFACES (comma-separated IPv4 addresses) limits the interfaces, e.g. to
127.0.0.1 in tests; by default every interface is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

import edged
from edged.agent.errors import ControllerUnavailable
from edged.agent.status import NodeStatus
from edged.config import Config, parse_hostport

if TYPE_CHECKING:
    from edged.agent.link import Agent

log = logging.getLogger("edged.agent.discovery")

EDGE_SERVICE = "_edged._tcp.local."
CONTROLLER_SERVICE = "_originctl._tcp.local."
REFRESH = 5.0  # s between checks whether the announced TXT record is still current
RESOLVE_TIMEOUT_MS = 1500


def mdns_interfaces() -> list[str] | InterfaceChoice:
    env = os.environ.get("EDGENET_MDNS_INTERFACES", "").strip()
    if env:
        return [a.strip() for a in env.split(",") if a.strip()]
    return InterfaceChoice.All


def _addresses(bind_host: str) -> list[str]:
    if bind_host not in ("", "0.0.0.0", "::"):
        return [bind_host]
    chosen = mdns_interfaces()
    if isinstance(chosen, list):
        return [str(a) for a in chosen]
    out = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
           if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback]
    return out or ["127.0.0.1"]


class Advertiser:
    """Announces this edge on the LAN while it runs; start after Agent.start(), stop before Agent.stop()."""

    def __init__(self, cfg: Config, status: Callable[[], NodeStatus], agent: Agent | None = None) -> None:
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
                           addresses=[socket.inet_aton(a) for a in _addresses(host)], properties=props,
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
