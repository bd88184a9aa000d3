"""The controller's domain types: what a node is, what it reports, what happened to it.

Plain frozen dataclasses, free of protobuf (originctl/server/convert.py and originctl/client.py map
to and from the wire). Units are in the field names, as in proto/edgenet/v1/common.proto.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edged.chat.model import Restriction, RoomModes
from edged.common.gpu import GpuSample as GpuSample  # re-exported: part of the controller's domain
from edged.common.gpu import GpuStatus as GpuStatus
from edged.common.hostport import join_hostport


class NodeState(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str = ""
    hostname: str = ""
    site: str = ""
    version: str = ""
    latitude: float | None = None
    longitude: float | None = None
    prefixes: tuple[str, ...] = ()
    public_url: str = ""
    http_port: int = 0
    rtmp_port: int = 0
    srt_port: int = 0
    heartbeat_seconds: float = 2.0
    gpu_models: tuple[str, ...] = ()
    driver_version: str = ""
    viewer_limit: int = 0  # 0 = no limit
    egress_limit_bps: int = 0  # 0 = no limit
    relay_port: int = 0  # the node's relay listener; 0 = none
    relay: bool = False  # [node] relay: may relay channels it does not ingest
    reachable: bool = True  # [node] reachable: other nodes can dial its relay port
    relay_host: str = ""  # [node] relay_host; "" = the host of public_url

    @property
    def relay_address(self) -> str:
        """HOST:PORT other nodes dial for this node's relay listener; "" when it has none (or no host is known)."""
        if not self.relay_port:
            return ""
        host = self.relay_host or (urlsplit(self.public_url).hostname or "" if self.public_url else "")
        return join_hostport(host, self.relay_port) if host else ""


@dataclass(frozen=True, slots=True)
class NodeStats:
    cpu_load1: float = 0.0
    cpu_count: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    active_streams: int = 0
    viewers: int = 0
    egress_bps: int = 0
    cache_bytes: int = 0
    cache_capacity_bytes: int = 0
    transcodes: int = 0
    live_channels: tuple[str, ...] = ()
    transcode_capacity: int = 0  # ladders the node runs at most; 0 = transcoding off
    transcode_encoder: str = ""  # "nvenc", "x264", or "" (off, or still detecting)


