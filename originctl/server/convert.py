"""Protobuf ↔ domain (originctl.model), and domain errors → gRPC status codes, in one place."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from edged.common.gpu import GPU_OPTIONAL_FIELDS, GPU_PLAIN_FIELDS
from edgenet.v1 import admin_pb2, edge_pb2
from edgenet.v1 import common_pb2 as pb
from originctl import errors
from originctl.model import (
    Channel,
    Event,
    GpuSample,
    GpuStatus,
    Node,
    NodeInfo,
    NodeState,
    NodeStats,
    Relaying,
    RelayMember,
    RelayTreeView,
    Report,
    Route,
    StreamRecord,
)

STATE_TO_PB = {
    NodeState.HEALTHY: pb.NODE_STATE_HEALTHY,
    NodeState.DEGRADED: pb.NODE_STATE_DEGRADED,
    NodeState.UNHEALTHY: pb.NODE_STATE_UNHEALTHY,
    NodeState.DRAINING: pb.NODE_STATE_DRAINING,
    NodeState.LOST: pb.NODE_STATE_LOST,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
GPU_STATUS_TO_PB = {
    GpuStatus.OK: pb.GPU_STATUS_OK,
    GpuStatus.NO_GPU: pb.GPU_STATUS_NO_GPU,
    GpuStatus.NVML_ERROR: pb.GPU_STATUS_NVML_ERROR,
}
GPU_STATUS_FROM_PB = {v: k for k, v in GPU_STATUS_TO_PB.items()}

_STATS_PLAIN = tuple(f for f in NodeStats.__dataclass_fields__ if f != "live_channels")


# --- from the wire ------------------------------------------------------------------------------------


def node_info_from_pb(m: pb.NodeInfo) -> NodeInfo:
    return NodeInfo(
        name=m.name, hostname=m.hostname, site=m.site, version=m.version,
        latitude=m.latitude if m.HasField("latitude") else None,
        longitude=m.longitude if m.HasField("longitude") else None,
        prefixes=tuple(m.prefixes), public_url=m.public_url, http_port=m.http_port, rtmp_port=m.rtmp_port,
        srt_port=m.srt_port, heartbeat_seconds=m.heartbeat_seconds or 2.0, gpu_models=tuple(m.gpu_models),
        driver_version=m.driver_version, viewer_limit=m.viewer_limit, egress_limit_bps=m.egress_limit_bps,
        relay_port=m.relay_port, relay=m.relay, reachable=not m.unreachable, relay_host=m.relay_host,
    )


def _opt(m: pb.GpuSample, name: str) -> int | None:
    return getattr(m, name) if m.HasField(name) else None


def gpu_from_pb(m: pb.GpuSample) -> GpuSample:
    # Spelled out field by field: this runs for every GPU of every report (the controller's hot path).
    return GpuSample(
        index=m.index, uuid=m.uuid, name=m.name, utilization_gpu_pct=m.utilization_gpu_pct,
        utilization_memory_pct=m.utilization_memory_pct, encoder_utilization_pct=m.encoder_utilization_pct,
        decoder_utilization_pct=m.decoder_utilization_pct, encoder_sessions=m.encoder_sessions,
        encoder_average_fps=m.encoder_average_fps, encoder_average_latency_us=m.encoder_average_latency_us,
        encoder_capacity_h264_pct=_opt(m, "encoder_capacity_h264_pct"),
        encoder_capacity_hevc_pct=_opt(m, "encoder_capacity_hevc_pct"),
        memory_used_bytes=m.memory_used_bytes, memory_total_bytes=m.memory_total_bytes,
        temperature_c=m.temperature_c, power_w=m.power_w, power_limit_w=m.power_limit_w,
        clocks_event_reasons=m.clocks_event_reasons, sm_clock_mhz=m.sm_clock_mhz,
        memory_clock_mhz=m.memory_clock_mhz, ecc_corrected_volatile=_opt(m, "ecc_corrected_volatile"),
        ecc_uncorrected_volatile=_opt(m, "ecc_uncorrected_volatile"), xid_errors=_opt(m, "xid_errors"),
        last_xid=_opt(m, "last_xid"), pcie_replay_counter=_opt(m, "pcie_replay_counter"),
        unsupported=tuple(m.unsupported),
    )


def report_from_pb(m: pb.Report) -> Report:
    n = m.node
    stats = NodeStats(
        cpu_load1=n.cpu_load1, cpu_count=n.cpu_count, memory_used_bytes=n.memory_used_bytes,
        memory_total_bytes=n.memory_total_bytes, active_streams=n.active_streams, viewers=n.viewers,
        egress_bps=n.egress_bps, cache_bytes=n.cache_bytes, cache_capacity_bytes=n.cache_capacity_bytes,
        transcodes=n.transcodes, live_channels=tuple(n.live_channels), transcode_capacity=n.transcode_capacity,
        transcode_encoder=n.transcode_encoder,
    )
    return Report(
        seq=m.seq, sent_unix_us=m.sent_unix_us, node=stats,
        gpu_status=GPU_STATUS_FROM_PB.get(m.gpu_status, GpuStatus.NO_GPU), gpu_error=m.gpu_error,
        gpus=tuple(gpu_from_pb(g) for g in m.gpus),
        relaying=tuple(Relaying(channel=r.channel, role=r.role, parent_node_id=r.parent_node_id, children=r.children)
                       for r in m.relaying),
    )


def node_from_pb(m: pb.Node) -> Node:
    return Node(
        id=m.id, info=node_info_from_pb(m.info), state=STATE_FROM_PB.get(m.state, NodeState.LOST),
        state_reason=m.state_reason, state_since_unix_ms=m.state_since_unix_ms,
        last_report_unix_ms=m.last_report_unix_ms, connected=m.connected, draining=m.draining, peer=m.peer,
        enrolled_unix_ms=m.enrolled_unix_ms,
        last_report=report_from_pb(m.last_report) if m.HasField("last_report") else None,
        certificate_not_after_unix_ms=m.certificate_not_after_unix_ms,
    )


def event_from_pb(m: pb.Event) -> Event:
    return Event(id=m.id, time_unix_ms=m.time_unix_ms, node_id=m.node_id, kind=m.kind,
                 from_state=STATE_FROM_PB.get(m.from_state), to_state=STATE_FROM_PB.get(m.to_state),
                 reason=m.reason)


# --- to the wire --------------------------------------------------------------------------------------


def node_info_to_pb(i: NodeInfo) -> pb.NodeInfo:
    m = pb.NodeInfo(
        name=i.name, hostname=i.hostname, site=i.site, version=i.version, prefixes=list(i.prefixes),
        public_url=i.public_url, http_port=i.http_port, rtmp_port=i.rtmp_port, srt_port=i.srt_port,
        heartbeat_seconds=i.heartbeat_seconds, gpu_models=list(i.gpu_models), driver_version=i.driver_version,
        viewer_limit=i.viewer_limit, egress_limit_bps=i.egress_limit_bps, relay_port=i.relay_port,
        relay=i.relay, unreachable=not i.reachable, relay_host=i.relay_host,
    )
    if i.latitude is not None:
        m.latitude = i.latitude
    if i.longitude is not None:
        m.longitude = i.longitude
    return m


def gpu_to_pb(g: GpuSample) -> pb.GpuSample:
    m = pb.GpuSample(**{f: getattr(g, f) for f in GPU_PLAIN_FIELDS}, unsupported=list(g.unsupported))
    for f in GPU_OPTIONAL_FIELDS:
        v = getattr(g, f)
        if v is not None:
            setattr(m, f, v)
    return m


def report_to_pb(r: Report) -> pb.Report:
    n = r.node
    return pb.Report(
        seq=r.seq, sent_unix_us=r.sent_unix_us,
        node=pb.NodeStats(**{f: getattr(n, f) for f in _STATS_PLAIN}, live_channels=list(n.live_channels)),
        gpu_status=GPU_STATUS_TO_PB[r.gpu_status], gpu_error=r.gpu_error, gpus=[gpu_to_pb(g) for g in r.gpus],
        relaying=[pb.Relaying(channel=x.channel, role=x.role, parent_node_id=x.parent_node_id, children=x.children)
                  for x in r.relaying],
    )


def node_to_pb(n: Node) -> pb.Node:
    m = pb.Node(
        id=n.id, info=node_info_to_pb(n.info), state=STATE_TO_PB[n.state], state_reason=n.state_reason,
        state_since_unix_ms=n.state_since_unix_ms, last_report_unix_ms=n.last_report_unix_ms,
        connected=n.connected, draining=n.draining, peer=n.peer, enrolled_unix_ms=n.enrolled_unix_ms,
        certificate_not_after_unix_ms=n.certificate_not_after_unix_ms,
    )
    if n.last_report is not None:
        m.last_report.CopyFrom(report_to_pb(n.last_report))
    return m


def event_to_pb(e: Event) -> pb.Event:
    return pb.Event(
        id=e.id, time_unix_ms=e.time_unix_ms, node_id=e.node_id, kind=e.kind,
        from_state=STATE_TO_PB[e.from_state] if e.from_state else pb.NODE_STATE_UNSPECIFIED,
        to_state=STATE_TO_PB[e.to_state] if e.to_state else pb.NODE_STATE_UNSPECIFIED,
        reason=e.reason,
    )


def channel_to_pb(c: Channel) -> admin_pb2.Channel:
    return admin_pb2.Channel(name=c.name, created_unix_ms=c.created_unix_ms,
                             key_rotated_unix_ms=c.key_rotated_unix_ms, live_nodes=list(c.live_nodes),
                             next_seq=c.next_seq, disc_seq=c.disc_seq)


def channel_from_pb(m: admin_pb2.Channel) -> Channel:
    return Channel(name=m.name, created_unix_ms=m.created_unix_ms, key_rotated_unix_ms=m.key_rotated_unix_ms,
                   live_nodes=tuple(m.live_nodes), next_seq=m.next_seq, disc_seq=m.disc_seq)


def stream_to_pb(s: StreamRecord) -> admin_pb2.Stream:
    return admin_pb2.Stream(
        id=s.id, channel=s.channel, node_id=s.node_id, protocol=s.protocol, started_unix_ms=s.started_unix_ms,
        ended_unix_ms=s.ended_unix_ms, mode=s.mode, encoder=s.encoder, renditions=list(s.renditions),
        reason=s.reason, end_reason=s.end_reason, decided_by_controller=s.decided_by_controller)


def stream_from_pb(m: admin_pb2.Stream) -> StreamRecord:
    return StreamRecord(
        id=m.id, channel=m.channel, node_id=m.node_id, protocol=m.protocol, started_unix_ms=m.started_unix_ms,
        ended_unix_ms=m.ended_unix_ms, mode=m.mode, encoder=m.encoder, renditions=tuple(m.renditions),
        reason=m.reason, end_reason=m.end_reason, decided_by_controller=m.decided_by_controller)


def route_to_pb(r: Route) -> admin_pb2.RouteDecision:
    m = admin_pb2.RouteDecision(
        routed=r.routed, channel=r.channel, node_id=r.node_id, url=r.url, reason=r.reason, detail=r.detail,
        alternates=[admin_pb2.RouteAlternate(node_id=n, url=u) for n, u in r.alternates], client_ip=r.client_ip,
        chain=list(r.chain), carrying=r.carrying)
    if r.distance_km is not None:
        m.distance_km = r.distance_km
    if r.client_location is not None:
        m.client_latitude, m.client_longitude = r.client_location
    return m


def route_from_pb(m: admin_pb2.RouteDecision) -> Route:
    loc = (m.client_latitude, m.client_longitude) if m.HasField("client_latitude") else None
    return Route(routed=m.routed, channel=m.channel, client_ip=m.client_ip, node_id=m.node_id, url=m.url,
                 reason=m.reason, detail=m.detail, alternates=tuple((a.node_id, a.url) for a in m.alternates),
                 distance_km=m.distance_km if m.HasField("distance_km") else None, client_location=loc,
                 chain=tuple(m.chain), carrying=m.carrying)


_MODE_TO_PB = {"transcode": edge_pb2.Placement.MODE_TRANSCODE, "passthrough": edge_pb2.Placement.MODE_PASSTHROUGH}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}


def placement_to_pb(mode: str, encoder: str, reason: str, node_id: str, gpu_index: int | None,
                    renditions: tuple[str, ...] = ()) -> edge_pb2.Placement:
    m = edge_pb2.Placement(mode=_MODE_TO_PB.get(mode, edge_pb2.Placement.MODE_UNSPECIFIED), encoder=encoder,
                           reason=reason, node_id=node_id, renditions=list(renditions), decided_by_controller=True)
    if gpu_index is not None:
        m.gpu_index = gpu_index
    return m


def placement_mode_from_pb(m: edge_pb2.Placement) -> str:
    return _MODE_FROM_PB.get(m.mode, "unknown")


def stream_started_from_pb(stream_id: str, node_id: str, m: edge_pb2.StreamEvent, now_ms: int) -> StreamRecord:
    p = m.placement
    placed = m.HasField("placement")
    return StreamRecord(
        id=stream_id, channel=m.channel, node_id=node_id, protocol=m.protocol,
        started_unix_ms=m.time_unix_ms or now_ms, mode=placement_mode_from_pb(p) if placed else "unknown",
        encoder=p.encoder, renditions=tuple(m.renditions) or tuple(p.renditions),
        reason=p.reason if placed else "the edge did not say", decided_by_controller=p.decided_by_controller)


def key_table_to_pb(entries: list[tuple[str, str]], *, full: bool, more: bool = False) -> edge_pb2.ControllerMessage:
    """(channel, key digest) pairs."""
    return edge_pb2.ControllerMessage(key_table=edge_pb2.KeyTable(
        full=full, more=more, entries=[edge_pb2.KeyEntry(channel=c, key_sha256=d) for c, d in entries]))


def key_invalidation_to_pb(channel: str) -> edge_pb2.ControllerMessage:
    return edge_pb2.ControllerMessage(key_invalidation=edge_pb2.KeyInvalidation(channel=channel))


def relay_tree_to_pb(t: RelayTreeView) -> admin_pb2.RelayTree:
    return admin_pb2.RelayTree(
        channel=t.channel, ingest_node_id=t.ingest_node_id, problem=t.problem,
        members=[admin_pb2.RelayMember(node_id=m.node_id, parent_node_id=m.parent_node_id, depth=m.depth, role=m.role,
                                       children=m.children, reported=m.reported, reason=m.reason, name=m.name)
                 for m in t.members])


def relay_tree_from_pb(m: admin_pb2.RelayTree) -> RelayTreeView:
    return RelayTreeView(
        channel=m.channel, ingest_node_id=m.ingest_node_id, problem=m.problem,
        members=tuple(RelayMember(node_id=x.node_id, parent_node_id=x.parent_node_id, depth=x.depth, role=x.role,
                                  children=x.children, reported=x.reported, reason=x.reason, name=x.name)
                      for x in m.members))


# --- errors -------------------------------------------------------------------------------------------

_CODES: tuple[tuple[type[errors.OriginctlError], grpc.StatusCode], ...] = (
    (errors.TokenInvalid, grpc.StatusCode.UNAUTHENTICATED),
    (errors.TokenUsed, grpc.StatusCode.PERMISSION_DENIED),
    (errors.TokenExpired, grpc.StatusCode.PERMISSION_DENIED),
    (errors.EnrollmentRefused, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TrustError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotAuthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.StoreError, grpc.StatusCode.UNAVAILABLE),
    (errors.ControllerUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_code(exc: errors.OriginctlError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.OriginctlError) -> NoReturn:
    """End the RPC with the status code for `exc` and its message (which says what to do)."""
    await context.abort(status_code(exc), str(exc))
    raise AssertionError("unreachable")  # context.abort raises
