"""`edged bench transcode INPUT`: the production transcoder on a file, as fast as it can go.

Reads INPUT into the packets an ingest would produce (Annex B video with in-band parameter sets,
raw AAC), then times the worker's own path: source segmenter, decode once, cascaded scaling, one
encoder thread per rung, a segmenter per rendition (segments are muxed and counted, not stored).
Prints frames per second, x-realtime and the encoder used. A ladder that runs at N x realtime
here means about N such live streams fit on this box, since the bench uses every core the way N
live transcoders would.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from edged.media.packet import CodecConfig, MediaPacket

BACKLOG_AHEAD = 2.0  # s of media queued ahead of the transcoder (bounds memory on long files)
MAX_SECONDS = 600.0  # s of the input read at most


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="a media file with H.264/HEVC video (FLV, MP4, MPEG-TS, ...)")
    p.add_argument("--ladder", metavar="SPEC", default="default",
                   help="rungs: [NAME=]WxH[@FPS]:KBPS,... or 'default' (the configured default ladder)")
    p.add_argument("--encoder", choices=("auto", "nvenc", "x264"), default="auto",
                   help="auto: NVENC where NVML and a trial open say so, else libx264")
    p.add_argument("--segment-seconds", type=float, default=2.0, metavar="S", help="segment length (default 2)")
    p.add_argument("--seconds", type=float, default=MAX_SECONDS, metavar="S", help="use at most S s of INPUT")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def read_packets(path: str, max_seconds: float = MAX_SECONDS) -> tuple[list[MediaPacket], dict[str, Any]]:
    """INPUT as normal-form MediaPackets (edged.media.packet), and facts about its video."""
    import av

    from edged.protocols import h264

    packets: list[MediaPacket] = []
    with av.open(path) as inp:
        if not inp.streams.video:
            raise ValueError(f"{path}: no video stream")
        vs = inp.streams.video[0]
        vcodec = vs.codec_context.name
        if vcodec not in ("h264", "hevc"):
            raise ValueError(f"{path}: video is {vcodec}; the transcoder takes H.264 or HEVC (what ingest accepts)")
        vextra = vs.codec_context.extradata or b""
        avcc = vextra[:1] == b"\x01"
        bsf = av.BitStreamFilterContext(f"{vcodec}_mp4toannexb", vs) if avcc else None
        aus = inp.streams.audio[0] if inp.streams.audio else None
        streams = [vs] + ([aus] if aus is not None else [])
        vconfig: CodecConfig | None = None
        aconfig: CodecConfig | None = None
        if aus is not None:
            a = aus.codec_context
            raw_aac = a.name == "aac" and bool(a.extradata)
            if raw_aac or a.name != "aac":
                from edged.protocols.aac import parse_asc

                cs = parse_asc(bytes(a.extradata or b"")).codec_string if raw_aac else ""
                aconfig = CodecConfig(kind="audio", codec=a.name, codec_string=cs,
                                      extradata=bytes(a.extradata or b""), sample_rate=a.sample_rate,
                                      channels=a.channels)
        first_pts: float | None = None
        for pkt in inp.demux(streams):
            if pkt.dts is None or pkt.size == 0:
                continue
            if pkt.stream is vs:
                for p in (bsf.filter(pkt) if bsf is not None else [pkt]):
                    if p.dts is None:
                        continue
                    data = bytes(p)
                    if vconfig is None:
                        if not p.is_keyframe:
                            continue
                        cs = "avc1.640028" if vcodec == "h264" else "hvc1.1.6.L120.90"
                        sps = next((n for n in h264.split_annexb(data) if vcodec == "h264"
                                    and h264.avc_nal_type(n) == h264.AVC_NAL_SPS), None)
                        if sps is not None:
                            cs = h264.avc_codec_string(h264.parse_avc_sps(sps))
                        vconfig = CodecConfig(kind="video", codec=vcodec, codec_string=cs,
                                              width=vs.codec_context.width, height=vs.codec_context.height)
                    vpts = p.pts if p.pts is not None else p.dts
                    t = float(vpts * p.time_base)
                    first_pts = t if first_pts is None else first_pts
                    if t - first_pts >= max_seconds:
                        break
                    packets.append(MediaPacket(kind="video", pts=vpts,
                                               dts=p.dts, time_base=p.time_base, keyframe=bool(p.is_keyframe),
                                               data=data, config=vconfig))
                else:
                    continue
                break
            elif aconfig is not None and vconfig is not None:
                packets.append(MediaPacket(kind="audio", pts=pkt.pts if pkt.pts is not None else pkt.dts,
                                           dts=pkt.dts, time_base=pkt.time_base, keyframe=True,
                                           data=bytes(pkt), config=aconfig))
    video = [p for p in packets if p.kind == "video"]
    if not video:
        raise ValueError(f"{path}: no decodable video")
    pts = sorted(p.pts_seconds for p in video)
    step = (pts[-1] - pts[0]) / max(1, len(pts) - 1)
    facts = {"width": vconfig.width if vconfig else 0, "height": vconfig.height if vconfig else 0,
             "codec": vcodec, "frames": len(video), "seconds": round(pts[-1] - pts[0] + step, 3),
             "audio": aconfig.codec if aconfig else None}
    return packets, facts


def bench(packets: list[MediaPacket], ladder: tuple[Any, ...], codec: str, segment_seconds: float,
          hw_decode: bool = False) -> dict[str, Any]:
    """Run the production renditions path over `packets`; wall and CPU seconds, segments per rendition."""
    from edged.media.transcode.renditions import Renditions

    counts: dict[str, int] = {}
    events: list[dict[str, Any]] = []

    def on_segment(seg: Any) -> None:
        counts[seg.rendition] = counts.get(seg.rendition, 0) + 1

    r = Renditions(channel="bench", segment_seconds=segment_seconds, max_segment_seconds=max(12.0, segment_seconds),
                   next_seq=0, disc_seq=0, discontinuity=False, ladder=ladder, codec=codec,
                   on_segment=on_segment, on_event=events.append, close_timeout=3600.0, hw_decode=hw_decode)
    cpu0, t0 = _cpu(), time.perf_counter()
    for pkt in packets:
        r.push(pkt)
        while r.backlog() > BACKLOG_AHEAD:
            time.sleep(0.002)
            r.tick()
    r.finish()
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    ladder_event = next((e for e in events if e.get("event") == "ladder"), {})
    return {"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "segments": counts,
            "renditions": ladder_event.get("renditions", [])}


def run(args: argparse.Namespace) -> int:
    from edged.config import DEFAULT_LADDER
    from edged.media.transcode import encoders
    from edged.media.transcode.ladder import parse_ladder, select

    try:
        ladder = parse_ladder(args.ladder) if args.ladder != "default" else DEFAULT_LADDER
    except ValueError as exc:
        print(f"edged: --ladder: {exc}", file=sys.stderr)
        return 2
    if not Path(args.input).exists():
        print(f"edged: no such file: {args.input}", file=sys.stderr)
        return 2
    choice = encoders.detect(args.encoder)
    if args.encoder == "nvenc" and choice.codec != encoders.NVENC:
        print(f"edged: NVENC is not usable here: {choice.reason}", file=sys.stderr)
        return 1
    try:
        packets, facts = read_packets(args.input, args.seconds)
    except (ValueError, OSError) as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 1
    result = bench(packets, ladder, choice.codec, args.segment_seconds, hw_decode=bool(choice.gpus))
    fps_in = facts["frames"] / facts["seconds"] if facts["seconds"] else 0.0
    chosen = select(ladder, facts["width"], facts["height"], fps_in)
    wall = result["wall_seconds"]
    out = {
        "input": args.input, "source": facts, "encoder": choice.codec, "encoder_reason": choice.reason,
        "renditions": [f"{r.name} {r.width}x{r.height}@{r.fps:g} {r.bitrate_kbps}k" for r in chosen],
        "fps": round(facts["frames"] / wall, 2), "x_realtime": round(facts["seconds"] / wall, 3),
        "cpu_percent": round(100 * result["cpu_seconds"] / wall), "cores": encoders.cpu_count(), **result,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"edged bench transcode: {args.input}")
    print(f"  source     {facts['width']}x{facts['height']} {facts['codec']} @ {fps_in:.2f} fps, "
          f"{facts['seconds']:.1f} s, {facts['frames']} frames, audio {facts['audio'] or 'none'}")
    print(f"  encoder    {choice.codec} ({choice.reason})")
    print(f"  ladder     source + {', '.join(out['renditions']) or 'nothing (no rung fits below the source)'}")
    print(f"  result     {facts['frames']} frames in {wall:.2f} s: {out['fps']:.1f} fps, "
          f"{out['x_realtime']:.2f}x realtime, CPU {out['cpu_percent']}% of {out['cores']} cores")
    print(f"  sizing     about {int(out['x_realtime'])} live stream(s) like this one on this box")
    return 0
