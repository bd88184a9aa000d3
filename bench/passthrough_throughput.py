"""Passthrough packaging throughput: how many 1080p30 6 Mbit/s streams one core packages in real time.

Measures the CPU time of the whole production path for one stream, in one process (so one core):
RTMP core parsing the encoder's bytes → FLV normalization → pipe framing (main process work), then
pipe decoding → segmenter (cut + MPEG-TS mux) → LMDB commit (worker work). Reference, same run:
Debian's ffmpeg remuxing the same clip to HLS (`-c copy -f hls`), CPU time of that process.
Prints x-realtime per core (media seconds per CPU second = streams per core) and the ratio.

    .venv/bin/python bench/passthrough_throughput.py [--seconds 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from _common import cpu_children, cpu_self, iter_pieces, make_clip, publish_bytes

from edged.media.packet import MediaPacket
from edged.media.transcode.wire import WireDecoder, WireEncoder
from edged.media.transcode.worker import Pipeline, WorkerSpec
from edged.protocols.flv import FlvNormalizer
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.session import RtmpServerSession
from edged.store.segments import SegmentStore


def ours(setup: bytes, media: bytes, expected: int) -> tuple[float, float, int]:
    """(main-process CPU s, worker CPU s, segments) for one pass of the production path."""
    with tempfile.TemporaryDirectory() as d:
        store = SegmentStore(d, 1 << 30)
        spec = WorkerSpec(channel="bench", store_path=d, store_max_bytes=1 << 30, segment_seconds=2.0,
                          max_segment_seconds=12.0, keep_segments=1000, session=1)
        segments = []
        pipeline = Pipeline(spec, store, segments.append)
        server = RtmpServerSession(max_message_size=16 << 20)
        server.receive_data(setup)
        for e in server.events():
            if isinstance(e, ev.PublishRequested):
                server.accept_publish(e.stream_id)
        list(server.events())
        norm, enc = FlvNormalizer(), WireEncoder()
        pipe = bytearray()
        t0 = cpu_self()
        for piece in iter_pieces(media, 64 * 1024):
            server.receive_data(piece)
            for e in server.events():
                if isinstance(e, ev.VideoData):
                    pkt = norm.video(e.timestamp, e.data, time.monotonic())
                elif isinstance(e, ev.AudioData):
                    pkt = norm.audio(e.timestamp, e.data, time.monotonic())
                else:
                    continue
                if isinstance(pkt, MediaPacket):
                    pipe += enc.packet(pkt)
            server.data_to_send()
        t1 = cpu_self()
        dec = WireDecoder()
        npk = 0
        for piece in iter_pieces(bytes(pipe), 256 * 1024):
            dec.receive_data(piece)
            while (item := dec.next_item()) is not None:
                pipeline.push(item)  # type: ignore[arg-type]
                npk += 1
        pipeline.finish()
        if npk < expected:
            raise SystemExit(f"only {npk} of {expected} packets made it through")
        t2 = cpu_self()
        store.close()
        print(f"  {npk} packets through the path")
        return t1 - t0, t2 - t1, len(segments)


def ffmpeg_remux(clip: Path) -> float:
    with tempfile.TemporaryDirectory() as d:
        before = cpu_children()
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy", "-f", "hls",
                        "-hls_time", "2", "-hls_list_size", "0", f"{d}/index.m3u8"], check=True)
        return cpu_children() - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    clip = make_clip(f"1080p30-6M-{args.seconds}s", "1920x1080", 30, args.seconds, "6M", 60)
    setup, media, tags = publish_bytes(clip)
    expected = len(tags) - 2  # less the two sequence headers
    mbps = len(media) * 8 / args.seconds / 1e6
    print(f"clip: {clip.name}, {args.seconds}s, {mbps:.2f} Mbit/s on the wire")
    best_main = best_worker = best_ff = float("inf")
    for i in range(args.repeat):
        main_cpu, worker_cpu, nseg = ours(setup, media, expected)
        ff = ffmpeg_remux(clip)
        best_main, best_worker, best_ff = min(best_main, main_cpu), min(best_worker, worker_cpu), min(best_ff, ff)
        print(f"run {i + 1}: edged ingest {main_cpu:.3f}s + worker {worker_cpu:.3f}s CPU ({nseg} segments); "
              f"ffmpeg remux {ff:.3f}s CPU")
    total = best_main + best_worker
    x_ours = args.seconds / total
    x_ff = args.seconds / best_ff
    print(f"edged passthrough: {x_ours:.0f}x realtime per core "
          f"(ingest {args.seconds / best_main:.0f}x, worker {args.seconds / best_worker:.0f}x)")
    print(f"ffmpeg -c copy -f hls: {x_ff:.0f}x realtime per core")
    print(f"ratio edged/ffmpeg: {x_ours / x_ff:.2f}  → about {int(x_ours)} streams of 1080p30 6 Mbit/s per core")


if __name__ == "__main__":
    main()
