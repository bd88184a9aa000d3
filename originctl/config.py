"""originctl configuration: the controller's (`originctl serve --config FILE`) and the CLI's.

Controller TOML (every key optional; flags win):

    data_dir = "./var/origin"
    grpc = "0.0.0.0:50051"        # enrollment + admin API (TLS)
    edge_grpc = ""                # edge streams (mutual TLS); "" = the grpc host, port + 1
    http = "0.0.0.0:8081"         # /healthz, /metrics, /play/CHANNEL (viewer routing)
    advertise = true              # announce _originctl._tcp on the LAN
    tls_names = []                # extra names/addresses for the controller certificate
    log_level = "info"
    geoip_database = ""           # MaxMind GeoIP2/GeoLite2 City .mmdb for client locations; "" = none
                                  # (never downloaded: the operator installs and updates it)
    trusted_proxies = []          # CIDRs of reverse proxies whose X-Forwarded-For /play believes
    [health]
    lost_after_intervals = 3.0    # heartbeat intervals without a report before a node is lost
    recover_reports = 3           # consecutive good reports before a node is healthy again
    throttle_mask = 0xE8          # NVML clocks event reasons that count as throttling
    [relay]
    max_children = 20             # subscriptions one node serves per channel before relay nodes take more
    max_depth = 3                 # hops from the ingest edge to the deepest edge (1 to 3)
    [chat]
    jwt_public_keys = []          # PEM files of the keys that sign chatters' tokens (your auth service's);
                                  # [] = the controller's own Ed25519 key, made on first start in the data
                                  # dir (chat-signing.key, 0600): `originctl chat token` mints with it
    resume_events = 1000          # events kept per room for edges that reconnect (older: a gap notice)
    bus = "hub"                   # where the fleet's chat runs: "hub" = this controller orders every room;
                                  # "nats" = NATS JetStream (the edges' [chat] bus = "nats"): operators'
                                  # actions are published there and the store follows every room on it
                                  # (the hub keeps serving edges on the hub bus)
    nats_url = "nats://127.0.0.1:4222"  # with bus = "nats": nats://HOST:PORT or tls://HOST:PORT
    [chat.limits]                 # the room rules' limits (edged.chat.model.ChatLimits), fleet-wide
    messages_per_window = 20      # per user per room per window_seconds (moderators: 100)
    window_seconds = 30.0
    max_body_chars = 500

CLI TOML ($ORIGINCTL_CONFIG, else $XDG_CONFIG_HOME/originctl/config.toml, else
~/.config/originctl/config.toml):

    origin = "controller.example.net:50051"
    token = "SECRET.FINGERPRINT"   # the content of DATA_DIR/admin.token
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edged.chat.identity import key_files_problem
from edged.chat.model import ChatLimits, limits_problem
from edged.common.hostport import HostPortError, split_hostport
from edged.common.tomlconfig import ConfigValueError, build, read_toml
from originctl.errors import ConfigError
from originctl.server.health import DEFAULT_THROTTLE_MASK

DEFAULT_ORIGIN = "127.0.0.1:50051"


@dataclass(frozen=True)
class HealthConfig:
    lost_after_intervals: float = 3.0
    recover_reports: int = 3
    throttle_mask: int = DEFAULT_THROTTLE_MASK


@dataclass(frozen=True)
class RelayConfig:
    max_children: int = 20
    max_depth: int = 3


@dataclass(frozen=True)
class ChatConfig:
    jwt_public_keys: tuple[str, ...] = ()
    resume_events: int = 1000
    bus: str = "hub"
    nats_url: str = "nats://127.0.0.1:4222"
    limits: ChatLimits = ChatLimits()


@dataclass(frozen=True)
class ServeConfig:
    data_dir: str = "./var/origin"
    grpc: str = "0.0.0.0:50051"
    edge_grpc: str = ""
    http: str = "0.0.0.0:8081"
    advertise: bool = True
    tls_names: tuple[str, ...] = ()
    log_level: str = "info"
    geoip_database: str = ""
    trusted_proxies: tuple[str, ...] = ()
    health: HealthConfig = field(default_factory=HealthConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def edge_address(self) -> str:
        if self.edge_grpc:
            return self.edge_grpc
        host, port = parse_hostport(self.grpc, "grpc")
        return f"{host}:{port + 1 if port else 0}"


@dataclass(frozen=True)
class ClientConfig:
    origin: str = ""
    token: str = ""
    path: str = ""  # where it was read from, for messages


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' → (host, port); ConfigError names `key`."""
    try:
        return split_hostport(value)
    except HostPortError as exc:
        raise ConfigError(key, str(exc)) from None


