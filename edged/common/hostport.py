"""HOST:PORT parsing, shared by edged's and originctl's configuration."""

from __future__ import annotations


class HostPortError(ValueError):
    """Not a HOST:PORT; the message says what is wrong (without the key, which the caller names)."""


def split_hostport(value: object) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' → (host, port); an empty host is 0.0.0.0; raises HostPortError."""
    if not isinstance(value, str) or ":" not in value:
        raise HostPortError(f"expected HOST:PORT, got {value!r}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise HostPortError(f"port is not a number in {value!r}") from None
    if not 0 <= port <= 65535:
        raise HostPortError(f"port out of range in {value!r}")
    return host or "0.0.0.0", port


def join_hostport(host: str, port: int) -> str:
    """(host, port) → a gRPC/URL target, bracketing an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
