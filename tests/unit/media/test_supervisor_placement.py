"""The transcode supervisor obeys the origin controller's placement (edged run --origin)."""

from __future__ import annotations

from typing import Any

import pytest

from edged.config import Config, TranscodeConfig
from edged.media.hub import StreamHub
from edged.media.transcode import encoders
from edged.media.transcode.encoders import NVENC, EncoderChoice, GpuInfo
from edged.media.transcode.supervisor import Admission, PipelineSupervisor

L4 = EncoderChoice(NVENC, "h264_nvenc: ok", encoders.R_NVENC, gpus=(GpuInfo(0, "NVIDIA L4", 100),))


async def supervisor(monkeypatch: pytest.MonkeyPatch, orders: dict[str, tuple[str, str]],
                     **tc: Any) -> PipelineSupervisor:
    async def probe(self: PipelineSupervisor) -> EncoderChoice:
        return L4

    monkeypatch.setattr(PipelineSupervisor, "_probe", probe)
    monkeypatch.setattr(encoders, "cpu_count", lambda: 16)
    sup = PipelineSupervisor(Config(transcode=TranscodeConfig(**tc)), StreamHub(), "/nonexistent",
                             placement=lambda channel: orders.pop(channel, None))
    await sup.start()
    assert sup._detecting is not None
    await sup._detecting
    return sup


async def test_a_passthrough_placement_is_obeyed_on_a_node_that_could_transcode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    orders = {"news": ("passthrough", "passthrough only on nd-1: GPUs throttling"),
              "sports": ("transcode", "ingest node nd-1: GPU 0 encoder 12% busy, 1 sessions")}
    sup = await supervisor(monkeypatch, orders)
    try:
        assert sup.transcode_on and sup.capacity > 0  # it could: the controller said no
        assert not await sup._admit("news")
        assert sup.admissions["news"] == Admission(False, "passthrough only on nd-1: GPUs throttling",
                                                   by_controller=True)
        assert sup.transcodes() == 0
        assert await sup._admit("sports")
        assert sup.admissions["sports"] == Admission(
            True, "ingest node nd-1: GPU 0 encoder 12% busy, 1 sessions", by_controller=True)
        # no order (the controller could not be asked): the node decides, and says so
        assert await sup._admit("weather")
        assert not sup.admissions["weather"].by_controller
        assert sup.admissions["weather"].reason.startswith("nvenc: ladder 2 of")
    finally:
        await sup.stop()


async def test_a_transcode_placement_still_needs_local_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    orders = {"a": ("transcode", "ingest node"), "b": ("transcode", "ingest node (a report behind)")}
    sup = await supervisor(monkeypatch, orders, max_transcodes=1)
    try:
        assert await sup._admit("a")
        assert not await sup._admit("b")
        assert sup.admissions["b"] == Admission(False, "node at capacity (1 of 1 ladders)")
    finally:
        await sup.stop()
