"""Registry entries → the pure inputs of placement (placement.py) and viewer routing (routing.py)."""

from __future__ import annotations

from originctl.model import GpuStatus
from originctl.server.placement import GpuView, PlacementNode
from originctl.server.registry import NodeEntry
from originctl.server.routing import RouteNode


def placement_node(entry: NodeEntry, placed_transcodes: int = 0) -> PlacementNode:
    """`placed_transcodes`: ladders the controller placed on the node that its last report may not count yet."""
    h = entry.health
    r = entry.last_report
    if r is None:  # nothing known about its encoders yet
        return PlacementNode(id=entry.id, state=h.state.value, draining=h.draining, transcoding=False)
    s = r.node
    encoder = s.transcode_encoder
    gpus: tuple[GpuView, ...] = ()
    if encoder == "nvenc" and r.gpu_status is GpuStatus.OK:
        gpus = tuple(GpuView(index=g.index, name=g.name, encoder_capacity_h264_pct=g.encoder_capacity_h264_pct,
                             encoder_utilization_pct=g.encoder_utilization_pct, encoder_sessions=g.encoder_sessions,
                             temperature_c=g.temperature_c, clocks_event_reasons=g.clocks_event_reasons)
                     for g in r.gpus)
    return PlacementNode(
        id=entry.id, state=h.state.value, draining=h.draining, gpus=gpus, cpu_count=s.cpu_count,
        cpu_load1=s.cpu_load1, transcodes=max(s.transcodes, placed_transcodes),
        cpu_transcode_capacity=s.transcode_capacity if encoder == "x264" else 0, active_streams=s.active_streams,
        transcoding=bool(encoder), transcode_limit=s.transcode_capacity,
    )


def route_node(entry: NodeEntry, channels: frozenset[str]) -> RouteNode | None:
    """None for a node that never said how viewers reach it."""
    info = entry.info
    if not info.public_url:
        return None
    r = entry.last_report
    return RouteNode(
        id=entry.id, url=info.public_url, state=entry.health.state.value, draining=entry.health.draining,
        prefixes=info.prefixes, latitude=info.latitude, longitude=info.longitude,
        viewers=r.node.viewers if r else 0, viewer_limit=info.viewer_limit,
        egress_bps=r.node.egress_bps if r else 0, egress_limit_bps=info.egress_limit_bps, channels=channels,
    )
