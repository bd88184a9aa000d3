"""ABR ladder end to end: Debian's ffmpeg publishes 1280x720 30 fps over RTMP, edged transcodes it,
ffprobe reads every rendition back; overload sheds and restores rungs; a full node refuses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from edged.media.transcode import encoders
from tests.conftest import need
from tests.integration.procs import EdgeProcess, ffmpeg_publish, http_get, wait_for

KEY = "s3cret-key"
# 1080p is above the source (dropped); 720p30 is the source itself (dropped: passthrough serves it).
LADDER = "1080p30=1920x1080@30:6000,720p30=1280x720@30:3000,480p30=854x480@30:1200,360p30=640x360@30:700"
FRAME = 1 / 30


def ffprobe_json(url: str, *args: str) -> dict:
    out = subprocess.run([need("ffprobe"), "-v", "error", "-of", "json", *args, url],
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout)


def get(edge: EdgeProcess, path: str) -> str:
    status, _, body = http_get(f"{edge.http}/live/{path}")
    assert status == 200, (path, body)
    return body.decode()


def ended(edge: EdgeProcess, path: str) -> bool:
    status, _, body = http_get(f"{edge.http}/live/{path}")
    return status == 200 and b"#EXT-X-ENDLIST" in body


def variants(master: str) -> list[tuple[dict[str, str], str]]:
    lines = master.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]))
            out.append(({k: v.strip('"') for k, v in attrs.items()}, lines[i + 1]))
    return out


def media(text: str) -> tuple[int, list[int], list[float], bool]:
    lines = text.splitlines()
    first = int(next(ln for ln in lines if ln.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
    seqs = [int(ln[:-3]) for ln in lines if ln.endswith(".ts")]
    durations = [float(ln[8:].rstrip(",")) for ln in lines if ln.startswith("#EXTINF:")]
    return first, seqs, durations, "#EXT-X-DISCONTINUITY" in lines


def publish(edge: EdgeProcess, key: str, seconds: float, size: str) -> None:
    pub = ffmpeg_publish(edge.rtmp_url(key), seconds=seconds, size=size)
    _, err = pub.communicate(timeout=seconds + 60)
    assert pub.returncode == 0, err.decode()


def test_ladder_renditions_are_listed_decodable_and_aligned(tmp_path: Path) -> None:
    need("ffmpeg")
    edge = EdgeProcess(tmp_path / "edge", {"demo": KEY}, ["--no-srt", "--transcode", "--ladder", LADDER],
                        hls_format="ts").start()
    try:
        publish(edge, KEY, 7, "1280x720")
        names = ("source", "480p30", "360p30")
        wait_for(lambda: all(ended(edge, f"demo/{n}/index.m3u8") for n in names), 30, "every rendition to end")

        vs = variants(get(edge, "demo/master.m3u8"))
        assert [uri for _, uri in vs] == [f"{n}/index.m3u8" for n in names]  # source first, highest first
        sizes = {"source": (1280, 720), "480p30": (854, 480), "360p30": (640, 360)}
        for (attrs, uri), name in zip(vs, names, strict=True):
            for key in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "FRAME-RATE", "CODECS"):
                assert key in attrs, (name, key)
            w, h = (int(x) for x in attrs["RESOLUTION"].split("x"))
            assert (w, h) == sizes[name] and w <= 1280 and h <= 720  # nothing above the source
            assert attrs["FRAME-RATE"] == "30.000"
            assert attrs["CODECS"].startswith("avc1.") and attrs["CODECS"].endswith(",mp4a.40.2")
            assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 0
            # Each rendition decodes, at its stated resolution, with the source's audio.
            info = ffprobe_json(f"{edge.http}/live/demo/{uri}", "-show_entries", "stream=codec_name,width,height")
            video = next(s for s in info["streams"] if s["codec_name"] == "h264")
            assert (video["width"], video["height"]) == (w, h), name
            assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}

        # Aligned: same media sequence numbers, same count, durations within one frame ...
        lists = {n: media(get(edge, f"demo/{n}/index.m3u8")) for n in names}
        first, seqs, durations, _ = lists["source"]
        assert len(seqs) >= 3
        for n in names[1:]:
            f, s, d, disc = lists[n]
            assert (f, s) == (first, seqs), n
            assert not disc
            assert all(abs(a - b) <= FRAME + 1e-6 for a, b in zip(d, durations, strict=True)), (n, d, durations)
        # ... and the same content: every segment starts with a keyframe at the source's pts.
        for seq in seqs:
            starts = []
            for n in names:
                pkts = ffprobe_json(f"{edge.http}/live/demo/{n}/{seq}.ts", "-select_streams", "v",
                                    "-show_entries", "packet=pts_time,flags")["packets"]
                assert pkts[0]["flags"].startswith("K"), (n, seq)
                starts.append(float(pkts[0]["pts_time"]))
            assert max(starts) - min(starts) <= FRAME / 2, (seq, starts)

        # The encoder choice and its reason are logged and exported.
        choice = encoders.detect("auto")
        metrics = http_get(edge.http + "/metrics")[2].decode()
        assert f'edged_transcode_encoder_info{{encoder="{choice.codec}",reason="{choice.reason_code}"}} 1.0' in metrics
        assert 'edged_segments_written_total{rendition="480p30"}' in metrics
        assert f"transcode encoder: {choice.codec}" in edge.log()
        if choice.codec == encoders.X264:
            assert "libx264: " in edge.log()  # with the reason there is no NVENC
    finally:
        edge.stop()


def test_overload_sheds_and_restores_and_full_node_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("ffmpeg")
    # The transcoder may encode 4 Mpixel/s: 360p30 + 160p30 need 8.3, 160p30 alone 1.4.
    monkeypatch.setenv("EDGED_TRANSCODE_THROTTLE_MPX", "4")
    conf = tmp_path / "edged.toml"
    conf.write_text(
        "[hls]\nsegment_seconds = 1.0\nwindow = 40\n"
        "[transcode]\nenabled = true\nmax_transcodes = 1\n"
        '[[transcode.ladder]]\nname = "360p30"\nwidth = 640\nheight = 360\nfps = 30\nbitrate_kbps = 700\n'
        '[[transcode.ladder]]\nname = "160p30"\nwidth = 284\nheight = 160\nfps = 30\nbitrate_kbps = 150\n'
    )
    edge = EdgeProcess(tmp_path / "edge", {"demo": KEY, "other": "other-key"},
                       ["--no-srt", "--config", str(conf)], hls_format="ts").start()
    try:
        pub = ffmpeg_publish(edge.rtmp_url(KEY), seconds=16, size="1280x720")
        try:
            wait_for(lambda: "encoding 360p30" in edge.log(), 30, "the ladder to start")
            # The node takes one ladder: a second stream is served as passthrough only.
            publish(edge, "other-key", 4, "320x180")
            wait_for(lambda: ended(edge, "other/source/index.m3u8"), 20, "the second stream to end")
            assert [uri for _, uri in variants(get(edge, "other/master.m3u8"))] == ["source/index.m3u8"]
            assert "channel=other transcode refused: node at capacity" in edge.log()
            _, err = pub.communicate(timeout=60)
            assert pub.returncode == 0, err.decode()
        finally:
            if pub.poll() is None:
                pub.kill()
                pub.communicate()
        wait_for(lambda: ended(edge, "demo/source/index.m3u8"), 30, "the stream to end")

        log = edge.log()
        assert "shedding rendition 360p30" in log, log[-3000:]
        assert "restoring rendition 360p30" in log, log[-3000:]
        assert "shedding rendition 160p30" not in log  # from the top only
        metrics = http_get(edge.http + "/metrics")[2].decode()
        assert re.search(r'edged_transcode_shed_total\{rendition="360p30"\} [1-9]', metrics)
        assert re.search(r'edged_transcode_restored_total\{rendition="360p30"\} [1-9]', metrics)
        assert "edged_transcode_refused_total 1.0" in metrics

        # The source kept flowing: every segment, in order, no discontinuity.
        first, seqs, durations, disc = media(get(edge, "demo/source/index.m3u8"))
        assert seqs == list(range(first, first + len(seqs))) and len(seqs) >= 12 and not disc
        assert all(0.9 <= d <= 1.1 for d in durations[:-1])
        # The bottom rung never stopped (its very last segment may be cut short when the stream ends
        # while the throttled transcoder is behind).
        _, low, _, _ = media(get(edge, "demo/160p30/index.m3u8"))
        assert low[: len(seqs) - 1] == seqs[:-1] and set(low) <= set(seqs)
        # The top rung has a gap while it was shed; after the restore it carries the source's
        # numbers again, each segment starting with a keyframe at the source segment's pts.
        top = [s for s in seqs if http_get(f"{edge.http}/live/demo/360p30/{s}.ts")[0] == 200]
        gap = next((i for i in range(1, len(top)) if top[i] != top[i - 1] + 1), None)
        # (a slow machine sheds the rung before its first segment: then the gap is at the start)
        restored = top[gap] if gap is not None else top[0]
        assert restored > seqs[0], top
        starts = []
        for n in ("source", "360p30"):
            pkts = ffprobe_json(f"{edge.http}/live/demo/{n}/{restored}.ts", "-select_streams", "v",
                                "-show_entries", "packet=pts_time,flags")["packets"]
            assert pkts[0]["flags"].startswith("K")
            starts.append(float(pkts[0]["pts_time"]))
        assert abs(starts[0] - starts[1]) <= FRAME / 2
    finally:
        edge.stop()