@dataclass(frozen=True, slots=True)
class Relaying:
    """One channel an edge relays, as its report says: as a child of `parent_node_id`, as a parent only (the
    ingest edge with children), or pushing it up to `parent_node_id` (an unreachable ingest edge)."""

    channel: str
    role: str  # "child" | "parent" | "push"
    parent_node_id: str = ""
    children: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    seq: int = 0
    sent_unix_us: int = 0
    node: NodeStats = NodeStats()
    gpu_status: GpuStatus = GpuStatus.NO_GPU
    gpu_error: str = ""
    gpus: tuple[GpuSample, ...] = ()
    relaying: tuple[Relaying, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    """A node as the admin API shows it."""

    id: str
    info: NodeInfo
    state: NodeState
    state_reason: str = ""
    state_since_unix_ms: int = 0
    last_report_unix_ms: int = 0
    connected: bool = False
    draining: bool = False
    peer: str = ""
    enrolled_unix_ms: int = 0
    last_report: Report | None = None
    certificate_not_after_unix_ms: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    time_unix_ms: int
    node_id: str
    kind: str
    from_state: NodeState | None = None
    to_state: NodeState | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the store keeps about a node between restarts."""

    id: str
    info: NodeInfo
    cert_serial: str  # hex; a connection presenting another serial is refused
    cert_not_after_unix_ms: int
    enrolled_unix_ms: int
    state: NodeState = NodeState.LOST
    state_reason: str = "enrolled; not connected yet"
    state_since_unix_ms: int = 0
    last_report_unix_ms: int = 0
    draining: bool = False
    revoked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A bootstrap token as stored: only the SHA-256 of its secret, never the secret."""

    secret_sha256: str
    created_unix_ms: int
    expires_unix_ms: int
    site: str = ""
    used_unix_ms: int = 0
    used_by: str = ""


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """A channel as stored: only the SHA-256 of its stream key, never the key."""

    name: str
    key_sha256: str
    created_unix_ms: int
    key_rotated_unix_ms: int = 0


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as the admin API shows it."""

    name: str
    created_unix_ms: int = 0
    key_rotated_unix_ms: int = 0
    live_nodes: tuple[str, ...] = ()
    next_seq: int = 0  # fleet-wide numbering: the next HLS sequence number of the channel, on any ingest edge
    disc_seq: int = 0  # and its discontinuity count


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One publish session of a channel on a node, with where its ladder runs and why."""

    id: str
    channel: str
    node_id: str
    protocol: str = ""  # "rtmp", "srt", or "" when known only from the edge's reports
    started_unix_ms: int = 0  # the edge's clock
    ended_unix_ms: int = 0  # 0 = live
    mode: str = "unknown"  # "transcode", "passthrough", "unknown"
    encoder: str = ""
    renditions: tuple[str, ...] = ()
    reason: str = ""
    end_reason: str = ""
    decided_by_controller: bool = False

    @property
    def live(self) -> bool:
        return not self.ended_unix_ms


@dataclass(frozen=True, slots=True)
class RelayMember:
    """One node in a channel's relay tree, as `originctl relay tree` shows it."""

    node_id: str
    parent_node_id: str = ""  # "" for the ingest edge
    depth: int = 0  # hops from the ingest edge
    role: str = "edge"  # "ingest", "push" (the relay an unreachable ingest edge pushes to), "relay", "edge"
    children: int = 0  # planned
    reported: str = ""  # what the node itself last reported for the channel ("child of X", "parent", ...), "" = nothing
    reason: str = ""  # why this parent
    name: str = ""  # the node's name, for people


@dataclass(frozen=True, slots=True)
class RelayTreeView:
    """A live channel's relay tree."""

    channel: str
    ingest_node_id: str
    members: tuple[RelayMember, ...] = ()
    problem: str = ""  # why it cannot serve anyone, when it cannot


@dataclass(frozen=True, slots=True)
class Route:
    """A viewer routing decision (or why there is none), as `originctl route` shows it."""

    routed: bool
    channel: str
    client_ip: str = ""
    node_id: str = ""
    url: str = ""
    reason: str = ""  # prefix, nearest, least-loaded; unknown-channel, offline, unavailable
    detail: str = ""
    alternates: tuple[tuple[str, str], ...] = ()  # (node id, url)
    distance_km: float | None = None
    client_location: tuple[float, float] | None = None
    chain: tuple[str, ...] = ()  # relay path from the ingest edge to the chosen node (ingest, relays..., node)
    carrying: bool = False  # the chosen node carries the channel already


@dataclass(frozen=True, slots=True)
class ChatRoomRecord:
    """What the store keeps of a chat room: its rules state, and the seq no event of it has gone past."""

    room: str
    room_id: str
    modes: RoomModes = RoomModes()
    restrictions: tuple[Restriction, ...] = ()
    seq: int = 0  # every seq the hub issued for the room is at most this (reserved ahead, exact after a stop)


@dataclass(frozen=True, slots=True)
class ChatNatsState:
    """What the store keeps of the fleet's chat when it runs on NATS JetStream: where the controller's
    follower of the chat stream stands (the first stream sequence it has not applied, and the JetStream
    time of the last one it applied) and each room's durable state as of there (`ChatRoomRecord.seq`: the
    stream sequence of the room's last record applied). `stream_created_ms`: when the stream the position
    belongs to was created (a stream deleted and made again starts its sequences over)."""

    next_sseq: int = 1
    time_ms: int = 0
    stream_created_ms: int = 0
    rooms: tuple[ChatRoomRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRoomView:
    """A chat room as `originctl chat bans|mode` shows it."""

    room: str
    room_id: str = ""
    modes: RoomModes = RoomModes()
    restrictions: tuple[Restriction, ...] = ()  # live bans (until 0) and timeouts, by login
    head_seq: int = 0
    watching_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatModeration:
    """The answer to an operator's moderation action."""

    ok: bool
    notice_id: str
    text: str
    room: ChatRoomView


# --- plain-dict forms, for `-o json` and the recorded samples under tests/data/nvml/ -----------------


def gpu_from_dict(d: dict[str, Any]) -> GpuSample:
    known = {k: v for k, v in d.items() if k in GpuSample.__dataclass_fields__}
    if "unsupported" in known:
        known["unsupported"] = tuple(known["unsupported"])
    return GpuSample(**known)


def report_from_dict(d: dict[str, Any]) -> Report:
    node = d.get("node", {})
    node_known = {k: v for k, v in node.items() if k in NodeStats.__dataclass_fields__}
    if "live_channels" in node_known:
        node_known["live_channels"] = tuple(node_known["live_channels"])
    return Report(
        seq=int(d.get("seq", 0)),
        sent_unix_us=int(d.get("sent_unix_us", 0)),
        node=NodeStats(**node_known),
        gpu_status=GpuStatus(d.get("gpu_status", GpuStatus.NO_GPU.value)),
        gpu_error=str(d.get("gpu_error", "")),
        gpus=tuple(gpu_from_dict(g) for g in d.get("gpus", ())),
        relaying=tuple(Relaying(**r) for r in d.get("relaying", ())),
    )


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums and tuples → JSON-ready values."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if hasattr(obj, "__dataclass_fields__"):
        return {name: to_jsonable(getattr(obj, name)) for name in obj.__dataclass_fields__}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
