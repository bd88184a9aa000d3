"""LAN discovery (mDNS/DNS-SD) names and interface choice, the same for edges and the controller.

$EDGENET_MDNS_INTERFACES (comma-separated IPv4 addresses) limits the interfaces used, e.g. to
127.0.0.1 in tests; by default every interface is used.
"""

from __future__ import annotations

import ipaddress
import os

import ifaddr
from zeroconf import InterfaceChoice

EDGE_SERVICE = "_edged._tcp.local."
CONTROLLER_SERVICE = "_originctl._tcp.local."
RESOLVE_TIMEOUT_MS = 1500  # ms to resolve one announced service


def mdns_interfaces() -> list[str] | InterfaceChoice:
    """What zeroconf binds to: the addresses in $EDGENET_MDNS_INTERFACES, else every interface."""
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
    out = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
           if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback]
    return out or ["127.0.0.1"]
