"""What the agent puts on the wire is what the controller reads back (both adapters, one message)."""

from __future__ import annotations

from edged.agent import convert as agent_convert
from edged.agent.status import NodeStatus
from edged.agent.telemetry import GPU_OK, NO_GPU, GpuState, HostReading
from edged.common.gpu import GpuSample
from originctl.model import GpuStatus
from originctl.server import convert as ctl_convert


def test_report_round_trip() -> None:
    g = GpuSample(index=1, uuid="GPU-x", name="NVIDIA L4", utilization_gpu_pct=61, encoder_sessions=9,
                   encoder_capacity_h264_pct=0, ecc_uncorrected_volatile=2, xid_errors=0, memory_used_bytes=5 << 30,
                   memory_total_bytes=24 << 30, power_w=71.8, clocks_event_reasons=0x60, unsupported=("pcie",))
    status = NodeStatus(active_streams=3, live_channels=("a", "b"), viewers=40, egress_bps=123_456_789,
                        cache_bytes=7, cache_capacity_bytes=9, transcodes=2)
    pb = agent_convert.report_to_pb(5, 1_800_000_000_000_000, GpuState(GPU_OK, "", "550.54", (g,)),
                                    HostReading(1.5, 16, 3, 4), status)
    r = ctl_convert.report_from_pb(pb)
    assert (r.seq, r.sent_unix_us, r.gpu_status) == (5, 1_800_000_000_000_000, GpuStatus.OK)
    assert (r.node.cpu_load1, r.node.cpu_count, r.node.viewers, r.node.live_channels) == (1.5, 16, 40, ("a", "b"))
    (back,) = r.gpus
    assert back.encoder_capacity_h264_pct == 0  # zero is a value, not "absent"
    assert back.encoder_capacity_hevc_pct is None and back.ecc_corrected_volatile is None
    assert (back.ecc_uncorrected_volatile, back.xid_errors, back.clocks_event_reasons) == (2, 0, 0x60)
    assert back.unsupported == ("pcie",) and back.name == "NVIDIA L4" and back.power_w == 71.8


def test_node_info_round_trip() -> None:
    pb = agent_convert.node_info_to_pb(
        name="edge-1", hostname="h", site="ams", version="0.1.0", latitude=52.37, longitude=None,
        prefixes=("192.0.2.0/24",), public_url="http://e/", status=NodeStatus(http_port=8080, rtmp_port=1935),
        heartbeat_seconds=0.5, gpu=GpuState(NO_GPU, "no driver"))
    info = ctl_convert.node_info_from_pb(pb)
    assert (info.latitude, info.longitude, info.prefixes, info.http_port, info.heartbeat_seconds) == (
        52.37, None, ("192.0.2.0/24",), 8080, 0.5)
    assert info.gpu_models == () and info.driver_version == ""
