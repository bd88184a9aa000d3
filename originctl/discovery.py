"""LAN discovery with mDNS/DNS-SD: the controller announces `_originctl._tcp.local.`; `originctl discover`
lists the edges announcing `_edged._tcp.local.`.

$EDGENET_MDNS_INTERFACES (comma-separated IPv4 addresses) limits the interfaces used, e.g. to
127.0.0.1 in tests; by default every interface is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

CONTROLLER_SERVICE = "_originctl._tcp.local."
EDGE_SERVICE = "_edged._tcp.local."
RESOLVE_TIMEOUT_MS = 1500


def mdns_interfaces() -> list[str] | InterfaceChoice:
    env = os.environ.get("EDGENET_MDNS_INTERFACES", "").strip()
    if env:
        return [a.strip() for a in env.split(",") if a.strip()]
    return InterfaceChoice.All


def local_addresses(bind_host: str) -> list[str]:
    """The IPv4 addresses to announce for a service bound to `bind_host`."""
    if bind_host not in ("", "0.0.0.0", "::"):
        return [bind_host]
    chosen = mdns_interfaces()
    if isinstance(chosen, list):
        return [str(a) for a in chosen]
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                out.append(ip.ip)
    return out or ["127.0.0.1"]


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
