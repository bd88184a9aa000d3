"""edged configuration: one typed tree, loaded from TOML, overridden by flags, validated on load.

Every error names the key path (`rtmp.listen: ...`) and is raised as ConfigError.
Units are in the field names or comments: seconds unless the name says otherwise.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.chat.identity import key_files_problem
from edged.chat.model import ChatLimits, limits_problem
from edged.common.hostport import HostPortError, split_hostport
from edged.common.tomlconfig import ConfigValueError, build, merge, read_toml
from edged.errors import ConfigError

_CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")


@dataclass(frozen=True)
class RtmpConfig:
    enabled: bool = True
    listen: str = "0.0.0.0:1935"
    handshake_timeout: float = 10.0  # s: from accept to a publish request
    idle_timeout: float = 30.0  # s: no bytes from a publisher
    max_chunk_size: int = 65536  # bytes: largest Set Chunk Size we accept (FFmpeg/OBS use 4096)
    max_message_size: int = 8 * 1024 * 1024  # bytes: one keyframe of a high-bitrate 4K stream fits
    max_connections: int = 1000  # open connections in all, publishing or not
    # Connections whose publish is not accepted yet, in all (the rest of max_connections stays free for
    # publishers that authenticated) and per source address (IPv6: per /64; a studio publishes many
    # channels from one address, but each is unauthenticated only until its publish is accepted).
    max_unauthenticated: int = 250
    max_unauthenticated_per_address: int = 16
    pre_publish_bytes: int = 32 * 1024  # bytes: largest message and all partial ones, before publish
    pre_publish_messages: int = 64  # messages before publish (a real encoder sends about ten)
    control_messages_per_second: float = 50.0  # non-media messages after publish (bursts of 2 s worth)
    # RTMPS: a second listener, the same server behind TLS; on only when both files are set.
    tls_listen: str = "0.0.0.0:1936"
    tls_cert_file: str = ""  # PEM certificate chain (server certificate first)
    tls_key_file: str = ""  # PEM private key of that certificate


@dataclass(frozen=True)
class SrtConfig:
    enabled: bool = True
    listen: str = "0.0.0.0:9000"
    passphrase: str = ""  # node-wide; empty = no encryption required
    pbkeylen: int = 0  # 0 = let the caller choose; else 16, 24 or 32
    latency_ms: int = 120  # receiver latency; 120 ms suits a LAN, raise to 4x RTT for the internet
    idle_timeout: float = 5.0  # s without packets before a publisher is dropped
    channel_passphrases: dict[str, str] = field(default_factory=dict)  # channel -> passphrase


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "0.0.0.0:8080"
    cors_origin: str = "*"
    # open connections; the front also stays under the descriptor limit (RLIMIT_NOFILE) less headroom
    max_connections: int = 16384
    # from one IPv4 address (or IPv6 /64); generous because many viewers share a carrier-grade NAT address
    max_connections_per_address: int = 1024
    header_timeout: float = 10.0  # s from accept to a complete first request head
    keepalive_timeout: float = 30.0  # s an idle keep-alive connection waits for its next request
    send_timeout: float = 30.0  # s a response may make no progress (the peer stopped reading)


@dataclass(frozen=True)
class HlsConfig:
    segment_seconds: float = 2.0  # target; cuts happen at the first keyframe at or after it
    window: int = 6  # segments listed in a live media playlist
    # s: a segment is cut here even without a keyframe; EXT-X-TARGETDURATION is ceil() of it, fixed
    # for the life of a playlist. 0 = auto: 3 x segment_seconds
    max_segment_seconds: float = 0.0
    # s a lost publisher's playlist stays open (no EXT-X-ENDLIST) for it to come back and continue
    # after an EXT-X-DISCONTINUITY; a deliberate unpublish ends the playlist at once
    reconnect_grace_seconds: float = 10.0
    # Segment container: "cmaf" (fragmented MP4 with LL-HLS parts) or "ts" (MPEG-TS, no parts; old players)
    format: str = "cmaf"
    part_seconds: float = 0.5  # LL-HLS part target (cmaf): parts are cut at most this long
    max_blocking_requests: int = 4096  # per rendition: blocking playlist/part requests held at once

    @property
    def effective_max_segment_seconds(self) -> float:
        """max_segment_seconds, or its auto value (3 x segment_seconds) when it is 0."""
        return self.max_segment_seconds or 3 * self.segment_seconds


@dataclass(frozen=True)
class StoreConfig:
    max_bytes: int = 1 << 30  # segment payload bytes kept in LMDB before the oldest are evicted
    retention_segments: int = 60  # per rendition, beyond the playlist window, kept for late readers


@dataclass(frozen=True)
class RelayConfig:
    """Fleet distribution: this edge's relay listener (parent side) and subscriptions (child side)."""

    enabled: bool = True  # run the relay listener (only on an enrolled node: it needs the fleet identity)
    listen: str = "0.0.0.0:50061"  # gRPC with mutual TLS (fleet certificates)
    start_timeout: float = 5.0  # s a viewer's first request for a channel not here waits for it (then 503)
    linger_seconds: float = 30.0  # s after the last request (or child) before a subscription is dropped
    stall_timeout: float = 2.0  # s without a record or keepalive before a parent counts as stalled
    keepalive_seconds: float = 0.5  # s: a parent sends a keepalive record when idle this long
    send_timeout: float = 5.0  # s one record to a child may take (a child that stopped reading is dropped)
    max_backlog_segments: int = 32  # per rendition: a child further behind is dropped (it resubscribes)
    max_record_bytes: int = 64 * 1024 * 1024  # bytes: a larger record ends the subscription
    max_subscriptions: int = 256  # channels this edge relays from a parent at once
    max_streams: int = 1024  # child subscriptions this edge serves at once


