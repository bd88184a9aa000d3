"""ABR ladder throughput: `edged bench transcode` against the ffmpeg CLI, same input, same run.

Three ways to turn one clip into the same ladder (same rungs as edged picks for the clip, libx264
veryfast + zerolatency, same bitrates and 1 s VBV, no B-frames, keyframes every 2 s, bicubic
scaling, AAC copied into every rendition, 2 s MPEG-TS segments):
  edged          `edged bench transcode` (decode once, cascaded scaling, one encode thread per rung)
  ffmpeg 1-proc  one ffmpeg process: decode once, split, scale, encode (Debian's ffmpeg CLI)
  ffmpeg N-proc  one ffmpeg process per rendition, all at once, each decoding the clip again
                 (what simple shell scripts do)
Each is timed by wall clock from process start to exit (edged's Python start-up included); the best
of --repeat runs counts. Prints frames per second, x-realtime, CPU seconds and the ratios.

    .venv/bin/python bench/transcode_ladder.py [--size 1920x1080] [--rate 30] [--seconds 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.config import DEFAULT_LADDER  # noqa: E402
from edged.media.transcode.ladder import Rendition, format_ladder, parse_ladder, select  # noqa: E402

CACHE = Path("/tmp/edged-bench")
SEGMENT = 2  # s


def clip_for(size: str, rate: int, seconds: int) -> Path:
    """A test-pattern clip as a broadcaster would send it (6 Mbit/s H.264, 2 s GOP, AAC), made once."""
    CACHE.mkdir(exist_ok=True)
    out = CACHE / f"ladder-{size}-{rate}-{seconds}s.flv"
    if not out.exists():
        print(f"making {out} ...", flush=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "6M",
                        "-g", str(rate * SEGMENT), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                        "-f", "flv", str(out)], check=True)
    return out


def x264_args(r: Rendition) -> list[str]:
    k = f"{r.bitrate_kbps}k"
    return ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", k, "-maxrate", k,
            "-bufsize", k, "-bf", "0", "-g", "100000", "-sc_threshold", "0",
            "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT})"]


def hls_args(d: Path, name: str) -> list[str]:
    return ["-c:a", "copy", "-f", "hls", "-hls_time", str(SEGMENT), "-hls_list_size", "0",
            "-hls_segment_filename", str(d / f"{name}_%d.ts"), str(d / f"{name}.m3u8")]


def vfilter(r: Rendition, src_fps: float) -> str:
    f = f"scale={r.width}:{r.height}"
    return f + (f",fps={src_fps / r.decimation:g}" if r.decimation > 1 else "")


def timed(cmds: list[list[str]]) -> tuple[float, float]:
    """(wall s, CPU s) for running `cmds` at the same time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    for p, c in zip(procs, cmds, strict=True):
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(c)}\n{err.decode()[-2000:]}")
        p.stdout_text = out.decode()  # type: ignore[attr-defined]
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    timed.last = procs  # type: ignore[attr-defined]
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--rate", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--ladder", default="default", help="edged --ladder syntax; default: the built-in ladder")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    ladder = parse_ladder(args.ladder) if args.ladder != "default" else DEFAULT_LADDER
    rungs = select(ladder, w, h, args.rate)
    if not rungs:
        raise SystemExit("no rung of that ladder fits below the source")
    clip = clip_for(args.size, args.rate, args.seconds)
    frames = args.seconds * args.rate
    print(f"clip: {clip.name} ({args.size}@{args.rate}, {args.seconds} s, {frames} frames)")
    print("ladder: " + ", ".join(f"{r.name} {r.width}x{r.height}@{r.fps:g} {r.bitrate_kbps}k" for r in rungs))

    edged = [sys.executable, "-m", "edged", "bench", "transcode", str(clip), "--encoder", "x264",
             "--ladder", format_ladder(ladder), "--json"]
    best: dict[str, tuple[float, float]] = {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            split = f"[0:v]split={len(rungs)}" + "".join(f"[s{j}]" for j in range(len(rungs)))
            graph = ";".join([split] + [f"[s{j}]{vfilter(r, args.rate)}[v{j}]" for j, r in enumerate(rungs)])
            one = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-filter_complex", graph]
            for j, r in enumerate(rungs):
                one += ["-map", f"[v{j}]", "-map", "0:a", *x264_args(r), *hls_args(d, f"one-{r.name}")]
            per = [["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-vf",
                    vfilter(r, args.rate), "-map", "0:v", "-map", "0:a", *x264_args(r), *hls_args(d, f"per-{r.name}")]
                   for r in rungs]
            runs = {"edged": [edged], "ffmpeg 1-proc": [one], "ffmpeg N-proc": per}
            line = []
            for name, cmds in runs.items():
                wall, cpu = timed(cmds)
                if name == "edged":
                    report = json.loads(timed.last[0].stdout_text)  # type: ignore[attr-defined]
                    assert report["encoder"] == "libx264" and report["source"]["frames"] == frames, report
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
                line.append(f"{name} {frames / wall:.1f} fps")
            print(f"run {i + 1}: " + ", ".join(line), flush=True)

    print()
    print(f"{'':16}{'fps':>8}{'x-realtime':>12}{'CPU s':>8}{'wall s':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:16}{frames / wall:8.1f}{args.seconds / wall:12.2f}{cpu:8.1f}{wall:8.2f}")
    ours = frames / best["edged"][0]
    one = frames / best["ffmpeg 1-proc"][0]
    per = frames / best["ffmpeg N-proc"][0]
    print(f"\nedged / ffmpeg 1-proc (decode once):        {ours / one:.2f}x  (goal >= 0.95)")
    print(f"edged / ffmpeg N-proc (one per rendition):  {ours / per:.2f}x")


if __name__ == "__main__":
    main()
