"""Agent dataclasses ↔ protobuf messages (the only agent module besides link.py that imports edgenet)."""

from __future__ import annotations

from edged.agent.authorizer import Grant, PlacementOrder
from edged.agent.relaymap import Relaying, RelayPeer, RelayRoute
from edged.agent.status import NodeStatus
from edged.agent.telemetry import GPU_OK, NO_GPU, NVML_ERROR, GpuState, HostReading
from edged.common.gpu import GPU_OPTIONAL_FIELDS, GPU_PLAIN_FIELDS, GpuSample
from edgenet.v1 import common_pb2 as pb
from edgenet.v1 import edge_pb2

_GPU_STATUS = {GPU_OK: pb.GPU_STATUS_OK, NO_GPU: pb.GPU_STATUS_NO_GPU, NVML_ERROR: pb.GPU_STATUS_NVML_ERROR}


def gpu_to_pb(g: GpuSample) -> pb.GpuSample:
    m = pb.GpuSample(**{name: getattr(g, name) for name in GPU_PLAIN_FIELDS}, unsupported=list(g.unsupported))
    for name in GPU_OPTIONAL_FIELDS:
        value = getattr(g, name)
        if value is not None:
            setattr(m, name, value)
    return m


def report_to_pb(seq: int, sent_unix_us: int, gpu: GpuState, host: HostReading, status: NodeStatus,
                 relaying: list[Relaying] | None = None) -> pb.Report:
    return pb.Report(
        seq=seq,
        sent_unix_us=sent_unix_us,
        node=pb.NodeStats(
            cpu_load1=host.cpu_load1, cpu_count=host.cpu_count, memory_used_bytes=host.memory_used_bytes,
            memory_total_bytes=host.memory_total_bytes, active_streams=status.active_streams,
            viewers=status.viewers, egress_bps=max(0, int(status.egress_bps)), cache_bytes=status.cache_bytes,
            cache_capacity_bytes=status.cache_capacity_bytes, transcodes=status.transcodes,
            live_channels=list(status.live_channels), transcode_capacity=status.transcode_capacity,
            transcode_encoder=status.transcode_encoder,
        ),
        gpu_status=_GPU_STATUS[gpu.status],
        gpu_error=gpu.error,
        gpus=[gpu_to_pb(g) for g in gpu.gpus],
        relaying=[pb.Relaying(channel=r.channel, role=r.role, parent_node_id=r.parent_node_id, children=r.children)
                  for r in relaying or ()],
    )


def node_info_to_pb(
    *, name: str, hostname: str, site: str, version: str, latitude: float | None, longitude: float | None,
    prefixes: tuple[str, ...], public_url: str, status: NodeStatus, heartbeat_seconds: float, gpu: GpuState | None,
    viewer_limit: int = 0, egress_limit_bps: int = 0, relay: bool = False, reachable: bool = True,
    relay_host: str = "",
) -> pb.NodeInfo:
    m = pb.NodeInfo(
        name=name, hostname=hostname, site=site, version=version, prefixes=list(prefixes), public_url=public_url,
        http_port=status.http_port, rtmp_port=status.rtmp_port, srt_port=status.srt_port,
        heartbeat_seconds=heartbeat_seconds,
        gpu_models=sorted({g.name for g in gpu.gpus}) if gpu else [],
        driver_version=gpu.driver_version if gpu else "", viewer_limit=viewer_limit,
        egress_limit_bps=egress_limit_bps, relay_port=status.relay_port, relay=relay, unreachable=not reachable,
        relay_host=relay_host,
    )
    if latitude is not None:
        m.latitude = latitude
    if longitude is not None:
        m.longitude = longitude
    return m


def hello(info: pb.NodeInfo, boot_id: str) -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(hello=edge_pb2.Hello(info=info, boot_id=boot_id))


def report(r: pb.Report) -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(report=r)


def goodbye(reason: str) -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(goodbye=edge_pb2.Goodbye(reason=reason))


def command_result(command_id: int, ok: bool, detail: str = "") -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(command_result=edge_pb2.CommandResult(command_id=command_id, ok=ok, detail=detail))


def authorize_request(stream_key: str, protocol: str, remote: str) -> edge_pb2.AuthorizePublishRequest:
    return edge_pb2.AuthorizePublishRequest(protocol=protocol, stream_key=stream_key, remote_address=remote)


_MODES = {edge_pb2.Placement.MODE_TRANSCODE: "transcode", edge_pb2.Placement.MODE_PASSTHROUGH: "passthrough"}
_MODES_PB = {v: k for k, v in _MODES.items()}


def grant_from_pb(m: edge_pb2.AuthorizePublishResponse) -> Grant:
    order = None
    if m.allowed and m.HasField("placement") and m.placement.mode in _MODES:
        p = m.placement
        order = PlacementOrder(mode=_MODES[p.mode], encoder=p.encoder, reason=p.reason, node_id=p.node_id)
    return Grant(allowed=m.allowed, channel=m.channel, reason=m.reason, placement=order, next_seq=m.next_seq,
                 disc_seq=m.disc_seq)


def key_entries(m: edge_pb2.KeyTable) -> list[tuple[str, str]]:
    return [(e.channel, e.key_sha256) for e in m.entries]


def stream_started(channel: str, protocol: str, time_unix_ms: int, *, transcode: bool, encoder: str,
                   renditions: tuple[str, ...], reason: str, by_controller: bool) -> edge_pb2.EdgeMessage:
    placement = edge_pb2.Placement(mode=_MODES_PB["transcode" if transcode else "passthrough"],
                                   renditions=list(renditions), encoder=encoder if transcode else "", reason=reason,
                                   decided_by_controller=by_controller)
    return edge_pb2.EdgeMessage(stream_event=edge_pb2.StreamEvent(
        kind=edge_pb2.StreamEvent.KIND_STARTED, channel=channel, protocol=protocol, renditions=list(renditions),
        time_unix_ms=time_unix_ms, placement=placement))


def stream_ended(channel: str, protocol: str, time_unix_ms: int) -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(stream_event=edge_pb2.StreamEvent(
        kind=edge_pb2.StreamEvent.KIND_ENDED, channel=channel, protocol=protocol, time_unix_ms=time_unix_ms))


def relay_route_from_pb(m: edge_pb2.RelayRoute) -> RelayRoute:
    push = RelayPeer(m.push_to.node_id, m.push_to.address) if m.HasField("push_to") and m.push_to.node_id else None
    return RelayRoute(channel=m.channel, chain=tuple(RelayPeer(h.node_id, h.address) for h in m.chain), push_to=push)


def relay_parent_request(channel: str, exclude: tuple[str, ...]) -> edge_pb2.GetRelayParentRequest:
    return edge_pb2.GetRelayParentRequest(channel=channel, exclude=list(exclude))


def numbering(channel: str, next_seq: int, disc_seq: int) -> edge_pb2.EdgeMessage:
    return edge_pb2.EdgeMessage(numbering=edge_pb2.Numbering(channel=channel, next_seq=next_seq, disc_seq=disc_seq))


def renew_request(csr_pem: bytes) -> edge_pb2.RenewCertificateRequest:
    return edge_pb2.RenewCertificateRequest(csr_pem=csr_pem)
