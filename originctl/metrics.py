"""originctl_* Prometheus metrics, one CollectorRegistry per controller (tests run several in a process).

Counters and histograms are updated as things happen. Gauges about nodes are computed at scrape time by
`FleetCollector` from a snapshot of the registry, so a report costs nothing extra however many series a
fleet has, and rendering runs off the event loop.

Per-GPU gauges use NVIDIA dcgm-exporter's names and label names (DCGM_FI_DEV_*; gpu, UUID, modelName,
Hostname) where the quantity is the same and in the same unit, so its dashboards work unchanged; a
`node` label carries the node ID. Quantities DCGM has no field for are originctl_gpu_*.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from originctl.fleet_metrics import fleet_exposition
from originctl.model import NodeState

if TYPE_CHECKING:
    from originctl.model import Node

# seconds; the 0.1 bucket edge is the benchmark's p99 target
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

MIB = 1024 * 1024
# seconds: a routing decision takes microseconds; the 0.001 edge is the benchmark's p99 goal
ROUTE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
RATE_WINDOW = 10  # s over which originctl_route_decisions_per_second is averaged


class RateMeter:
    """Events per second over the last `window` whole seconds (one counter per second in a ring)."""

    def __init__(self, window: int = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._slots = [0] * (window + 1)
        self._second = [-1] * (window + 1)

    def hit(self) -> None:
        sec = int(self._clock())
        i = sec % len(self._slots)
        if self._second[i] != sec:
            self._second[i], self._slots[i] = sec, 0
        self._slots[i] += 1

    def rate(self) -> float:
        now = int(self._clock())
        total = sum(n for n, sec in zip(self._slots, self._second, strict=True) if now - self.window <= sec < now)
        return total / self.window


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reports = Counter("originctl_reports_received", "Reports received from edges", registry=r)
        self.report_delay = Histogram(
            "originctl_report_delay_seconds",
            "From an edge sending a report to the controller having handled it (includes clock skew "
            "between hosts)", buckets=LATENCY_BUCKETS, registry=r)
        self.report_processing = Histogram(
            "originctl_report_processing_seconds", "Time the controller spends handling one report",
            buckets=LATENCY_BUCKETS, registry=r)
        self.loop_lag = Histogram(
            "originctl_event_loop_lag_seconds", "How late the controller's event loop ran a timer (a busy or "
            "blocked loop delays every report)", buckets=LATENCY_BUCKETS, registry=r)
        self.transitions = Counter("originctl_node_state_transitions", "Node state transitions by new state",
                                   ["state"], registry=r)
        self.enrollments = Counter("originctl_enrollments", "Enrollment attempts by result", ["result"],
                                   registry=r)
        self.connections = Counter("originctl_edge_connections", "Edge stream connections accepted",
                                   registry=r)
        self.admin_calls = Counter("originctl_admin_requests", "Admin API calls by method and status code",
                                   ["method", "code"], registry=r)
        self.route_decisions = Counter(
            "originctl_route_decisions", "Viewer routing decisions by outcome: prefix, nearest, least-loaded (routed); "
            "unknown-channel, offline, unavailable (not routed)", ["outcome"], registry=r)
        self.route_seconds = Histogram("originctl_route_decision_seconds", "Time to make one routing decision",
                                       buckets=ROUTE_BUCKETS, registry=r)
        self.route_builds = Counter("originctl_route_table_builds", "Routing table rebuilds", registry=r)
        self.route_build_seconds = Histogram("originctl_route_table_build_seconds", "Time to rebuild the routing "
                                             "table (on the event loop)", buckets=LATENCY_BUCKETS, registry=r)
        self.route_rate = RateMeter()
        self.authorizations = Counter("originctl_publish_authorizations", "Publish authorizations asked by edges, "
                                      "by result", ["result"], registry=r)
        self.placements = Counter("originctl_placements", "Placement decisions for new streams by mode",
                                  ["mode"], registry=r)
        self.relay_replans = Counter(
            "originctl_relay_replans", "Relay tree plans that changed a tree, by what caused them: stream, node, "
            "report, request, reparent (a child excluded a parent that failed it)", ["reason"], registry=r)
        self.relay_parent_requests = Counter(
            "originctl_relay_parent_requests", "GetRelayParent answers by result: ok, not_live, unserved (live, but "
            "nobody can serve that node), refused (it ingests the channel)", ["result"], registry=r)
        self.chat_rooms = Gauge("originctl_chat_rooms", "Chat rooms the hub holds (watched by an edge, or used "
                                "within the history window)", registry=r)
        self.chat_messages = Counter(
            "originctl_chat_messages", "Chat submissions the hub ordered, and with [chat] bus = \"nats\" those the "
            "controller saw decided on the NATS chat stream, by result: accepted (delivered to the room), refused (a "
            "NOTICE to the sender only), command (a moderator's command carried out), duplicate (a retry or replay "
            "already seen: dropped), malformed (NATS: a record no reader can decode, skipped)", ["result"],
            registry=r)
        for result in ("accepted", "refused", "command", "duplicate", "malformed"):
            self.chat_messages.labels(result)
        self.chat_nats_connected = Gauge(
            "originctl_chat_nats_connected", "1 while the controller follows the NATS chat stream ([chat] bus = "
            "\"nats\"), else 0", registry=r)
        self.chat_nats_sequence = Gauge(
            "originctl_chat_nats_applied_sequence", "The last NATS chat stream sequence the controller applied "
            "to its store's chat state", registry=r)
        self.chat_fanout = Counter("originctl_chat_fanout", "Chat room events queued to edges (one per event per "
                                   "edge watching the room)", registry=r)

        # The per-node/per-GPU families are written by fleet_metrics.fleet_exposition (about ten times cheaper
        # at fleet size than collector objects); the collector adds only the extra gauges.
        self._fleet = FleetCollector(gauges_only=True)
        r.register(self._fleet)
        self._render_lock = threading.Lock()

    def render(self, nodes: list[Node], gauges: dict[str, tuple[str, float]] | None = None,
               families: list[Metric] | None = None) -> bytes:
        """The exposition text with `nodes` (a snapshot taken on the loop), extra `gauges` (name → (help,
        value)) and labelled `families` (built on the loop); blocking, run it in a thread."""
        extra = dict(gauges or {})
        extra["originctl_route_decisions_per_second"] = (
            f"Viewer routing decisions per second over the last {RATE_WINDOW} s", self.route_rate.rate())
        with self._render_lock:
            self._fleet.snapshot = nodes
            self._fleet.gauges = extra
            self._fleet.families = list(families or ())
            try:
                return generate_latest(self.registry) + fleet_exposition(nodes)
            finally:
                self._fleet.snapshot = []
                self._fleet.gauges = {}
                self._fleet.families = []


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class FleetCollector(Collector):
    """Node-level gauges computed from the registry when Prometheus scrapes."""

    def __init__(self, gauges_only: bool = False) -> None:
        self.snapshot: list[Node] = []
        self.gauges: dict[str, tuple[str, float]] = {}
        self.families: list[Metric] = []
        self.gauges_only = gauges_only

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: the series set changes with the fleet

    def collect(self) -> Iterator[Metric]:
        if self.gauges_only:
            for name, (doc, value) in sorted(self.gauges.items()):
                yield GaugeMetricFamily(name, doc, value=value)
            yield from self.families
            return
        nodes = self.snapshot
        by_state = _g("originctl_nodes", "Enrolled nodes by state", ["state"])
        counts = dict.fromkeys(NodeState, 0)
        connected = 0
        node_l = ["node", "Hostname", "site"]
        state = _g("originctl_node_state", "1 for the state each node is in", [*node_l, "state"])
        streams = _g("originctl_node_active_streams", "Live streams ingested by the node", node_l)
        viewers = _g("originctl_node_viewers", "Viewers the node serves", node_l)
        egress = _g("originctl_node_egress_bits_per_second", "Egress bit rate of the node", node_l)
        cache = _g("originctl_node_cache_bytes", "Segment cache in use", node_l)
        cache_cap = _g("originctl_node_cache_capacity_bytes", "Segment cache capacity", node_l)
        load = _g("originctl_node_cpu_load1", "One-minute load average", node_l)
        age = _g("originctl_node_last_report_timestamp_seconds", "When the node last reported (unix)", node_l)
        gl = ["node", "gpu", "UUID", "modelName", "Hostname"]
        gpu = {
            "util": _g("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", gl),
            "mem_util": _g("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", gl),
            "enc": _g("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).", gl),
            "dec": _g("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).", gl),
            "fb_used": _g("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", gl),
            "fb_free": _g("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", gl),
            "temp": _g("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", gl),
            "power": _g("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", gl),
            "sm_clock": _g("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", gl),
            "mem_clock": _g("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", gl),
            "throttle": _g("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask).", gl),
            "xid": _g("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", gl),
            "ecc_dbe": _g("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", gl),
            "ecc_sbe": _g("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.", gl),
            "pcie_replay": _g("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.", gl),
            "sessions": _g("originctl_gpu_encoder_sessions", "Active NVENC sessions", gl),
            "fps": _g("originctl_gpu_encoder_average_fps", "Average NVENC frames per second", gl),
            "latency": _g("originctl_gpu_encoder_average_latency_seconds", "Average NVENC latency", gl),
            "xid_count": _g("originctl_gpu_xid_errors", "Critical XID events since the edge agent started", gl),
        }
        cap = _g("originctl_gpu_encoder_capacity_ratio", "Remaining NVENC capacity (0-1) by codec", [*gl, "codec"])
        for n in nodes:
            counts[n.state] += 1
            connected += n.connected
            host = n.info.name or n.info.hostname
            nl = [n.id, host, n.info.site]
            state.add_metric([*nl, n.state.value], 1)
            if n.last_report_unix_ms:
                age.add_metric(nl, n.last_report_unix_ms / 1000)
            r = n.last_report
            if r is None or n.state is NodeState.LOST:
                continue
            s = r.node
            streams.add_metric(nl, s.active_streams)
            viewers.add_metric(nl, s.viewers)
            egress.add_metric(nl, s.egress_bps)
            cache.add_metric(nl, s.cache_bytes)
            cache_cap.add_metric(nl, s.cache_capacity_bytes)
            load.add_metric(nl, s.cpu_load1)
            for g in r.gpus:
                lab = [n.id, str(g.index), g.uuid, g.name, host]
                gpu["util"].add_metric(lab, g.utilization_gpu_pct)
                gpu["mem_util"].add_metric(lab, g.utilization_memory_pct)
                gpu["enc"].add_metric(lab, g.encoder_utilization_pct)
                gpu["dec"].add_metric(lab, g.decoder_utilization_pct)
                gpu["fb_used"].add_metric(lab, g.memory_used_bytes / MIB)
                gpu["fb_free"].add_metric(lab, max(0, g.memory_total_bytes - g.memory_used_bytes) / MIB)
                gpu["temp"].add_metric(lab, g.temperature_c)
                gpu["power"].add_metric(lab, g.power_w)
                gpu["sm_clock"].add_metric(lab, g.sm_clock_mhz)
                gpu["mem_clock"].add_metric(lab, g.memory_clock_mhz)
                gpu["throttle"].add_metric(lab, g.clocks_event_reasons)
                gpu["sessions"].add_metric(lab, g.encoder_sessions)
                gpu["fps"].add_metric(lab, g.encoder_average_fps)
                gpu["latency"].add_metric(lab, g.encoder_average_latency_us / 1e6)
                if g.last_xid is not None:
                    gpu["xid"].add_metric(lab, g.last_xid)
                if g.xid_errors is not None:
                    gpu["xid_count"].add_metric(lab, g.xid_errors)
                if g.ecc_uncorrected_volatile is not None:
                    gpu["ecc_dbe"].add_metric(lab, g.ecc_uncorrected_volatile)
                if g.ecc_corrected_volatile is not None:
                    gpu["ecc_sbe"].add_metric(lab, g.ecc_corrected_volatile)
                if g.pcie_replay_counter is not None:
                    gpu["pcie_replay"].add_metric(lab, g.pcie_replay_counter)
                if g.encoder_capacity_h264_pct is not None:
                    cap.add_metric([*lab, "h264"], g.encoder_capacity_h264_pct / 100)
                if g.encoder_capacity_hevc_pct is not None:
                    cap.add_metric([*lab, "hevc"], g.encoder_capacity_hevc_pct / 100)
        for st, c in counts.items():
            by_state.add_metric([st.value], c)
        conn = GaugeMetricFamily("originctl_nodes_connected", "Nodes with an open edge stream", value=connected)
        yield from (by_state, conn, state, streams, viewers, egress, cache, cache_cap, load, age, *gpu.values(), cap)
        for name, (doc, value) in sorted(self.gauges.items()):
            yield GaugeMetricFamily(name, doc, value=value)
