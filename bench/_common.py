"""Shared bench helpers: generated clips, RTMP byte streams, CPU accounting."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.protocols.rtmp import events as ev  # noqa: E402
from edged.protocols.rtmp.client import RtmpClientSession  # noqa: E402
from edged.protocols.rtmp.session import RtmpServerSession  # noqa: E402
from tests.unit.media.flvsource import flv_tags  # noqa: E402

CACHE = Path("/tmp/edged-bench")


def make_clip(name: str, size: str, rate: int, seconds: int, vbitrate: str, gop: int) -> Path:
    """An FLV clip made once by Debian's ffmpeg and cached under /tmp/edged-bench."""
    CACHE.mkdir(exist_ok=True)
    out = CACHE / f"{name}.flv"
    if not out.exists():
        print(f"generating {out} ({size}@{rate}, {seconds}s, {vbitrate}) ...", flush=True)
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", vbitrate, "-maxrate", vbitrate,
             "-bufsize", vbitrate, "-g", str(gop), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
             "-f", "flv", str(out)],
            check=True,
        )
    return out


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class RtmpPublisher:
    """Drives the client core: handshake/connect/publish against a server, then media."""

    def __init__(self, key: str = "bench") -> None:
        self.client = RtmpClientSession(app="live", tc_url="rtmp://127.0.0.1/live", stream_key=key)
        self.client.connect()

    def handle(self, data: bytes) -> list[ev.Event]:
        self.client.receive_data(data)
        return list(self.client.events())

    def out(self) -> bytes:
        return self.client.data_to_send()


def publish_bytes(clip: Path) -> tuple[bytes, bytes, list[tuple[str, int, bytes]]]:
    """(setup bytes, media bytes, tags): what an encoder sends to publish `clip`, captured in memory."""
    pub = RtmpPublisher()
    server = RtmpServerSession()
    setup = bytearray()
    for _ in range(50):
        c = pub.out()
        setup += c
        server.receive_data(c)
        for e in server.events():
            if isinstance(e, ev.PublishRequested):
                server.accept_publish(e.stream_id)
        if any(isinstance(e, ev.PublishAccepted) for e in pub.handle(server.data_to_send())):
            break
    tags = list(flv_tags(clip))
    for kind, ts, body in tags:
        if kind == "video":
            pub.client.send_video(ts, body)
        else:
            pub.client.send_audio(ts, body)
    return bytes(setup), pub.out(), tags


def iter_pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
