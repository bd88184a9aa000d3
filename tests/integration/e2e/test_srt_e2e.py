"""`edged run` with SRT: Debian's ffmpeg publishes over SRT, ffprobe plays the HLS back."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, need
from tests.integration.procs import EdgeProcess, http_get, wait_for

KEY = "srt-e2e-key"
SECRET = "e2e-passphrase-123"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    need("ffmpeg")
    srt_port = free_port(socket.SOCK_DGRAM)
    e = EdgeProcess(tmp_path / "edge", {"demo": KEY},
                    ["--srt", f"127.0.0.1:{srt_port}", "--srt-passphrase", SECRET])
    e.srt_port = srt_port  # type: ignore[attr-defined]
    e.start()
    try:
        yield e
    finally:
        e.stop()


def srt_publish(edge: EdgeProcess, seconds: float, key: str = KEY, passphrase: str = SECRET) -> int:
    url = f"srt://127.0.0.1:{edge.srt_port}?streamid={key}&passphrase={passphrase}"  # type: ignore[attr-defined]
    args = [need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def playlist(edge: EdgeProcess, path: str) -> str:
    status, _, body = http_get(f"{edge.http}/live/demo/{path}")
    return body.decode() if status == 200 else ""


def ffprobe_json(url: str, *args: str) -> dict:
    out = subprocess.run([need("ffprobe"), "-v", "error", "-of", "json", *args, url],
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_srt_publish_plays_back_as_hls_and_reconnect_continues(edge: EdgeProcess) -> None:
    assert edge.health()["srt_port"] == edge.srt_port  # type: ignore[attr-defined]
    assert srt_publish(edge, 5) == 0
    wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge, "source/index.m3u8"), 20, "the stream to end")
    first = playlist(edge, "source/index.m3u8")
    assert first.count("#EXTINF") >= 2 and "#EXT-X-DISCONTINUITY" not in first

    master = playlist(edge, "master.m3u8")
    assert "RESOLUTION=640x360" in master and 'avc1.42' in master and "mp4a.40.2" in master
    url = f"{edge.http}/live/demo/master.m3u8"
    info = ffprobe_json(url, "-show_entries", "stream=codec_name,width,height,sample_rate:format=duration")
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}
    assert float(info["format"]["duration"]) > 4.0
    pkts = ffprobe_json(url, "-select_streams", "v", "-show_entries", "packet=dts_time")["packets"]
    dts = [float(p["dts_time"]) for p in pkts]
    assert len(dts) >= 5 * 30 * 0.9
    assert all(0 < b - a < 0.05 for a, b in zip(dts, dts[1:], strict=False)), "no gaps"

    # a wrong passphrase is refused and publishes nothing
    assert srt_publish(edge, 1, passphrase="not-the-passphrase") != 0
    assert srt_publish(edge, 1, key="wrong-key") != 0
    assert playlist(edge, "source/index.m3u8") == first

    # the publisher comes back: the playlist continues after a discontinuity
    assert srt_publish(edge, 3) == 0
    wait_for(lambda: "#EXT-X-DISCONTINUITY" in playlist(edge, "source/index.m3u8")
             and playlist(edge, "source/index.m3u8").rstrip().endswith("#EXT-X-ENDLIST"), 20,
             "the second session to end")
    media = playlist(edge, "source/index.m3u8")
    assert media.count("#EXTINF") > first.count("#EXTINF")

    metrics = http_get(edge.http + "/metrics")[2].decode()
    assert 'edged_srt_refused_total{reason="encryption"}' in metrics
    assert 'edged_srt_refused_total{reason="unknown_key"}' in metrics
    assert 'edged_srt_rtt_seconds{channel="demo"}' not in metrics  # only while live
    assert "edged_srt_connections 0.0" in metrics
