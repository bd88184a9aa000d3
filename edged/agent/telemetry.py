"""GPU telemetry from NVML and host figures, sampled off the event loop.

pynvml (nvidia-ml-py) is imported lazily, on the telemetry thread, the first time a sample is taken.
Every NVML call runs on that one thread (NVML handles and event sets are process state, and a hung
driver call then stalls only telemetry). A sample that takes longer than `timeout` is reported as an
NVML failure. Without a driver the node reports "no GPU" and keeps working; the driver is looked for
again every NVML_RETRY seconds, so installing one needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edged.common.gpu import GpuSample, GpuStatus

log = logging.getLogger("edged.agent.telemetry")

NVML_RETRY = 60.0  # s between attempts to initialise NVML when no driver was found
GPU_OK, NO_GPU, NVML_ERROR = GpuStatus.OK.value, GpuStatus.NO_GPU.value, GpuStatus.NVML_ERROR.value


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_load1: float = 0.0
    cpu_count: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0


@dataclass(frozen=True, slots=True)
class GpuState:
    status: str = NO_GPU  # GPU_OK | NO_GPU | NVML_ERROR
    error: str = ""  # why there is no GPU, or what failed
    driver_version: str = ""
    gpus: tuple[GpuSample, ...] = ()


def read_host() -> HostReading:
    """Load average and memory from procfs (memory-backed, so cheap enough for the loop)."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    total = avail = 0
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    return HostReading(cpu_load1=load1, cpu_count=os.cpu_count() or 0, memory_used_bytes=max(0, total - avail),
                       memory_total_bytes=total)


