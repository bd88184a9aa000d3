"""One GPU at one instant: the figures an edge samples from NVML and the controller keeps.

Units are in the field names, as in proto/edgenet/v1/common.proto. A field that is None was not
offered by the GPU (NVML answered NotSupported; its name is in `unsupported`), which is not the same
as a zero reading.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


class GpuStatus(enum.Enum):
    OK = "ok"
    NO_GPU = "no-gpu"  # no driver or no device: the node serves without a GPU
    NVML_ERROR = "nvml-error"  # a driver is there but NVML failed


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int = 0
    uuid: str = ""
    name: str = ""
    utilization_gpu_pct: int = 0
    utilization_memory_pct: int = 0
    encoder_utilization_pct: int = 0
    decoder_utilization_pct: int = 0
    encoder_sessions: int = 0
    encoder_average_fps: int = 0
    encoder_average_latency_us: int = 0
    encoder_capacity_h264_pct: int | None = None
    encoder_capacity_hevc_pct: int | None = None
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    temperature_c: int = 0
    power_w: float = 0.0
    power_limit_w: float = 0.0
    clocks_event_reasons: int = 0  # NVML bitmask (nvmlClocksEventReason*)
    sm_clock_mhz: int = 0
    memory_clock_mhz: int = 0
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    xid_errors: int | None = None
    last_xid: int | None = None
    pcie_replay_counter: int | None = None
    unsupported: tuple[str, ...] = ()


# Fields that may be absent (None here, an unset `optional` field on the wire).
GPU_OPTIONAL_FIELDS: tuple[str, ...] = (
    "encoder_capacity_h264_pct", "encoder_capacity_hevc_pct", "ecc_corrected_volatile", "ecc_uncorrected_volatile",
    "xid_errors", "last_xid", "pcie_replay_counter")
# Fields that are always present, in declaration order (everything but the optional ones and `unsupported`).
GPU_PLAIN_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(GpuSample) if f.name not in GPU_OPTIONAL_FIELDS and f.name != "unsupported")