@dataclass(frozen=True)
class ChatConfig:
    """Live chat: IRC (TMI dialect) over TCP, TLS and WebSocket (/chat on the HTTP front)."""

    enabled: bool = True
    irc_listen: str = "0.0.0.0:6667"  # "" = no plain TCP listener
    irc_tls_listen: str = "0.0.0.0:6697"  # on only when tls_cert_file and tls_key_file are set
    tls_cert_file: str = ""  # PEM certificate chain (server certificate first)
    tls_key_file: str = ""  # PEM private key of that certificate
    websocket: bool = True  # IRC over WebSocket at /chat (and at / for clients that dial the root, as tmi.js)
    server_name: str = "tmi.twitch.tv"  # the prefix of server lines; bot libraries expect Twitch's
    # how rooms reach the rest of the fleet: "auto" = the controller's hub when enrolled, else in-process
    # (a standalone edge); "local" = in-process even when enrolled; "nats" = NATS JetStream at nats_url
    bus: str = "auto"
    nats_url: str = "nats://127.0.0.1:4222"
    # PEM public keys that verify chatters' tokens (PASS oauth:<jwt>), used with those the controller pushes
    jwt_public_keys: tuple[str, ...] = ()
    max_connections: int = 20000  # chat connections on this edge, all transports together
    max_rooms_per_connection: int = 100  # JOINs beyond this are refused with a NOTICE
    max_queue_bytes: int = 256 * 1024  # bytes waiting for one client; a reader further behind is dropped
    batch_seconds: float = 0.02  # s: a room's events are written to its members at most this often
    big_room_members: int = 1000  # above this many members, JOIN/PART of others are not sent
    ping_interval: float = 60.0  # s between the server's PINGs to an idle client
    pong_timeout: float = 10.0  # s a client has to answer a PING
    login_timeout: float = 10.0  # s from accept to a completed login (NICK, and PASS when not anonymous)
    lines_per_second: float = 20.0  # lines one connection may send (bursts of 5 s worth); over: closed
    history_on_join: bool = True  # WebSocket clients get the room's recent messages when they join
    limits: ChatLimits = ChatLimits()  # the room rules this edge applies when it orders rooms itself


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    fps: float
    bitrate_kbps: int


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("1080p60", 1920, 1080, 60, 6000),
    Rung("720p60", 1280, 720, 60, 4500),
    Rung("720p30", 1280, 720, 30, 3000),
    Rung("480p30", 854, 480, 30, 1500),
    Rung("360p30", 640, 360, 30, 800),
    Rung("160p30", 284, 160, 30, 160),
)


@dataclass(frozen=True)
class TranscodeConfig:
    # true | false | "auto": on where NVENC encodes (CPU-only nodes opt in: libx264 ladders take the
    # cores ingest and serving need); a node at capacity serves further streams as passthrough only
    enabled: bool | str = "auto"
    encoder: str = "auto"  # auto | nvenc | x264
    ladder: tuple[Rung, ...] = DEFAULT_LADDER  # rungs above the source are dropped per stream
    max_transcodes: int = 0  # concurrent ladders; 0 = derive from detected capacity


