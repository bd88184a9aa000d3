"""Transcode placement, pure: where a new stream's ABR ladder is encoded, and why.

Inputs are the controller's view of each node (health, cordon/drain, per-GPU NVML telemetry, CPU
load, current transcodes, whether transcoding is on there and the node's own ladder limit). The ingest node is preferred (no extra hop); a node is able to take a
transcode when it is healthy, not draining, and has free encoder capacity:
  - NVENC: a GPU that reports H.264 encoder capacity (NVML encoder capacity > 0), encoder
    utilization below ENCODER_UTIL_MAX, below TEMP_MAX_C and not clock-throttled for power or heat;
  - libx264 (no usable NVENC): fewer transcodes than the node's advertised CPU capacity and a CPU
    load below CPU_LOAD_MAX per core.
Among able nodes the order is: ingest node first, then lower encoder utilization, fewer streams,
then node id (and GPU index) — the same inputs always give the same decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ENCODER_UTIL_MAX = 80  # % NVENC utilization above which a GPU takes no new session
TEMP_MAX_C = 85  # °C: most data-centre GPUs start slowing down around here
CPU_LOAD_MAX = 0.75  # 1-minute load per core above which libx264 transcodes are not placed
# nvmlClocksEventReason bits that mean "slowed down": SW power cap, HW slowdown, HW thermal,
# HW power brake, SW thermal (nvml.h)
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


@dataclass(frozen=True, slots=True)
class GpuView:
    index: int
    name: str = ""
    encoder_capacity_h264_pct: int | None = None  # None or 0: no NVENC (e.g. H100/H200)
    encoder_utilization_pct: int = 0
    encoder_sessions: int = 0
    temperature_c: int = 0
    clocks_event_reasons: int = 0

    @property
    def throttled(self) -> bool:
        return bool(self.clocks_event_reasons & THROTTLE_MASK)


@dataclass(frozen=True, slots=True)
class PlacementNode:
    id: str
    state: str  # healthy / degraded / unhealthy / draining / lost
    draining: bool = False
    gpus: tuple[GpuView, ...] = ()
    cpu_count: int = 0
    cpu_load1: float = 0.0
    transcodes: int = 0
    cpu_transcode_capacity: int = 0  # libx264 ladders the node says it can run (from its own bench)
    active_streams: int = 0
    transcoding: bool = True  # False: the node runs with transcoding off (its config, or no usable encoder)
    transcode_limit: int = 0  # the node's own ceiling on concurrent ladders; 0 = none stated


@dataclass(frozen=True, slots=True)
class Placement:
    channel: str
    ingest_node: str
    mode: str  # "transcode" or "passthrough"
    node_id: str  # where the ladder runs ("" when passthrough only)
    encoder: str  # "nvenc", "x264" or ""
    gpu_index: int | None
    reason: str


def _gpu_problem(g: GpuView) -> str | None:
    if not g.encoder_capacity_h264_pct:
        return f"GPU {g.index} ({g.name or 'unknown'}) has no NVENC encoder capacity"
    if g.encoder_utilization_pct >= ENCODER_UTIL_MAX:
        return f"GPU {g.index} encoder {g.encoder_utilization_pct}% busy"
    if g.temperature_c >= TEMP_MAX_C:
        return f"GPU {g.index} at {g.temperature_c} °C"
    if g.throttled:
        return f"GPU {g.index} clock-throttled (reasons 0x{g.clocks_event_reasons:x})"
    return None


def capability(n: PlacementNode) -> tuple[str, int | None, str] | str:
    """(encoder, gpu index, why) if the node can take a transcode, else the reason it cannot."""
    if n.draining or n.state == "draining":
        return "draining"
    if n.state != "healthy":
        return f"node is {n.state}"
    if not n.transcoding:
        return "transcoding is off on the node"
    if n.transcode_limit and n.transcodes >= n.transcode_limit:
        return f"at its transcode limit ({n.transcodes} of {n.transcode_limit} ladders)"
    if n.gpus:
        if any(g.throttled for g in n.gpus) and not any(_gpu_problem(g) is None for g in n.gpus):
            return "GPUs throttling"
        ok = sorted((g for g in n.gpus if _gpu_problem(g) is None),
                    key=lambda g: (g.encoder_utilization_pct, g.encoder_sessions, g.index))
        if ok:
            g = ok[0]
            return "nvenc", g.index, f"GPU {g.index} encoder {g.encoder_utilization_pct}% busy, {g.encoder_sessions} sessions"
    if n.cpu_transcode_capacity > n.transcodes and (
        not n.cpu_count or n.cpu_load1 / n.cpu_count < CPU_LOAD_MAX
    ):
        return "x264", None, f"libx264: {n.transcodes}/{n.cpu_transcode_capacity} CPU transcodes"
    problems = [p for g in n.gpus if (p := _gpu_problem(g))]
    cpu = f"CPU capacity {n.transcodes}/{n.cpu_transcode_capacity}, load {n.cpu_load1:.1f}/{n.cpu_count or '?'} cores"
    return "; ".join([*problems, cpu]) if problems else f"no encoder capacity ({cpu})"


def _order(n: PlacementNode, enc: tuple[str, int | None, str], ingest: str) -> tuple[int, int, int, int, str]:
    util = 0
    if enc[0] == "nvenc" and enc[1] is not None:
        util = next(g.encoder_utilization_pct for g in n.gpus if g.index == enc[1])
    else:
        util = int(100 * n.transcodes / max(1, n.cpu_transcode_capacity))
    return (0 if n.id == ingest else 1, 0 if enc[0] == "nvenc" else 1, util, n.active_streams, n.id)


def rank(nodes: Iterable[PlacementNode], ingest: str) -> list[tuple[PlacementNode, tuple[str, int | None, str]]]:
    """Able nodes, best first."""
    able = []
    for n in nodes:
        c = capability(n)
        if not isinstance(c, str):
            able.append((n, c))
    able.sort(key=lambda nc: _order(nc[0], nc[1], ingest))
    return able


def place(channel: str, ingest: str, nodes: Iterable[PlacementNode], *, allow_remote: bool = False) -> Placement:
    """Where `channel`'s ladder runs. Without edge-to-edge relay (allow_remote=False) only the ingest
    node can transcode; otherwise the stream is passthrough only there and the reason says why."""
    nodes = list(nodes)
    by_id = {n.id: n for n in nodes}
    ordered = rank(nodes, ingest)
    if ordered and (ordered[0][0].id == ingest or allow_remote):
        n, (enc, gpu, why) = ordered[0]
        where = "ingest node" if n.id == ingest else "remote node"
        return Placement(channel, ingest, "transcode", n.id, enc, gpu, f"{where} {n.id}: {why}")
    own = by_id.get(ingest)
    why_not = capability(own) if own is not None else "ingest node unknown to the controller"
    if not isinstance(why_not, str):  # pragma: no cover - able nodes were ranked above
        why_not = "not chosen"
    better = f"; best able node would be {ordered[0][0].id}" if ordered else "; no node in the fleet has capacity"
    return Placement(channel, ingest, "passthrough", "", "", None, f"passthrough only on {ingest}: {why_not}{better}")
