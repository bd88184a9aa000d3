"""Ingest-to-playlist latency: from a frame's arrival at the RTMP socket to its segment being listed.

An RTMP publisher of our own (the client core over a real socket) sends a clip in real time and
records when each video frame leaves; a poller reads the media playlist every 10 ms and records when
each segment first appears. A frame's latency is (segment listed) - (frame sent). The cut that ends a
segment needs the next keyframe, so the floor is about one segment duration for a segment's first
frame and ~0 for its last; "cut overhead" is listing time minus the arrival of the keyframe that
closed the segment (pure packaging delay).

Reference, same run, same publisher: Debian's ffmpeg as the RTMP listener writing HLS to disk
(`ffmpeg -listen 1 -i rtmp://... -c copy -f hls -hls_time 2`), its playlist polled the same way.

    .venv/bin/python bench/ingest_latency.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import REPO, RtmpPublisher, make_clip

from edged.protocols.rtmp import events as ev
from tests.conftest import free_port
from tests.unit.media.flvsource import flv_tags

SEGMENT = 2.0


async def publish(port: int, key: str, tags: list[tuple[str, int, bytes]], sent: dict[int, float]) -> None:
    """Send the tags paced by their timestamps; sent[video ts] = monotonic send time."""
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    pub = RtmpPublisher(key)
    writer.write(pub.out())
    while True:
        data = await reader.read(65536)
        if not data:
            raise SystemExit("server closed during publish set-up")
        evs = pub.handle(data)
        writer.write(pub.out())
        if any(isinstance(e, ev.PublishRejected) for e in evs):
            raise SystemExit("publish rejected")
        if any(isinstance(e, ev.PublishAccepted) for e in evs):
            break
    start = time.monotonic()
    for kind, ts, body in tags:
        delay = start + ts / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if kind == "video":
            pub.client.send_video(ts, body)
        else:
            pub.client.send_audio(ts, body)
        writer.write(pub.out())
        await writer.drain()
        if kind == "video" and len(body) > 5 and body[1] == 1:
            sent[ts] = time.monotonic()
    await asyncio.sleep(0.5)
    pub.client.unpublish()
    writer.write(pub.out())
    await writer.drain()
    writer.close()


async def poll(fetch: Callable[[], Awaitable[str | None]], seen: dict[int, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        text = await fetch()
        if text:
            now = time.monotonic()
            media_seq = 0
            idx = 0
            for line in text.splitlines():
                if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                    media_seq = int(line.split(":")[1])
                elif line and not line.startswith("#"):
                    seen.setdefault(media_seq + idx, now)
                    idx += 1
        await asyncio.sleep(0.01)


def segment_of_frames(tags: list[tuple[str, int, bytes]]) -> tuple[dict[int, int], dict[int, int]]:
    """Video ts → segment index by the cut rule, and segment index → ts of the keyframe that closed it."""
    frames = [(ts, body[0] >> 4 == 1) for kind, ts, body in tags if kind == "video" and len(body) > 5 and body[1] == 1]
    seg_of: dict[int, int] = {}
    closer: dict[int, int] = {}
    seg, start = 0, frames[0][0]
    for ts, key in frames:
        if key and (ts - start) / 1000 >= SEGMENT - 1e-3 and ts != frames[0][0]:
            closer[seg] = ts
            seg += 1
            start = ts
        seg_of[ts] = seg
    return seg_of, closer


def summarize(name: str, tags: list[tuple[str, int, bytes]], sent: dict[int, float], seen: dict[int, float],
              seq0: int) -> tuple[float, float, float]:
    seg_of, closer = segment_of_frames(tags)
    lat = [seen[seq0 + seg_of[ts]] - t for ts, t in sent.items() if seq0 + seg_of[ts] in seen and seg_of[ts] in closer]
    cut = [seen[seq0 + s] - sent[c] for s, c in closer.items() if seq0 + s in seen and c in sent]
    p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
    print(f"{name:8s}: frames {len(lat)}, latency p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms; "
          f"cut overhead p50 {statistics.median(cut) * 1000:6.1f} ms  max {max(cut) * 1000:6.1f} ms")
    return p50, p99, statistics.median(cut)


async def measure(name: str, argv: list[str], port: int, key: str, fetch: Callable[[], Awaitable[str | None]],
                  tags: list[tuple[str, int, bytes]], workdir: str) -> tuple[float, float, float]:
    """Run one server, publish to it while polling its playlist, summarize."""
    proc = await asyncio.to_thread(subprocess.Popen, argv, cwd=REPO)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = asyncio.Event()
    poller = asyncio.create_task(poll(fetch, seen, stop))
    try:
        await publish(port, key, tags, sent)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await poller
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
        shutil.rmtree(workdir, ignore_errors=True)
    return summarize(name, tags, sent, seen, 0)


async def run_edged(tags: list[tuple[str, int, bytes]]) -> tuple[float, float, float]:
    rtmp, http = free_port(), free_port()
    data = tempfile.mkdtemp()
    url = f"http://127.0.0.1:{http}/live/bench/source/index.m3u8"

    def get() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read().decode()
        except OSError:
            return None

    async def fetch() -> str | None:
        return await asyncio.to_thread(get)

    argv = [sys.executable, "-m", "edged", "run", "--data-dir", data, "--rtmp", f"127.0.0.1:{rtmp}",
            "--http", f"127.0.0.1:{http}", "--no-srt", "--no-transcode", "--no-chat", "--channel", "bench:benchkey",
            "--log-level", "warning"]
    return await measure("edged", argv, rtmp, "benchkey", fetch, tags, data)


async def run_ffmpeg(tags: list[tuple[str, int, bytes]]) -> tuple[float, float, float]:
    port = free_port()
    d = tempfile.mkdtemp()
    path = Path(d) / "index.m3u8"

    async def fetch() -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    argv = ["ffmpeg", "-loglevel", "error", "-listen", "1", "-i", f"rtmp://127.0.0.1:{port}/live/k", "-c", "copy",
            "-f", "hls", "-hls_time", str(SEGMENT), "-hls_list_size", "6", str(path)]
    return await measure("ffmpeg", argv, port, "k", fetch, tags, d)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    clip = make_clip(f"720p30-3M-{args.seconds}s", "1280x720", 30, args.seconds, "3M", 30)
    tags = list(flv_tags(clip))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    e50, e99, ecut = await run_edged(tags)
    f50, f99, fcut = await run_ffmpeg(tags)
    print(f"ratio edged/ffmpeg: p50 {e50 / f50:.2f}, p99 {e99 / f99:.2f}, cut overhead {ecut / fcut:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
