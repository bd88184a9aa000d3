"""LAN discovery with mDNS/DNS-SD: the controller announces `_originctl._tcp.local.`; `originctl discover`
lists the edges announcing `_edged._tcp.local.`.

Service names and the interface choice ($EDGENET_MDNS_INTERFACES) are edged/common/mdns.py's.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edged.common.mdns import CONTROLLER_SERVICE as CONTROLLER_SERVICE
from edged.common.mdns import EDGE_SERVICE as EDGE_SERVICE
from edged.common.mdns import RESOLVE_TIMEOUT_MS, local_addresses, mdns_interfaces


class ControllerAdvertiser:
    """Announces this controller: TXT carries the edge port, HTTP port, version and CA fingerprint."""

    def __init__(self, grpc_host: str, grpc_port: int, edge_port: int, http_port: int, version: str,
                 ca_fingerprint: str) -> None:
        host = socket.gethostname().split(".")[0] or "originctl"
        self._info = ServiceInfo(
            CONTROLLER_SERVICE,
            f"originctl on {host}.{CONTROLLER_SERVICE}",
            port=grpc_port,
            addresses=[socket.inet_aton(a) for a in local_addresses(grpc_host)],
            properties={"version": version, "edge_port": str(edge_port), "http_port": str(http_port),
                        "ca": ca_fingerprint},
            server=f"{host}.local.",
        )
        self._zc: AsyncZeroconf | None = None

    async def start(self) -> None:
        self._zc = AsyncZeroconf(interfaces=mdns_interfaces(), ip_version=IPVersion.V4Only)
        await self._zc.async_register_service(self._info, allow_name_change=True)

    async def stop(self) -> None:
        if self._zc is not None:
            await self._zc.async_unregister_all_services()
            await self._zc.async_close()
            self._zc = None


@dataclass(frozen=True, slots=True)
class Found:
    name: str
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str]


async def browse(service: str, listen_seconds: float) -> list[Found]:
    """Everything announcing `service` within `listen_seconds`, resolved."""
    names: set[str] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    zc = AsyncZeroconf(interfaces=mdns_interfaces(), ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(zc.zeroconf, [service], handlers=[on_change])
    try:
        await asyncio.sleep(listen_seconds)
        found: list[Found] = []
        for name in sorted(names):
            info = AsyncServiceInfo(service, name)
            if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                continue
            props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
                     for k, v in (info.properties or {}).items()}
            found.append(Found(name=name.removesuffix("." + service), addresses=tuple(info.parsed_addresses()),
                               port=info.port or 0, properties=props))
        return found
    finally:
        await browser.async_cancel()
        await zc.async_close()