def load_serve(path: str | None, overrides: dict[str, Any]) -> ServeConfig:
    """The controller's config: TOML file (if any), then non-empty flag values."""
    try:
        cfg = build(ServeConfig, read_toml(path, "--config") if path else {})
    except ConfigValueError as exc:
        raise ConfigError(exc.key, exc.message) from None
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v not in (None, "")})
    validate_serve(cfg)
    return cfg


def validate_serve(cfg: ServeConfig) -> None:
    parse_hostport(cfg.grpc, "grpc")
    parse_hostport(cfg.edge_address, "edge_grpc")
    parse_hostport(cfg.http, "http")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", "expected debug, info, warning or error")
    for i, cidr in enumerate(cfg.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies[{i}]", f"not an address or CIDR: {cidr!r}") from None
    if cfg.health.lost_after_intervals < 1:
        raise ConfigError("health.lost_after_intervals", "expected at least 1")
    if cfg.health.recover_reports < 1:
        raise ConfigError("health.recover_reports", "expected at least 1")
    if not 1 <= cfg.relay.max_children <= 10_000:
        raise ConfigError("relay.max_children", "expected between 1 and 10000")
    if not 1 <= cfg.relay.max_depth <= 3:
        raise ConfigError("relay.max_depth", "expected 1, 2 or 3 (hops from the ingest edge)")
    validate_chat(cfg.chat)


def validate_chat(chat: ChatConfig) -> None:
    if problem := key_files_problem(chat.jwt_public_keys):
        raise ConfigError(*problem)
    if not 0 <= chat.resume_events <= 1_000_000:
        raise ConfigError("chat.resume_events", "expected between 0 and 1000000")
    if chat.bus not in ("hub", "nats"):
        raise ConfigError("chat.bus", 'expected "hub" or "nats"')
    if chat.bus == "nats":
        check_nats_url(chat.nats_url, "chat.nats_url")
    problem = limits_problem(chat.limits)
    if problem is not None:
        raise ConfigError(*problem)


def check_nats_url(url: str, key: str) -> str:
    """nats://HOST:PORT or tls://HOST:PORT (credentials in the URL allowed, as nats-py takes them)."""
    expected = "expected nats://HOST:PORT or tls://HOST:PORT"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(key, f"{expected}: {exc}") from None
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ConfigError(key, f"{expected} (scheme nats or tls, and a host)")
    if port is None or port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, f"{expected} (a port, and nothing after it)")
    return url


def client_config_path() -> Path:
    if os.environ.get("ORIGINCTL_CONFIG"):
        return Path(os.environ["ORIGINCTL_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "originctl" / "config.toml"


def load_client() -> ClientConfig:
    """The CLI's config file; absent is fine (an explicit $ORIGINCTL_CONFIG must exist)."""
    path = client_config_path()
    if not path.exists() and not os.environ.get("ORIGINCTL_CONFIG"):
        return ClientConfig()
    try:
        data = read_toml(path, "ORIGINCTL_CONFIG" if os.environ.get("ORIGINCTL_CONFIG") else str(path))
    except ConfigValueError as exc:
        raise ConfigError(exc.key, exc.message) from None
    data.pop("path", None)
    try:
        cfg = build(ClientConfig, data)
    except ConfigValueError as exc:
        raise ConfigError(f"{path}: {exc.key}", exc.message) from None
    return replace(cfg, path=str(path))