class _Nvml:
    """NVML state; lives on the telemetry thread only."""

    def __init__(self) -> None:
        self.mod: Any = None
        self.ready = False
        self.next_try = 0.0
        self.no_gpu_reason = ""
        self.driver = ""
        self.events: Any = None
        self.xids: dict[str, list[int]] = {}  # uuid -> [count, last xid]

    def _no_driver_errors(self) -> tuple[type[BaseException], ...]:
        n = self.mod
        return tuple(getattr(n, name) for name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded",
                                                   "NVMLError_NoPermission") if hasattr(n, name))

    def init(self) -> GpuState | None:
        """None when NVML is up; otherwise the state to report."""
        if self.ready:
            return None
        now = time.monotonic()
        if now < self.next_try:
            return GpuState(NO_GPU, self.no_gpu_reason)
        self.next_try = now + NVML_RETRY
        try:
            import pynvml
        except ImportError:
            self.no_gpu_reason = "nvidia-ml-py is not installed"
            return GpuState(NO_GPU, self.no_gpu_reason)
        self.mod = pynvml
        try:
            pynvml.nvmlInit()
        except self._no_driver_errors() as exc:
            self.no_gpu_reason = f"no NVIDIA driver ({exc})"
            return GpuState(NO_GPU, self.no_gpu_reason)
        except pynvml.NVMLError as exc:
            return GpuState(NVML_ERROR, f"nvmlInit: {exc}")
        self.ready = True
        try:
            self.driver = str(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            self.driver = ""
        self._register_xid_events()
        return None

    def _register_xid_events(self) -> None:
        n = self.mod
        try:
            self.events = n.nvmlEventSetCreate()
            for i in range(n.nvmlDeviceGetCount()):
                h = n.nvmlDeviceGetHandleByIndex(i)
                try:
                    n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, self.events)
                    self.xids[str(n.nvmlDeviceGetUUID(h))] = [0, -1]
                except n.NVMLError:
                    pass  # not supported on this device (e.g. some consumer GPUs): xid_errors stays unset
        except n.NVMLError as exc:
            log.info("XID events unavailable: %s", exc)
            self.events = None

    def _drain_xid_events(self) -> None:
        n = self.mod
        if self.events is None:
            return
        for _ in range(1000):  # bounded: a storm of events must not hold the sample forever
            try:
                ev = n.nvmlEventSetWait_v2(self.events, 0)
            except n.NVMLError_Timeout:
                return
            except n.NVMLError:
                return
            try:
                uuid = str(n.nvmlDeviceGetUUID(ev.device))
            except n.NVMLError:
                continue
            slot = self.xids.setdefault(uuid, [0, -1])
            slot[0] += 1
            slot[1] = int(ev.eventData)

    def shutdown(self) -> None:
        if self.ready:
            with contextlib.suppress(Exception):
                if self.events is not None:
                    self.mod.nvmlEventSetFree(self.events)
                self.mod.nvmlShutdown()
            self.ready = False

    def sample(self) -> GpuState:
        state = self.init()
        if state is not None:
            return state
        n = self.mod
        try:
            count = n.nvmlDeviceGetCount()
            self._drain_xid_events()
            gpus = tuple(self._device(i) for i in range(count))
        except n.NVMLError as exc:
            return GpuState(NVML_ERROR, f"{type(exc).__name__}: {exc}", self.driver)
        if not gpus:
            return GpuState(NO_GPU, "the NVIDIA driver sees no GPU", self.driver)
        return GpuState(GPU_OK, "", self.driver, gpus)

    def _device(self, index: int) -> GpuSample:
        n = self.mod
        h = n.nvmlDeviceGetHandleByIndex(index)
        unsupported: list[str] = []

        def opt(label: str, fn: Any, *args: Any) -> Any:
            """Optional query: NotSupported means "this GPU does not offer it"; other errors propagate."""
            try:
                return fn(h, *args)
            except n.NVMLError_NotSupported:
                unsupported.append(label)
                return None

        uuid = str(n.nvmlDeviceGetUUID(h))
        util = n.nvmlDeviceGetUtilizationRates(h)
        mem = n.nvmlDeviceGetMemoryInfo(h)
        enc = opt("encoder_utilization", n.nvmlDeviceGetEncoderUtilization)
        dec = opt("decoder_utilization", n.nvmlDeviceGetDecoderUtilization)
        stats = opt("encoder_stats", n.nvmlDeviceGetEncoderStats)
        cap264 = opt("encoder_capacity_h264", n.nvmlDeviceGetEncoderCapacity, n.NVML_ENCODER_QUERY_H264)
        cap265 = opt("encoder_capacity_hevc", n.nvmlDeviceGetEncoderCapacity, n.NVML_ENCODER_QUERY_HEVC)
        power = opt("power_usage", n.nvmlDeviceGetPowerUsage)
        limit = opt("power_limit", n.nvmlDeviceGetEnforcedPowerLimit)
        reasons_fn = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            n.nvmlDeviceGetCurrentClocksThrottleReasons
        reasons = opt("clocks_event_reasons", reasons_fn)
        sm = opt("sm_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)
        memclk = opt("memory_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_MEM)
        ecc_c = opt("ecc", n.nvmlDeviceGetTotalEccErrors, n.NVML_MEMORY_ERROR_TYPE_CORRECTED, n.NVML_VOLATILE_ECC)
        ecc_u = None
        if ecc_c is not None:
            ecc_u = opt("ecc", n.nvmlDeviceGetTotalEccErrors, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                        n.NVML_VOLATILE_ECC)
        replay = opt("pcie_replay_counter", n.nvmlDeviceGetPcieReplayCounter)
        xid = self.xids.get(uuid)
        return GpuSample(
            index=index, uuid=uuid, name=str(n.nvmlDeviceGetName(h)),
            utilization_gpu_pct=int(util.gpu), utilization_memory_pct=int(util.memory),
            encoder_utilization_pct=int(enc[0]) if enc else 0, decoder_utilization_pct=int(dec[0]) if dec else 0,
            encoder_sessions=int(stats[0]) if stats else 0, encoder_average_fps=int(stats[1]) if stats else 0,
            encoder_average_latency_us=int(stats[2]) if stats else 0,
            encoder_capacity_h264_pct=None if cap264 is None else int(cap264),
            encoder_capacity_hevc_pct=None if cap265 is None else int(cap265),
            memory_used_bytes=int(mem.used), memory_total_bytes=int(mem.total),
            temperature_c=int(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            power_w=(power or 0) / 1000, power_limit_w=(limit or 0) / 1000,
            clocks_event_reasons=int(reasons or 0), sm_clock_mhz=int(sm or 0), memory_clock_mhz=int(memclk or 0),
            ecc_corrected_volatile=None if ecc_c is None else int(ecc_c),
            ecc_uncorrected_volatile=None if ecc_u is None else int(ecc_u),
            xid_errors=xid[0] if xid else None, last_xid=xid[1] if xid and xid[1] >= 0 else None,
            pcie_replay_counter=None if replay is None else int(replay),
            unsupported=tuple(dict.fromkeys(unsupported)),
        )


class Telemetry:
    """`await sample()` → GpuState, with every NVML call on one dedicated thread."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout  # s a sample may take before it counts as an NVML failure
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edged-nvml")
        self._nvml = _Nvml()
        self._inflight: asyncio.Future[GpuState] | None = None
        self.last: GpuState | None = None

    async def sample(self) -> GpuState:
        loop = asyncio.get_running_loop()
        if self._inflight is None or self._inflight.done():
            self._inflight = loop.run_in_executor(self._executor, self._nvml.sample)
        try:
            state = await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout)
        except TimeoutError:
            # the call stays pending on the thread; the next sample waits for it rather than queueing more
            state = GpuState(NVML_ERROR, f"NVML did not answer within {self.timeout:g} s",
                             self.last.driver_version if self.last else "")
        except Exception as exc:  # a bug or an unexpected library error: report it, keep the node up
            log.exception("GPU telemetry failed")
            state = GpuState(NVML_ERROR, f"telemetry failed: {exc}")
        self.last = state
        return state

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._inflight is not None and not self._inflight.done():
            self._executor.shutdown(wait=False, cancel_futures=True)  # a hung driver must not hang shutdown
            return
        await loop.run_in_executor(self._executor, self._nvml.shutdown)
        self._executor.shutdown(wait=False)
