"""Edge media path end to end: Debian's ffmpeg publishes over RTMP, ffprobe plays the HLS back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.procs import EdgeProcess, ffmpeg_publish, http_get, wait_for

KEY = "s3cret-key"


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    need("ffmpeg")
    e = EdgeProcess(tmp_path / "edge", {"demo": KEY}, hls_format="ts").start()
    try:
        yield e
    finally:
        e.stop()


def ffprobe_json(url: str, *args: str) -> dict:
    out = subprocess.run([need("ffprobe"), "-v", "error", "-of", "json", *args, url],
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout)


def playlist(edge: EdgeProcess, path: str) -> str:
    status, headers, body = http_get(f"{edge.http}/live/demo/{path}")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    return body.decode()


def segment_count(edge: EdgeProcess) -> int:
    status, _, body = http_get(f"{edge.http}/live/demo/source/index.m3u8")
    return body.decode().count("#EXTINF") if status == 200 else 0


def test_publish_and_play_back(edge: EdgeProcess) -> None:
    pub = ffmpeg_publish(edge.rtmp_url(KEY), seconds=7)
    _, err = pub.communicate(timeout=60)
    assert pub.returncode == 0, err.decode()
    wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge, "source/index.m3u8"), 15, "the stream to end")

    master = playlist(edge, "master.m3u8")
    inf = next(line for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF:"))
    assert "RESOLUTION=640x360" in inf and 'CODECS="avc1.42' in inf and "mp4a.40.2" in inf
    assert "BANDWIDTH=" in inf and "FRAME-RATE=30.000" in inf

    media = playlist(edge, "source/index.m3u8")
    assert "#EXT-X-MEDIA-SEQUENCE:0" in media and "#EXT-X-DISCONTINUITY" not in media
    durations = [float(line[8:].rstrip(",")) for line in media.splitlines() if line.startswith("#EXTINF:")]
    assert len(durations) >= 3
    assert all(1.9 <= d <= 2.1 for d in durations[:-1])

    url = f"{edge.http}/live/demo/master.m3u8"
    info = ffprobe_json(url, "-show_entries", "stream=codec_name,width,height,sample_rate:format=duration")
    codecs = {s["codec_name"] for s in info["streams"]}
    assert codecs == {"h264", "aac"}
    video = next(s for s in info["streams"] if s["codec_name"] == "h264")
    assert (video["width"], video["height"]) == (640, 360)
    assert abs(float(info["format"]["duration"]) - 7.0) < 0.6

    pkts = ffprobe_json(url, "-select_streams", "v", "-show_entries", "packet=pts_time,dts_time")["packets"]
    dts = [float(p["dts_time"]) for p in pkts]
    assert len(dts) >= 200  # 7 s at 30 fps, minus nothing lost
    gaps = [b - a for a, b in zip(dts, dts[1:], strict=False)]
    assert all(0 < g < 0.05 for g in gaps), max(gaps)  # continuous: no frame lost between segments

    # Segment responses: type, immutable caching, CORS; unknowns are 404, traversal goes nowhere.
    first = next(line for line in media.splitlines() if line.endswith(".ts"))
    status, headers, body = http_get(f"{edge.http}/live/demo/source/{first}")
    assert status == 200 and headers["Content-Type"] == "video/mp2t" and body[0] == 0x47
    assert "immutable" in headers["Cache-Control"] and headers["Access-Control-Allow-Origin"] == "*"
    for bad in ("/live/nope/master.m3u8", "/live/demo/nope/index.m3u8", "/live/demo/source/999999.ts",
                "/live/demo/../../etc/passwd", "/live/demo/source/%2e%2e%2fstore%2fdata.mdb"):
        assert http_get(edge.http + bad)[0] == 404, bad

    metrics = http_get(edge.http + "/metrics")[2].decode()
    assert 'edged_segments_written_total{rendition="source"}' in metrics
    assert "edged_ingest_to_playlist_seconds_count" in metrics


def test_wrong_key_refused(edge: EdgeProcess) -> None:
    pub = ffmpeg_publish(edge.rtmp_url("not-the-key"), seconds=3)
    _, err = pub.communicate(timeout=30)
    assert pub.returncode != 0
    assert http_get(f"{edge.http}/live/demo/master.m3u8")[0] == 404
    assert "publish refused: unknown stream key" in edge.log()
    metrics = http_get(edge.http + "/metrics")[2].decode()
    assert 'edged_publish_refused_total{reason="bad_key",source="rtmp"} 1.0' in metrics


def test_duplicate_publisher_refused_first_continues(edge: EdgeProcess) -> None:
    first = ffmpeg_publish(edge.rtmp_url(KEY), seconds=8)
    wait_for(lambda: segment_count(edge) >= 1, 20, "the first publisher's segments")
    second = ffmpeg_publish(edge.rtmp_url(KEY), seconds=3)
    _, err2 = second.communicate(timeout=30)
    assert second.returncode != 0
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1.decode()
    wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge, "source/index.m3u8"), 15, "the stream to end")
    media = playlist(edge, "source/index.m3u8")
    assert media.count("#EXTINF") >= 4 and "#EXT-X-DISCONTINUITY" not in media
    assert "channel already has a publisher" in edge.log()


def test_kill9_restart_keeps_segments_and_sequence(tmp_path: Path) -> None:
    need("ffmpeg")
    data = tmp_path / "edge"
    conf = tmp_path / "edged.toml"
    # keep both sessions in view; a daemon killed with its publisher is a lost publisher: its playlist
    # ends once the (short here) reconnect grace has passed
    conf.write_text("[hls]\nwindow = 30\nreconnect_grace_seconds = 2\n")
    extra = ["--no-srt", "--no-transcode", "--config", str(conf)]
    edge = EdgeProcess(data, {"demo": KEY}, extra, hls_format="ts").start()
    pub = ffmpeg_publish(edge.rtmp_url(KEY), seconds=30)
    try:
        wait_for(lambda: segment_count(edge) >= 3, 30, "three segments")
        before = playlist(edge, "source/index.m3u8")
        edge.kill9()
        pub.communicate(timeout=30)  # the encoder notices the dead server
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.communicate()
        edge.stop()
    old_uris = [line for line in before.splitlines() if line.endswith(".ts")]

    edge2 = EdgeProcess(data, {"demo": KEY}, extra, hls_format="ts")
    edge2.rtmp_port, edge2.http_port = edge.rtmp_port, edge.http_port
    edge2.start()
    try:
        for uri in old_uris:  # everything listed before the crash is still served
            status, _, body = http_get(f"{edge2.http}/live/demo/source/{uri}")
            assert status == 200 and body[0] == 0x47, uri
        wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge2, "source/index.m3u8"), 15,
                 "the lost stream's playlist to end after the grace")
        after_crash = playlist(edge2, "source/index.m3u8")
        last_seq = max(int(u[:-3]) for u in after_crash.splitlines() if u.endswith(".ts"))

        pub2 = ffmpeg_publish(edge2.rtmp_url(KEY), seconds=5)
        _, err = pub2.communicate(timeout=60)
        assert pub2.returncode == 0, err.decode()
        wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge2, "source/index.m3u8")
                 and playlist(edge2, "source/index.m3u8").count(".ts") >= 2
                 and max(int(u[:-3]) for u in playlist(edge2, "source/index.m3u8").splitlines()
                         if u.endswith(".ts")) > last_seq + 1, 20, "the new session's segments")
        media = playlist(edge2, "source/index.m3u8").splitlines()
        seqs = [int(u[:-3]) for u in media if u.endswith(".ts")]
        assert seqs == sorted(set(seqs)), "sequence numbers are unique and increasing"
        disc_at = media.index("#EXT-X-DISCONTINUITY")
        first_new = int(next(u for u in media[disc_at:] if u.endswith(".ts"))[:-3])
        assert first_new == last_seq + 1  # continues, never reuses a number
    finally:
        edge2.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_worker_crash_is_restarted_with_discontinuity(edge: EdgeProcess) -> None:
    pub = ffmpeg_publish(edge.rtmp_url(KEY), seconds=14)
    try:
        wait_for(lambda: segment_count(edge) >= 2, 30, "two segments")
        assert edge.proc is not None
        workers = _children(edge.proc.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        _, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err.decode()  # the publisher never noticed
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.communicate()
    wait_for(lambda: "#EXT-X-ENDLIST" in playlist(edge, "source/index.m3u8"), 20, "the stream to end")
    media = playlist(edge, "source/index.m3u8").splitlines()
    assert "#EXT-X-DISCONTINUITY" in media
    seqs = [int(u[:-3]) for u in media if u.endswith(".ts")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    metrics = http_get(edge.http + "/metrics")[2].decode()
    assert "edged_pipeline_worker_restarts_total 1.0" in metrics
    assert "edged_pipeline_worker_failures_total 1.0" in metrics
