"""Which H.264 encoder this node uses, why, how many ladders it can take, and how to open it.

Detection (blocking: the daemon runs it in a child process, `python -m edged.media.transcode.encoders`):
1. NVML (pynvml, imported lazily) must load, see an NVIDIA GPU, and report H.264 encoder capacity
   on it. Hopper data-centre parts (H100, H200) have NVML and NVDEC but no NVENC: NVML answers
   "not supported" (or 0 %) there, which reads as "no encoder capacity".
2. A trial open of h264_nvenc with the production settings must then encode one frame.
Otherwise libx264 (veryfast, zerolatency). The choice carries a sentence for the log and a short
reason code for the `edged_transcode_encoder_info` metric (bounded label values).

Encoder settings are low latency on both: no B-frames, no lookahead, no scene-cut keyframes,
rate capped at the rung's bitrate with a one-second buffer (constrained VBR; CBR on NVENC), and
keyframes only where the transcoder forces them (segment boundaries), as IDR.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

log = logging.getLogger(__name__)

NVENC = "h264_nvenc"
X264 = "libx264"
CODECS = {"nvenc": NVENC, "x264": X264}

# Reason codes (metric label values): a fixed set.
R_NVENC = "nvenc_ok"
R_CONFIGURED = "configured"
R_NO_NVML = "no_nvml"
R_NO_GPU = "no_gpu"
R_NO_CAPACITY = "no_encoder_capacity"
R_OPEN_FAILED = "nvenc_open_failed"
R_DISABLED = "disabled"

GOP_FRAMES = 1 << 20  # frames: "never on its own"; keyframes come only from forced IDRs
VBV_SECONDS = 1.0  # rate-control buffer, in seconds of the rung's bitrate

# Capacity model (a starting point; `edged bench transcode` measures the real box).
# MEDIA-FACTS: a 1080p30 four-rung libx264 veryfast ladder costs about one core; one core is kept for
# ingest, serving and passthrough. NVENC moves the encodes to the GPU; decode and scaling stay on
# the CPU at about a third of a core per 1080p30 ladder, and one NVENC engine handles roughly eight
# such ladders at full capacity.
X264_CORES_PER_LADDER = 1.0
NVENC_CPU_PER_LADDER = 0.35
NVENC_LADDERS_PER_GPU = 8
RESERVED_CORES = 1.0


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    encoder_capacity_pct: int | None  # NVML H.264 encoder capacity; None = not supported
    error: str = ""


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    codec: str  # NVENC or X264
    reason: str  # a sentence for the log
    reason_code: str  # one of the R_* codes, for the metric
    driver: str = ""
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        return "nvenc" if self.codec == NVENC else "x264"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EncoderChoice:
        d = json.loads(text)
        d["gpus"] = tuple(GpuInfo(**g) for g in d.get("gpus", ()))
        return cls(**d)


class NvmlUnavailable(Exception):
    """NVML could not be used; the message says why."""


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def query_nvml(nvml: Any = None) -> tuple[str, tuple[GpuInfo, ...]]:
    """(driver version, GPUs with their H.264 encoder capacity). Raises NvmlUnavailable."""
    if nvml is None:
        try:
            import pynvml  # lazily: nodes without a GPU never load it unless asked
        except ImportError as exc:
            raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from exc
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission, ...
        raise NvmlUnavailable(f"no NVIDIA driver/NVML ({exc})") from exc
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(nvml.nvmlDeviceGetName(handle))
            try:
                cap: int | None = int(nvml.nvmlDeviceGetEncoderCapacity(handle, nvml.NVML_ENCODER_QUERY_H264))
                err = ""
            except Exception as exc:  # NVMLError_NotSupported on GPUs without NVENC
                cap, err = None, str(exc)
            gpus.append(GpuInfo(index=i, name=name, encoder_capacity_pct=cap, error=err))
        return driver, tuple(gpus)
    except Exception as exc:
        raise NvmlUnavailable(f"NVML query failed ({exc})") from exc
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: S110 - shutting down a library that half-initialised
            pass


def video_encoder_options(codec: str, bitrate_kbps: int) -> dict[str, str]:
    """Private and generic AVOptions for a rung encoder (names are checked by a unit test)."""
    rate = bitrate_kbps * 1000
    vbv = str(int(rate * VBV_SECONDS))
    common = {"maxrate": str(rate), "bufsize": vbv, "bf": "0", "forced-idr": "1"}
    if codec == NVENC:
        # p4 + ll: low-latency tuning; CBR; no lookahead, no scene cut, no delayed output.
        return {**common, "preset": "p4", "tune": "ll", "rc": "cbr", "rc-lookahead": "0", "no-scenecut": "1",
                "zerolatency": "1", "delay": "0", "b_ref_mode": "disabled", "profile": "high"}
    # veryfast + zerolatency: no B-frames, no lookahead, sliced threads, no frame delay.
    return {**common, "preset": "veryfast", "tune": "zerolatency", "sc_threshold": "0"}


def open_video_encoder(codec: str, width: int, height: int, fps: float, bitrate_kbps: int,
                       time_base: Fraction) -> Any:
    """An opened PyAV encoder context for one rung. Frames go in with pts in `time_base`."""
    import av

    ctx: Any = av.CodecContext.create(codec, "w")  # a VideoCodecContext (PyAV types create() generically)
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = time_base
    ctx.framerate = Fraction(fps).limit_denominator(1001)
    ctx.bit_rate = bitrate_kbps * 1000
    ctx.gop_size = GOP_FRAMES
    ctx.max_b_frames = 0
    ctx.thread_count = 0  # libx264: auto (sliced threads under zerolatency)
    ctx.options = video_encoder_options(codec, bitrate_kbps)
    ctx.open()
    return ctx


def trial_open_nvenc() -> str | None:
    """Encode one small frame with h264_nvenc; None on success, else the error."""
    try:
        from av.video.frame import VideoFrame

        ctx = open_video_encoder(NVENC, 256, 144, 30, 500, Fraction(1, 1000))
        frame = VideoFrame(256, 144, "yuv420p")
        frame.pts = 0
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
        if not packets:
            return "h264_nvenc produced no output"
        return None
    except Exception as exc:  # av.error.*, missing libcuda, session limit ...
        return f"{type(exc).__name__}: {exc}"


def detect(preference: str = "auto", *, nvml: Any = None, trial: Any = trial_open_nvenc) -> EncoderChoice:
    """The encoder for `preference` (auto | nvenc | x264). Blocking (NVML, a trial encode)."""
    if preference == "x264":
        return EncoderChoice(X264, "libx264 chosen by configuration (transcode.encoder = x264)", R_CONFIGURED)
    try:
        driver, gpus = query_nvml(nvml)
    except NvmlUnavailable as exc:
        return EncoderChoice(X264, f"libx264: {exc}", R_NO_NVML)
    if not gpus:
        return EncoderChoice(X264, "libx264: NVML found no NVIDIA GPU", R_NO_GPU, driver)
    usable = [g for g in gpus if g.encoder_capacity_pct]
    if not usable:
        names = ", ".join(sorted({g.name for g in gpus}))
        return EncoderChoice(X264, f"libx264: no encoder capacity on {names} (no NVENC; NVDEC/NVML only)",
                             R_NO_CAPACITY, driver, gpus)
    err = trial()
    if err is not None:
        return EncoderChoice(X264, f"libx264: h264_nvenc trial open failed on {usable[0].name}: {err}",
                             R_OPEN_FAILED, driver, gpus)
    caps = ", ".join(f"{g.name} {g.encoder_capacity_pct}%" for g in usable)
    return EncoderChoice(NVENC, f"h264_nvenc: NVIDIA GPU with encoder capacity ({caps}; driver {driver})",
                         R_NVENC, driver, gpus)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def estimate_capacity(choice: EncoderChoice, cores: int | None = None) -> tuple[int, str]:
    """(concurrent 1080p30 ladders this node can take, how that was worked out)."""
    cores = cores or cpu_count()
    spare = max(0.0, cores - RESERVED_CORES)
    if choice.codec == NVENC:
        gpu = sum(NVENC_LADDERS_PER_GPU * (g.encoder_capacity_pct or 0) / 100 for g in choice.gpus)
        cpu = spare / NVENC_CPU_PER_LADDER
        n = max(1, int(min(gpu, cpu)))
        return n, f"NVENC: {gpu:.0f} ladders by encoder capacity, {cpu:.0f} by {cores} cores for decode/scale"
    n = max(1, int(spare / X264_CORES_PER_LADDER))
    return n, f"libx264: about {X264_CORES_PER_LADDER:g} core per 1080p30 ladder, {cores} cores less {RESERVED_CORES:g}"


def main(argv: list[str] | None = None) -> int:
    """Print the detected EncoderChoice as one JSON line (the daemon's probe)."""
    ap = argparse.ArgumentParser(prog="python -m edged.media.transcode.encoders")
    ap.add_argument("--encoder", choices=("auto", "nvenc", "x264"), default="auto")
    args = ap.parse_args(argv)
    choice = detect(args.encoder)
    sys.stdout.write(choice.to_json() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