@dataclass(frozen=True)
class OriginConfig:
    address: str = ""  # HOST:PORT of the origin controller, "auto" to find it by zeroconf, "" = standalone
    enroll_token: str = ""
    heartbeat_seconds: float = 2.0
    # s: after the link to the controller is lost, publishes are still answered from the key table it
    # pushed, for this long; then every publish is refused until the link is back (0 = not at all)
    auth_cache_seconds: float = 30.0


@dataclass(frozen=True)
class NodeConfig:
    name: str = ""  # defaults to the host name
    site: str = ""
    latitude: float | None = None
    longitude: float | None = None
    prefixes: tuple[str, ...] = ()  # client CIDRs this appliance serves (ISP-assigned)
    public_url: str = ""  # how viewers reach this node's HTTP front; default derived from http.listen
    advertise: bool = True  # announce _edged._tcp on the LAN
    viewer_limit: int = 0  # viewers before the controller routes new ones elsewhere; 0 = no limit
    egress_limit_bps: int = 0  # egress bits/s at which the controller routes new viewers elsewhere; 0 = no limit
    # Fleet distribution: `relay` lets the controller place this node inside channel trees it does not
    # ingest (a relay between the ingest edge and other edges); `reachable = false` says other nodes cannot
    # dial its relay port (behind NAT: children never dial it, and channels it ingests are pushed up to a
    # relay node); `relay_host` is the host others dial for it ("" = the host of public_url)
    relay: bool = False
    reachable: bool = True
    relay_host: str = ""


