"""Encoder detection, settings and node capacity."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import pytest
from prometheus_client import REGISTRY

from edged.config import Config, TranscodeConfig
from edged.media.hub import StreamHub
from edged.media.transcode import encoders
from edged.media.transcode.encoders import NVENC, X264, EncoderChoice, GpuInfo, detect
from edged.media.transcode.supervisor import PipelineSupervisor


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class FakeNvml:
    """The pynvml calls detection makes, answering as NVML does on the named hardware."""

    NVML_ENCODER_QUERY_H264 = 0

    def __init__(self, devices: list[tuple[str, int | Exception]], driver: str = "550.54.15",
                 init_error: Exception | None = None) -> None:
        self.devices = devices
        self.driver = driver
        self.init_error = init_error
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.devices[h][0].encode()

    def nvmlDeviceGetEncoderCapacity(self, h: int, query: int) -> int:
        cap = self.devices[h][1]
        if isinstance(cap, Exception):
            raise cap
        return cap


def no_trial() -> str | None:
    raise AssertionError("NVENC must not be opened when NVML rules it out")


def test_no_driver_reports_libx264_with_the_reason() -> None:
    nvml = FakeNvml([], init_error=NVMLError("NVML Shared Library Not Found"))
    choice = detect("auto", nvml=nvml, trial=no_trial)
    assert choice.codec == X264 and choice.reason_code == encoders.R_NO_NVML
    assert choice.reason == "libx264: no NVIDIA driver/NVML (NVML Shared Library Not Found)"


def test_this_machine_without_a_gpu_reports_libx264_with_the_reason() -> None:
    choice = detect("auto")  # the real pynvml
    if choice.codec == NVENC or choice.reason_code != encoders.R_NO_NVML:
        pytest.skip(f"this machine has NVML: {choice.reason}")
    assert choice.codec == X264
    assert choice.reason.startswith("libx264: no NVIDIA driver/NVML (")


@pytest.mark.parametrize(("name", "cap"), [
    ("NVIDIA H100 80GB HBM3", NotSupported("Not Supported")),  # Hopper: NVDEC and NVML, no NVENC
    ("NVIDIA H200", 0),
])
def test_gpu_without_nvenc_reports_no_encoder_capacity(name: str, cap: int | Exception) -> None:
    nvml = FakeNvml([(name, cap)])
    choice = detect("auto", nvml=nvml, trial=no_trial)
    assert choice.codec == X264 and choice.reason_code == encoders.R_NO_CAPACITY
    assert "no encoder capacity" in choice.reason and name in choice.reason
    assert nvml.shutdown and choice.gpus[0].name == name


def test_gpu_with_nvenc_needs_a_trial_open() -> None:
    nvml = FakeNvml([("NVIDIA L4", 100), ("NVIDIA H100 80GB HBM3", NotSupported("Not Supported"))])
    ok = detect("auto", nvml=nvml, trial=lambda: None)
    assert ok.codec == NVENC and ok.reason_code == encoders.R_NVENC and "NVIDIA L4 100%" in ok.reason
    failed = detect("auto", nvml=nvml, trial=lambda: "OpenEncodeSessionEx failed: incompatible client key (21)")
    assert failed.codec == X264 and failed.reason_code == encoders.R_OPEN_FAILED
    assert "incompatible client key" in failed.reason


def test_no_gpu_and_configured_x264() -> None:
    assert detect("auto", nvml=FakeNvml([]), trial=no_trial).reason_code == encoders.R_NO_GPU
    choice = detect("x264", nvml=FakeNvml([], init_error=AssertionError("NVML must not be asked")))
    assert choice.codec == X264 and choice.reason_code == encoders.R_CONFIGURED


def test_choice_round_trips_through_json() -> None:
    c = EncoderChoice(NVENC, "h264_nvenc: ok", encoders.R_NVENC, "550", (GpuInfo(0, "NVIDIA L4", 100),))
    assert EncoderChoice.from_json(c.to_json()) == c


@pytest.mark.parametrize("codec", [NVENC, X264])
def test_encoder_options_exist_in_this_ffmpeg(codec: str) -> None:
    """The NVENC path cannot run here, but its option names and values are checked against the build."""
    ctx = av.CodecContext.create(codec, "w")
    known = {o.name: o for o in (*ctx.supported_options.generic, *ctx.supported_options.private)}
    for name, value in encoders.video_encoder_options(codec, 1500).items():
        assert name in known, name
        choices = {c.name for c in known[name].choices}
        if choices and not value.lstrip("-").isdigit():
            assert value in choices, (name, value, choices)
    opts = encoders.video_encoder_options(codec, 1500)
    assert opts["bf"] == "0" and opts["maxrate"] == "1500000" and opts["forced-idr"] == "1"
    if codec == NVENC:
        assert opts["rc"] == "cbr" and opts["rc-lookahead"] == "0" and opts["zerolatency"] == "1"
    else:
        assert opts["tune"] == "zerolatency" and opts["preset"] == "veryfast"


def test_libx264_keyframes_only_where_forced() -> None:
    """Scene cuts every 10 frames (libx264 would put keyframes at 30 and 80 on its own): only the
    forced ones come out as keyframes."""
    import random

    from av.video.frame import PictureType, VideoFrame

    enc = encoders.open_video_encoder(X264, 160, 96, 30, 300, Fraction(1, 1000))
    keys = []
    for i in range(90):
        f = VideoFrame(160, 96, "yuv420p")
        for plane in f.planes:
            noise = random.Random(i // 10 * 10 + plane.line_size)
            plane.update(bytes(noise.getrandbits(8) for _ in range(plane.buffer_size)))
        f.pts = i * 33
        f.pict_type = PictureType.I if i in (0, 45) else PictureType.NONE
        keys += [p.pts for p in enc.encode(f) if p.is_keyframe]
    keys += [p.pts for p in enc.encode(None) if p.is_keyframe]
    assert keys == [0, 45 * 33]


def test_capacity_estimates() -> None:
    x264 = EncoderChoice(X264, "", encoders.R_NO_NVML)
    assert encoders.estimate_capacity(x264, cores=2)[0] == 1
    assert encoders.estimate_capacity(x264, cores=8)[0] == 7
    l4 = EncoderChoice(NVENC, "", encoders.R_NVENC, gpus=(GpuInfo(0, "NVIDIA L4", 100),))
    assert encoders.estimate_capacity(l4, cores=16)[0] == encoders.NVENC_LADDERS_PER_GPU
    assert encoders.estimate_capacity(l4, cores=2)[0] == 2  # decode and scaling on 1 spare core


async def _decide(monkeypatch: pytest.MonkeyPatch, choice: EncoderChoice, cores: int,
                  **tc: Any) -> PipelineSupervisor:
    async def probe(self: PipelineSupervisor) -> EncoderChoice:
        return choice

    monkeypatch.setattr(PipelineSupervisor, "_probe", probe)
    monkeypatch.setattr(encoders, "cpu_count", lambda: cores)
    sup = PipelineSupervisor(Config(transcode=TranscodeConfig(**tc)), StreamHub(), "/nonexistent")
    await sup.start()
    assert sup._detecting is not None
    await sup._detecting
    await sup.stop()
    return sup


async def test_auto_turns_the_ladder_on_where_nvenc_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    x264 = EncoderChoice(X264, "libx264: no NVIDIA driver/NVML (x)", encoders.R_NO_NVML)
    cpu_only = await _decide(monkeypatch, x264, cores=16)
    assert not cpu_only.transcode_on and cpu_only.capacity == 0  # libx264 ladders are opt-in
    info = {"encoder": X264, "reason": encoders.R_NO_NVML}
    assert REGISTRY.get_sample_value("edged_transcode_encoder_info", info) == 1
    assert REGISTRY.get_sample_value("edged_transcode_capacity") == 0
    assert (await _decide(monkeypatch, x264, cores=16, enabled=True)).capacity == 15
    forced = await _decide(monkeypatch, x264, cores=2, enabled=True)
    assert forced.transcode_on and forced.capacity == 1
    nvenc = EncoderChoice(NVENC, "h264_nvenc: ok", encoders.R_NVENC, gpus=(GpuInfo(0, "NVIDIA L4", 100),))
    assert (await _decide(monkeypatch, nvenc, cores=2)).transcode_on
    # transcode.encoder = nvenc on a node without NVENC: passthrough, not a CPU ladder it was not sized for.
    assert not (await _decide(monkeypatch, x264, cores=16, encoder="nvenc", enabled=True)).transcode_on
    full = await _decide(monkeypatch, x264, cores=2, enabled=True, max_transcodes=1)
    assert await full._admit("a") and not await full._admit("b")
    full._release("a")
    assert await full._admit("b")
    assert REGISTRY.get_sample_value("edged_transcode_refused_total") >= 1


@pytest.mark.gpu
def test_nvenc_opens_where_nvml_reports_an_encoder() -> None:
    choice = detect("auto")
    if choice.codec != NVENC:
        pytest.skip(choice.reason)
    assert encoders.trial_open_nvenc() is None
