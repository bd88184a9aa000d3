"""Telemetry with the real NVML library: "no GPU" where no driver is installed, real figures on a GPU."""

from __future__ import annotations

import ctypes.util
import threading

import pytest

from edged.agent.telemetry import GPU_OK, NO_GPU, Telemetry, read_host


def nvml_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


HAVE_NVML = nvml_present()


@pytest.mark.skipif(HAVE_NVML, reason="an NVIDIA driver is installed here")
async def test_without_a_driver_the_node_reports_no_gpu() -> None:
    t = Telemetry(timeout=5)
    try:
        state = await t.sample()
        assert state.status == NO_GPU and state.gpus == ()
        assert "no NVIDIA driver" in state.error or "not installed" in state.error
        again = await t.sample()  # within NVML_RETRY: the cached verdict, no new library load
        assert again.status == NO_GPU
        assert t.last is again
    finally:
        await t.close()


async def test_nvml_runs_on_its_own_thread() -> None:
    t = Telemetry(timeout=5)
    seen: list[str] = []
    original = t._nvml.sample

    def spy():  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        return original()

    t._nvml.sample = spy  # type: ignore[method-assign]
    try:
        await t.sample()
    finally:
        await t.close()
    assert seen and seen[0].startswith("edged-nvml")


def test_host_figures_are_sane() -> None:
    h = read_host()
    assert h.cpu_count >= 1 and h.cpu_load1 >= 0
    assert 0 < h.memory_used_bytes < h.memory_total_bytes


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_NVML, reason="needs an NVIDIA GPU and driver (NVML)")
async def test_real_gpu_reports_sensible_values() -> None:
    t = Telemetry(timeout=10)
    try:
        state = await t.sample()
    finally:
        await t.close()
    assert state.status == GPU_OK, state.error
    assert state.driver_version
    for g in state.gpus:
        assert g.uuid.startswith(("GPU-", "MIG-")) and g.name
        assert 0 < g.memory_used_bytes <= g.memory_total_bytes
        assert 0 <= g.utilization_gpu_pct <= 100 and 0 <= g.encoder_utilization_pct <= 100
        assert 0 < g.temperature_c < 120
        assert g.power_w >= 0 and (g.power_limit_w == 0 or g.power_w < g.power_limit_w * 1.5)
        assert g.sm_clock_mhz > 0
        if g.encoder_capacity_h264_pct is not None:
            assert 0 <= g.encoder_capacity_h264_pct <= 100


def test_libnvidia_ml_lookup_matches_skip_logic() -> None:
    # where libnvidia-ml is not even on the loader path, NVML cannot be up
    if ctypes.util.find_library("nvidia-ml") is None:
        assert not HAVE_NVML