@dataclass(frozen=True)
class Config:
    data_dir: str = "./var/edged"
    log_level: str = "info"
    rtmp: RtmpConfig = RtmpConfig()
    srt: SrtConfig = SrtConfig()
    http: HttpConfig = HttpConfig()
    hls: HlsConfig = HlsConfig()
    store: StoreConfig = StoreConfig()
    transcode: TranscodeConfig = TranscodeConfig()
    origin: OriginConfig = OriginConfig()
    node: NodeConfig = NodeConfig()
    relay: RelayConfig = RelayConfig()
    chat: ChatConfig = ChatConfig()
    channels: dict[str, str] = field(default_factory=dict)  # stream key -> channel name

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') → (host, port); raises ConfigError naming `key`."""
    try:
        return split_hostport(value)
    except HostPortError as exc:
        raise ConfigError(key, str(exc)) from None


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any), overlay `overrides` (from flags; they win), validate."""
    try:
        data: dict[str, Any] = read_toml(path, "--config") if path is not None else {}
        if overrides:
            data = merge(data, overrides)
        cfg = build(Config, data)
    except ConfigValueError as exc:
        raise ConfigError(exc.key, exc.message) from None
    validate(cfg)
    return cfg


def _validate_rtmp_limits(rtmp: RtmpConfig) -> None:
    """The [rtmp] connection limits, budgets and RTMPS files (a file that cannot be used names its key)."""
    if rtmp.max_connections < 2:
        raise ConfigError("rtmp.max_connections", "expected at least 2")
    if not 1 <= rtmp.max_unauthenticated < rtmp.max_connections:
        raise ConfigError("rtmp.max_unauthenticated",
                          "expected at least 1 and below rtmp.max_connections (the rest is kept for publishers)")
    if not 1 <= rtmp.max_unauthenticated_per_address <= rtmp.max_unauthenticated:
        raise ConfigError("rtmp.max_unauthenticated_per_address",
                          "expected between 1 and rtmp.max_unauthenticated")
    if not 4096 <= rtmp.pre_publish_bytes <= min(1024 * 1024, rtmp.max_message_size):
        raise ConfigError("rtmp.pre_publish_bytes", "expected between 4096 and 1048576 (and <= rtmp.max_message_size)")
    if not 16 <= rtmp.pre_publish_messages <= 10_000:
        raise ConfigError("rtmp.pre_publish_messages", "expected between 16 and 10000")
    if not 1 <= rtmp.control_messages_per_second <= 100_000:
        raise ConfigError("rtmp.control_messages_per_second", "expected between 1 and 100000")
    parse_hostport(rtmp.tls_listen, "rtmp.tls_listen")
    if bool(rtmp.tls_cert_file) != bool(rtmp.tls_key_file):
        missing = "rtmp.tls_key_file" if rtmp.tls_cert_file else "rtmp.tls_cert_file"
        raise ConfigError(missing, "RTMPS needs both rtmp.tls_cert_file and rtmp.tls_key_file")
    if rtmp.tls_cert_file:
        rtmps_context(rtmp)


def rtmps_context(rtmp: RtmpConfig) -> ssl.SSLContext:
    """The TLS server context of the RTMPS listener; ConfigError names the file that cannot be used."""
    return tls_server_context(rtmp.tls_cert_file, rtmp.tls_key_file, "rtmp")


def tls_server_context(cert_file: str, key_file: str, section: str) -> ssl.SSLContext:
    """A TLS server context from PEM files; ConfigError names `section`.tls_cert_file/tls_key_file at fault."""
    for key, path in ((f"{section}.tls_cert_file", cert_file), (f"{section}.tls_key_file", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    try:  # the certificates alone first, so that an error can name the file at fault
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"{section}.tls_cert_file", f"no PEM certificate in {cert_file}: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:  # not a PEM key, or not the key of that certificate
        raise ConfigError(f"{section}.tls_key_file", f"cannot use {key_file} with the certificate: {exc}") from None
    return ctx


def validate(cfg: Config) -> None:
    parse_hostport(cfg.rtmp.listen, "rtmp.listen")
    parse_hostport(cfg.srt.listen, "srt.listen")
    parse_hostport(cfg.http.listen, "http.listen")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", "expected debug, info, warning or error")
    if not 0.5 <= cfg.hls.segment_seconds <= 30:
        raise ConfigError("hls.segment_seconds", "expected between 0.5 and 30")
    if cfg.hls.max_segment_seconds != 0 and not cfg.hls.segment_seconds <= cfg.hls.max_segment_seconds <= 120:
        raise ConfigError("hls.max_segment_seconds",
                          "expected 0 (auto: 3 x hls.segment_seconds) or between hls.segment_seconds and 120")
    if not 0 <= cfg.hls.reconnect_grace_seconds <= 3600:  # also refuses nan and inf
        raise ConfigError("hls.reconnect_grace_seconds", "expected between 0 and 3600 seconds")
    if not 2 <= cfg.hls.window <= 100:
        raise ConfigError("hls.window", "expected between 2 and 100")
    if cfg.hls.format not in ("cmaf", "ts"):
        raise ConfigError("hls.format", 'expected "cmaf" or "ts"')
    if not 0.2 <= cfg.hls.part_seconds <= 1.0:  # also refuses nan
        raise ConfigError("hls.part_seconds", "expected between 0.2 and 1.0")
    if not 1 <= cfg.hls.max_blocking_requests <= 100_000:
        raise ConfigError("hls.max_blocking_requests", "expected between 1 and 100000")
    if cfg.store.max_bytes < 16 * 1024 * 1024:
        raise ConfigError("store.max_bytes", "expected at least 16 MiB")
    if cfg.store.retention_segments < 0:
        raise ConfigError("store.retention_segments", "must not be negative")
    if not 1024 <= cfg.rtmp.max_chunk_size <= 16 * 1024 * 1024:
        raise ConfigError("rtmp.max_chunk_size", "expected between 1024 and 16777216")
    if not 64 * 1024 <= cfg.rtmp.max_message_size <= 64 * 1024 * 1024:
        raise ConfigError("rtmp.max_message_size", "expected between 65536 and 67108864")
    _validate_rtmp_limits(cfg.rtmp)
    for name, value in (("rtmp.handshake_timeout", cfg.rtmp.handshake_timeout),
                        ("rtmp.idle_timeout", cfg.rtmp.idle_timeout),
                        ("srt.idle_timeout", cfg.srt.idle_timeout),
                        ("origin.heartbeat_seconds", cfg.origin.heartbeat_seconds)):
        if value <= 0:
            raise ConfigError(name, "must be positive")
    if cfg.origin.auth_cache_seconds < 0:
        raise ConfigError("origin.auth_cache_seconds", "must not be negative")
    _validate_http(cfg.http)
    _validate_relay(cfg.relay)
    _validate_chat(cfg.chat)
    for i, prefix in enumerate(cfg.node.prefixes):
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise ConfigError(f"node.prefixes[{i}]", f"not a CIDR prefix: {prefix!r}") from None
    if cfg.node.latitude is not None and not -90 <= cfg.node.latitude <= 90:
        raise ConfigError("node.latitude", "expected degrees between -90 and 90")
    if cfg.node.longitude is not None and not -180 <= cfg.node.longitude <= 180:
        raise ConfigError("node.longitude", "expected degrees between -180 and 180")
    if (cfg.node.latitude is None) != (cfg.node.longitude is None):
        raise ConfigError("node.latitude" if cfg.node.latitude is None else "node.longitude",
                          "set both node.latitude and node.longitude, or neither")
    if cfg.node.viewer_limit < 0 or cfg.node.egress_limit_bps < 0:
        raise ConfigError("node.viewer_limit" if cfg.node.viewer_limit < 0 else "node.egress_limit_bps",
                          "must not be negative")
    _validate_node_relay(cfg.node)
    if cfg.srt.pbkeylen not in (0, 16, 24, 32):
        raise ConfigError("srt.pbkeylen", "expected 0, 16, 24 or 32")
    if cfg.srt.passphrase and not 10 <= len(cfg.srt.passphrase) <= 79:
        raise ConfigError("srt.passphrase", "SRT passphrases are 10 to 79 characters")
    for ch, pw in cfg.srt.channel_passphrases.items():
        if not 10 <= len(pw) <= 79:
            raise ConfigError(f"srt.channel_passphrases.{ch}", "SRT passphrases are 10 to 79 characters")
    if cfg.transcode.encoder not in ("auto", "nvenc", "x264"):
        raise ConfigError("transcode.encoder", "expected auto, nvenc or x264")
    if cfg.transcode.enabled not in (True, False, "auto"):
        raise ConfigError("transcode.enabled", 'expected true, false or "auto"')
    if cfg.transcode.max_transcodes < 0:
        raise ConfigError("transcode.max_transcodes", "must not be negative")
    rung_names: set[str] = set()
    for i, rung in enumerate(cfg.transcode.ladder):
        key = f"transcode.ladder[{i}]"
        if not _CHANNEL_RE.match(rung.name) or rung.name == "source":
            raise ConfigError(f"{key}.name", f"invalid rung name {rung.name!r} (A-Z a-z 0-9 _ . -, not 'source')")
        if rung.name in rung_names:
            raise ConfigError(f"{key}.name", f"rung name {rung.name!r} is used twice")
        rung_names.add(rung.name)
        if not (16 <= rung.width <= 7680 and 16 <= rung.height <= 4320):
            raise ConfigError(key, f"size {rung.width}x{rung.height} outside 16x16..7680x4320")
        if not 1 <= rung.fps <= 240:
            raise ConfigError(f"{key}.fps", "expected between 1 and 240")
        if not 16 <= rung.bitrate_kbps <= 200_000:
            raise ConfigError(f"{key}.bitrate_kbps", "expected between 16 and 200000")
    seen: set[str] = set()
    for key, channel in cfg.channels.items():
        if not _KEY_RE.match(key):
            raise ConfigError(f"channels.{key}", "stream keys are 1-128 characters of A-Z a-z 0-9 _ . ~ -")
        if not _CHANNEL_RE.match(channel):
            raise ConfigError(f"channels.{key}", f"invalid channel name {channel!r} (A-Z a-z 0-9 _ . -, max 64)")
        if channel in seen:
            raise ConfigError(f"channels.{key}", f"channel {channel!r} has two stream keys")
        seen.add(channel)


_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _validate_node_relay(node: NodeConfig) -> None:
    """[node] relay, reachable, relay_host."""
    if node.relay and not node.reachable:
        raise ConfigError("node.relay", "a relay node must be reachable by the others: set node.reachable = true "
                                        "or node.relay = false")
    if node.relay_host:
        try:
            ipaddress.ip_address(node.relay_host)
        except ValueError:
            if not _HOSTNAME_RE.match(node.relay_host):
                raise ConfigError("node.relay_host", f"expected a host name or an IP address (no port, no scheme), "
                                                     f"got {node.relay_host!r}") from None


def _validate_relay(relay: RelayConfig) -> None:
    parse_hostport(relay.listen, "relay.listen")
    for name, value, lo, hi in (("relay.start_timeout", relay.start_timeout, 0.1, 60),
                                ("relay.linger_seconds", relay.linger_seconds, 0.1, 86400),
                                ("relay.stall_timeout", relay.stall_timeout, 0.2, 60),
                                ("relay.send_timeout", relay.send_timeout, 0.1, 600)):
        if not lo <= value <= hi:  # also refuses nan and inf
            raise ConfigError(name, f"expected between {lo:g} and {hi:g} seconds")
    if not 0.05 <= relay.keepalive_seconds < relay.stall_timeout:
        raise ConfigError("relay.keepalive_seconds", "expected at least 0.05 s and below relay.stall_timeout")
    if not 2 <= relay.max_backlog_segments <= 100_000:
        raise ConfigError("relay.max_backlog_segments", "expected between 2 and 100000")
    if not 1024 * 1024 <= relay.max_record_bytes <= 1024 * 1024 * 1024:
        raise ConfigError("relay.max_record_bytes", "expected between 1 MiB and 1 GiB")
    for name, count in (("relay.max_subscriptions", relay.max_subscriptions),
                        ("relay.max_streams", relay.max_streams)):
        if not 1 <= count <= 1_000_000:
            raise ConfigError(name, "expected between 1 and 1000000")


_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


def _validate_chat(chat: ChatConfig) -> None:
    """[chat]: listeners, TLS files, bus, limits."""
    if chat.irc_listen:
        parse_hostport(chat.irc_listen, "chat.irc_listen")
    parse_hostport(chat.irc_tls_listen, "chat.irc_tls_listen")
    if bool(chat.tls_cert_file) != bool(chat.tls_key_file):
        missing = "chat.tls_key_file" if chat.tls_cert_file else "chat.tls_cert_file"
        raise ConfigError(missing, "IRC over TLS needs both chat.tls_cert_file and chat.tls_key_file")
    if chat.tls_cert_file:
        tls_server_context(chat.tls_cert_file, chat.tls_key_file, "chat")
    if not _SERVER_NAME_RE.match(chat.server_name):
        raise ConfigError("chat.server_name", "expected a host name (A-Z a-z 0-9 . -, at most 63 characters)")
    if chat.bus not in ("auto", "local", "nats"):
        raise ConfigError("chat.bus", 'expected "auto", "local" or "nats"')
    if chat.bus == "nats" and not chat.nats_url.startswith(("nats://", "tls://")):
        raise ConfigError("chat.nats_url", "expected nats://HOST:PORT or tls://HOST:PORT")
    if problem := key_files_problem(chat.jwt_public_keys):
        raise ConfigError(*problem)
    for name, count, lo, hi in (("chat.max_connections", chat.max_connections, 1, 10_000_000),
                                ("chat.max_rooms_per_connection", chat.max_rooms_per_connection, 1, 10_000),
                                ("chat.max_queue_bytes", chat.max_queue_bytes, 16 * 1024, 1 << 30),
                                ("chat.big_room_members", chat.big_room_members, 0, 10_000_000)):
        if not lo <= count <= hi:
            raise ConfigError(name, f"expected between {lo} and {hi}")
    for name, value, flo, fhi in (("chat.batch_seconds", chat.batch_seconds, 0.0, 1.0),
                                  ("chat.ping_interval", chat.ping_interval, 0.1, 3600.0),
                                  ("chat.pong_timeout", chat.pong_timeout, 0.1, 600.0),
                                  ("chat.login_timeout", chat.login_timeout, 0.1, 600.0),
                                  ("chat.lines_per_second", chat.lines_per_second, 0.1, 100_000.0)):
        if not flo <= value <= fhi:  # also refuses nan and inf
            raise ConfigError(name, f"expected between {flo:g} and {fhi:g}")
    problem = limits_problem(chat.limits)
    if problem is not None:
        raise ConfigError(*problem)


def _validate_http(http: HttpConfig) -> None:
    if not 1 <= http.max_connections <= 10_000_000:
        raise ConfigError("http.max_connections", "expected between 1 and 10000000")
    if not 1 <= http.max_connections_per_address <= 10_000_000:
        raise ConfigError("http.max_connections_per_address", "expected between 1 and 10000000")
    for name, value in (("http.header_timeout", http.header_timeout),
                        ("http.keepalive_timeout", http.keepalive_timeout),
                        ("http.send_timeout", http.send_timeout)):
        if not 0.1 <= value <= 3600:  # also refuses nan and inf
            raise ConfigError(name, "expected between 0.1 and 3600 seconds")


def valid_channel_name(name: str) -> bool:
    return bool(_CHANNEL_RE.match(name))
