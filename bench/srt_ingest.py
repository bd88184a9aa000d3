"""SRT ingest cost: CPU of the edged process per SRT publisher (receive + TS demux + normalize + publish).

Debian's ffmpeg re-sends a 720p30 ~3 Mb/s H.264/AAC MPEG-TS clip in real time (`-re -c copy`) to an
in-process SrtServer; a reader drains each stream as the pipeline would. The publishers are child
processes, so only the server's work is counted (getrusage(RUSAGE_SELF) over a window after start-up).

Reference, same run, same publisher: `srt-live-transmit srt://:PORT file://con > /dev/null`, libsrt's
own receiver with no demux, its CPU read from /proc over the same window.

    .venv/bin/python bench/srt_ingest.py [--seconds 15] [--streams 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.config import SrtConfig  # noqa: E402
from edged.ingest.auth import StaticAuthorizer  # noqa: E402
from edged.ingest.srt_server import SrtServer  # noqa: E402
from edged.media.hub import StreamHub  # noqa: E402
from edged.media.stream import Stream  # noqa: E402
from tests.conftest import free_port  # noqa: E402

CACHE = Path("/tmp/edged-bench")
WARMUP = 3.0  # s after the publishers start before the window opens


def make_clip(seconds: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    out = CACHE / f"srt-720p30-{seconds}s.ts"
    if not out.exists():
        print(f"generating {out} ...", flush=True)
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-maxrate", "3M", "-bufsize", "3M",
             "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(out)],
            check=True,
        )
    return out


def publisher(clip: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ffmpeg", "-loglevel", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy",
                             "-f", "mpegts", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_edged(clip: Path, n: int, window: float) -> tuple[float, int]:
    """(CPU seconds per stream per second, packets received in the window)."""
    hub = StreamHub()
    counts = {"packets": 0}
    pumps: list[asyncio.Task[None]] = []

    def on_start(stream: Stream) -> None:
        reader = stream.add_reader("bench")

        async def pump() -> None:
            while await reader.get() is not None:
                counts["packets"] += 1

        pumps.append(asyncio.get_running_loop().create_task(pump()))

    hub.add_listener(on_start)
    keys = {f"key-{i}": f"ch{i}" for i in range(n)}
    server = SrtServer(SrtConfig(listen="127.0.0.1:0"), hub, StaticAuthorizer(keys))
    await server.start()
    procs = [publisher(clip, f"srt://127.0.0.1:{server.port}?streamid=key-{i}") for i in range(n)]
    try:
        await asyncio.sleep(WARMUP)
        live = len(hub.live_channels())
        if live != n:
            raise SystemExit(f"only {live} of {n} publishers are live")
        c0, p0 = cpu_self(), counts["packets"]
        await asyncio.sleep(window)
        cpu, pkts = cpu_self() - c0, counts["packets"] - p0
    finally:
        stop(procs)
        await server.stop()
        for t in pumps:
            t.cancel()
    return cpu / window / n, pkts


def run_reference(clip: Path, window: float) -> float:
    port = free_port(socket.SOCK_DGRAM)
    with open(os.devnull, "wb") as sink:
        slt = subprocess.Popen(["srt-live-transmit", "-q", f"srt://:{port}", "file://con"], stdout=sink,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    pub = publisher(clip, f"srt://127.0.0.1:{port}")
    try:
        time.sleep(WARMUP)
        c0 = cpu_of(slt.pid)
        time.sleep(window)
        return (cpu_of(slt.pid) - c0) / window
    finally:
        stop([pub, slt])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measurement window per run")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    clip = make_clip(int(args.seconds + WARMUP + 5))
    mbps = clip.stat().st_size * 8 / (args.seconds + WARMUP + 5) / 1e6
    print(f"clip: {clip.name}, {mbps:.1f} Mb/s; window {args.seconds:.0f} s; {os.cpu_count()} cores")
    ref = run_reference(clip, args.seconds)
    print(f"reference srt-live-transmit (receive only):   {ref * 100:5.1f} % of a core per stream")
    for n in args.streams:
        per_stream, pkts = asyncio.run(run_edged(clip, n, args.seconds))
        print(f"edged SrtServer, {n} stream(s):              {per_stream * 100:5.1f} % of a core per stream "
              f"({pkts / args.seconds / n:.0f} packets/s each; {per_stream / ref:.1f}x the reference)")


if __name__ == "__main__":
    main()
