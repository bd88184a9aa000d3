"""HLS output against real readers: Debian's ffmpeg publishes to a real edged over RTMP (and SRT);
ffmpeg/ffprobe, curl and urllib read what it serves.

- MPEG-TS continuity counters run on across segments (zero `Packet corrupt` from ffmpeg's hls
  demuxer over three consecutive segments, for the source and an encoded rung);
- EXT-X-PROGRAM-DATE-TIME is the same for one sequence number in every rendition, and dates step by
  the segment durations;
- EXT-X-TARGETDURATION does not change when a publisher reconnects with another keyframe interval;
  a keyframe interval past hls.max_segment_seconds is cut there, counted and logged, and loses no frame;
- a publisher that is lost (killed) and back within hls.reconnect_grace_seconds continues the
  playlist without EXT-X-ENDLIST in between; one that stays away longer ends it; a deliberate stop
  (RTMP unpublish, SRT close) ends it at once;
- segments answer byte ranges (206/416) and HEAD.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from edged.media.ts_continuity import continuity_errors
from edged.store.segments import SegmentStore
from tests.conftest import free_port, need
from tests.integration.procs import EdgeProcess, ffmpeg_publish, http_get, wait_for

pytestmark = pytest.mark.timeout(120)

FRAME = 1 / 30


def _edge(tmp_path: Path, name: str, toml: str, channels: dict[str, str], extra: list[str]) -> EdgeProcess:
    need("ffmpeg")
    conf = tmp_path / f"{name}.toml"
    conf.write_text(toml)
    return EdgeProcess(tmp_path / name, channels, ["--config", str(conf), *extra], hls_format="ts").start()


def get(edge: EdgeProcess, path: str) -> str:
    status, _, body = http_get(f"{edge.http}/live/{path}")
    return body.decode() if status == 200 else ""


class Media:
    """One media playlist, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        lines = text.splitlines()
        self.target = int(next((ln.split(":")[1] for ln in lines if ln.startswith("#EXT-X-TARGETDURATION:")), "0"))
        self.ended = "#EXT-X-ENDLIST" in lines
        self.seqs: list[int] = []
        self.durations: dict[int, float] = {}
        self.dates: dict[int, float] = {}
        self.disc_at: list[int] = []  # seqs that follow an EXT-X-DISCONTINUITY
        duration, date, disc = 0.0, None, False
        for ln in lines:
            if ln.startswith("#EXTINF:"):
                duration = float(ln[8:].rstrip(","))
            elif ln.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                date = datetime.fromisoformat(ln.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            elif ln == "#EXT-X-DISCONTINUITY":
                disc = True
            elif ln.endswith(".ts"):
                seq = int(ln[:-3])
                self.seqs.append(seq)
                self.durations[seq] = duration
                if date is not None:
                    self.dates[seq] = date
                if disc:
                    self.disc_at.append(seq)
                date, disc = None, False


def media(edge: EdgeProcess, path: str) -> Media:
    return Media(get(edge, path))


def local_playlist(edge: EdgeProcess, path: str, seqs: list[int], out: Path) -> Path:
    """The segments `seqs` of a rendition downloaded next to a playlist of their own."""
    out.mkdir(parents=True, exist_ok=True)
    m = media(edge, f"{path}/index.m3u8")
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{m.target}", f"#EXT-X-MEDIA-SEQUENCE:{seqs[0]}"]
    for seq in seqs:
        status, _, body = http_get(f"{edge.http}/live/{path}/{seq}.ts")
        assert status == 200, (path, seq)
        (out / f"{seq}.ts").write_bytes(body)
        lines += [f"#EXTINF:{m.durations[seq]:.3f},", f"{seq}.ts"]
    (out / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n")
    return out / "index.m3u8"


def ffmpeg_read(playlist: Path) -> str:
    """Everything ffmpeg's hls demuxer has to say, at warning level, reading the playlist through."""
    proc = subprocess.run([need("ffmpeg"), "-hide_banner", "-nostdin", "-v", "warning", "-i", str(playlist),
                           "-map", "0", "-c", "copy", "-f", "null", "-"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode(errors="replace")


def video_dts(playlist: Path) -> list[float]:
    out = subprocess.run([need("ffprobe"), "-v", "error", "-select_streams", "v", "-show_entries", "packet=dts_time",
                          "-of", "csv=p=0", str(playlist)], capture_output=True, timeout=60, check=True)
    return [float(x.split(",")[0]) for x in out.stdout.decode().split()]


def live(edge: EdgeProcess, channel: str) -> bool:
    return channel in edge.health()["live_channels"]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


# -- continuity counters and dates, source and an encoded rung ------------------------------------------

def test_continuity_and_dates_agree_across_segments_and_renditions(tmp_path: Path) -> None:
    edge = _edge(tmp_path, "edge", "[hls]\nsegment_seconds = 1.0\nwindow = 20\n", {"demo": "k1"},
                 ["--no-srt", "--transcode", "--ladder", "90p30=160x90@30:100"])
    try:
        pub = ffmpeg_publish(edge.rtmp_url("k1"), seconds=5, size="320x180")
        _, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err.decode()
        names = ("source", "90p30")
        wait_for(lambda: all(media(edge, f"demo/{n}/index.m3u8").ended for n in names), 30, "both renditions to end")
        lists = {n: media(edge, f"demo/{n}/index.m3u8") for n in names}
        common = sorted(set(lists["source"].seqs) & set(lists["90p30"].seqs))
        three = next(common[i : i + 3] for i in range(len(common) - 2) if common[i + 2] == common[i] + 2)
        for n in names:
            m = lists[n]
            # ffmpeg's hls demuxer reads the three segments as one stream: no counter breaks at the cuts
            log = ffmpeg_read(local_playlist(edge, f"demo/{n}", three, tmp_path / n))
            assert "corrupt" not in log.lower() and "continuity" not in log.lower(), (n, log)
            state: dict[int, int] = {}
            for seq in m.seqs:  # and every segment of the playlist continues the one before
                body = http_get(f"{edge.http}/live/demo/{n}/{seq}.ts")[2]
                assert continuity_errors(body, state) == [], (n, seq)
            # dates step by the durations (both are written to the millisecond)
            for a, b in zip(m.seqs, m.seqs[1:], strict=False):
                assert abs((m.dates[b] - m.dates[a]) - m.durations[a]) <= 0.002, (n, a, m.dates[b] - m.dates[a])
        # one date per sequence number, whatever the rendition
        assert {s: lists["90p30"].dates[s] for s in common} == {s: lists["source"].dates[s] for s in common}
        assert lists["source"].target == lists["90p30"].target == 3  # auto: 3 x segment_seconds
    finally:
        edge.stop()


# -- a fixed target duration; forced cuts lose nothing --------------------------------------------------

def test_target_duration_survives_a_reconnect_with_another_keyframe_interval(tmp_path: Path) -> None:
    edge = _edge(tmp_path, "edge", "[hls]\nsegment_seconds = 1.0\nwindow = 20\n", {"demo": "k1"},
                 ["--no-srt", "--no-transcode"])
    try:
        pub = ffmpeg_publish(edge.rtmp_url("k1"), seconds=3)  # keyframes every second
        _, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err.decode()
        wait_for(lambda: media(edge, "demo/source/index.m3u8").ended, 20, "the first session to end")
        before = media(edge, "demo/source/index.m3u8")
        assert before.target == 3 and max(before.durations.values()) < 1.5
        assert "#EXT-X-INDEPENDENT-SEGMENTS" in get(edge, "demo/master.m3u8")
        # The encoder comes back with a keyframe every 5 s: past hls.max_segment_seconds (auto: 3 s).
        pub = ffmpeg_publish(edge.rtmp_url("k1"), seconds=8, extra=["-g", "150", "-keyint_min", "150",
                                                                     "-sc_threshold", "0"])
        _, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err.decode()
        wait_for(lambda: (m := media(edge, "demo/source/index.m3u8")).ended and m.disc_at, 20,
                 "the second session to end")
        after = media(edge, "demo/source/index.m3u8")
        assert after.target == before.target == 3
        second = [s for s in after.seqs if s >= after.disc_at[-1]]
        assert max(after.durations[s] for s in second) <= 3 + FRAME + 0.001  # cut at the maximum ...
        assert max(after.durations[s] for s in second) > 2.9
        dts = video_dts(local_playlist(edge, "demo/source", second, tmp_path / "second"))
        assert len(dts) == 8 * 30  # ... and no frame lost at the cuts
        assert all(0 < b - a < 0.05 for a, b in zip(dts, dts[1:], strict=False))
        metrics = http_get(edge.http + "/metrics")[2].decode()
        forced = re.search(r'edged_hls_forced_cuts_total\{rendition="source"\} (\d+)', metrics)
        assert forced is not None and int(forced.group(1)) >= 1, metrics  # at 3 s (then a keyframe at 5 s)
        assert 'edged_hls_segments_over_target_total{rendition="source"}' not in metrics
        assert "Set the encoder's keyframe interval to 2 s, or raise hls.max_segment_seconds" in edge.log()
        # the passthrough's segments after a forced cut start without a keyframe: not independent
        assert "#EXT-X-INDEPENDENT-SEGMENTS" not in get(edge, "demo/master.m3u8")
    finally:
        edge.stop()


# -- the reconnect grace ----------------------------------------------------------------------------------

def test_a_lost_publisher_back_within_the_grace_continues_the_playlist(tmp_path: Path) -> None:
    edge = _edge(tmp_path, "edge", "[hls]\nsegment_seconds = 1.0\nwindow = 30\nreconnect_grace_seconds = 6\n",
                 {"demo": "k1"}, ["--no-srt", "--no-transcode"])
    saw_end: list[str] = []

    def playlist() -> Media:
        m = media(edge, "demo/source/index.m3u8")
        if m.ended:
            saw_end.append(m.text)
        return m

    try:
        first = ffmpeg_publish(edge.rtmp_url("k1"), seconds=60)
        try:
            wait_for(lambda: len(playlist().seqs) >= 2, 30, "the first session's segments")
        finally:
            stop(first)  # killed: the connection drops without an unpublish
        wait_for(lambda: not live(edge, "demo"), 10, "the lost publisher to be released")
        second = ffmpeg_publish(edge.rtmp_url("k1"), seconds=60)
        try:
            wait_for(lambda: (m := playlist()).disc_at and max(m.seqs) > m.disc_at[-1], 30,
                     "the reconnected publisher's segments")
        finally:
            stop(second)
        m = playlist()
        assert saw_end == [], "EXT-X-ENDLIST was served while the publisher was away"
        # one playlist: the second session continues the numbers after one discontinuity
        assert len(m.disc_at) == 1 and m.disc_at[0] - 2 in m.seqs
        assert m.seqs == list(range(m.seqs[0], m.seqs[-1] + 1))
        # Away for good: the playlist ends once the grace has passed, not before the stream is released.
        wait_for(lambda: not live(edge, "demo"), 10, "the second publisher to be released")
        assert not playlist().ended
        wait_for(lambda: playlist().ended, 30, "EXT-X-ENDLIST after the grace")
        assert "publisher released (lost)" in edge.log()
    finally:
        edge.stop()


@pytest.fixture(scope="module")
def patient_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """An edge whose reconnect grace (300 s) outlasts every test here: an ENDLIST seen is a
    deliberate end; SRT on."""
    tmp = tmp_path_factory.mktemp("patient")
    srt_port = free_port(socket.SOCK_DGRAM)
    edge = _edge(tmp, "edge", "[hls]\nsegment_seconds = 1.0\nreconnect_grace_seconds = 300\n",
                 {"rtmpc": "k-rtmp", "srtc": "k-srt-close", "srtk": "k-srt-kill", "ranges": "k-ranges"},
                 ["--no-transcode", "--srt", f"127.0.0.1:{srt_port}"])
    edge.srt_port = srt_port  # type: ignore[attr-defined]
    try:
        yield edge
    finally:
        edge.stop()


def srt_publish(edge: EdgeProcess, key: str, seconds: float) -> subprocess.Popen[bytes]:
    url = f"srt://127.0.0.1:{edge.srt_port}?streamid={key}"  # type: ignore[attr-defined]
    return ffmpeg_publish(url, seconds=seconds, fmt="mpegts")


def record(edge: EdgeProcess, channel: str) -> dict[str, object]:
    store = SegmentStore(edge.data_dir / "store", 1 << 30)
    try:
        return store.channel(channel) or {}
    finally:
        store.close()


def test_a_deliberate_stop_ends_the_playlist_at_once(patient_edge: EdgeProcess) -> None:
    edge = patient_edge
    for channel, pub in (("rtmpc", ffmpeg_publish(edge.rtmp_url("k-rtmp"), seconds=3)),
                         ("srtc", srt_publish(edge, "k-srt-close", 3))):
        _, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err.decode()
        wait_for(lambda ch=channel: media(edge, f"{ch}/source/index.m3u8").ended, 20, f"{channel} to end")
        assert record(edge, channel)["ended_deliberately"] is True
    # An SRT publisher that is killed is lost, not closed: its playlist stays open.
    pub = srt_publish(edge, "k-srt-kill", 60)
    try:
        wait_for(lambda: len(media(edge, "srtk/source/index.m3u8").seqs) >= 2, 30, "srtk segments")
    finally:
        stop(pub)
    wait_for(lambda: record(edge, "srtk").get("live") is False, 30, "the lost SRT publisher's end to be recorded")
    assert record(edge, "srtk")["ended_deliberately"] is False
    assert not media(edge, "srtk/source/index.m3u8").ended


# -- byte ranges and HEAD ---------------------------------------------------------------------------------

def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_segments_answer_byte_ranges_and_head(patient_edge: EdgeProcess, tmp_path: Path) -> None:
    edge = patient_edge
    pub = ffmpeg_publish(edge.rtmp_url("k-ranges"), seconds=2)
    _, err = pub.communicate(timeout=60)
    assert pub.returncode == 0, err.decode()
    wait_for(lambda: media(edge, "ranges/source/index.m3u8").ended, 20, "the stream to end")
    seq = media(edge, "ranges/source/index.m3u8").seqs[0]
    url = f"{edge.http}/live/ranges/source/{seq}.ts"
    status, headers, full = _request(url)
    size = len(full)
    assert status == 200 and headers["Accept-Ranges"] == "bytes" and size > 1000

    for spec, first, last in (("bytes=0-187", 0, 187), ("bytes=-188", size - 188, size - 1),
                              ("bytes=376-", 376, size - 1), ("bytes=100-99999999", 100, size - 1)):
        status, headers, body = _request(url, headers={"Range": spec})
        assert status == 206, spec
        assert headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
        assert body == full[first : last + 1] and int(headers["Content-Length"]) == len(body), spec
    status, headers, _ = _request(url, headers={"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, body = _request(url, headers={"Range": "bytes=0-1,10-20"})  # several: the whole body
    assert status == 200 and body == full

    # curl asks for a range the way a player's byte-range loader does
    out = tmp_path / "part.ts"
    proc = subprocess.run([need("curl"), "-s", "-r", "188-375", "-o", str(out), "-w", "%{http_code}", url],
                          capture_output=True, timeout=30)
    assert proc.stdout.decode() == "206" and out.read_bytes() == full[188:376]
    assert out.read_bytes()[0] == 0x47  # a TS packet boundary

    # HEAD: the GET's headers, no body, on segments and playlists; no body bytes counted as sent
    def sent_bytes() -> float:
        _, _, text = _request(f"{edge.http}/metrics")
        found = re.search(r'^edged_http_sent_bytes_total\{route="segment"\} (\S+)$', text.decode(), re.M)
        return float(found.group(1)) if found else 0.0

    before = sent_bytes()
    for _ in range(3):
        assert _request(url, method="HEAD")[2] == b""
    assert sent_bytes() == before
    for path in (f"ranges/source/{seq}.ts", "ranges/source/index.m3u8", "ranges/master.m3u8"):
        g_status, g_headers, g_body = _request(f"{edge.http}/live/{path}")
        h_status, h_headers, h_body = _request(f"{edge.http}/live/{path}", method="HEAD")
        assert (h_status, h_body) == (g_status, b"") == (200, b""), path
        assert int(h_headers["Content-Length"]) == len(g_body) and h_headers["Content-Type"] == g_headers["Content-Type"]
    status, headers, body = _request(url, method="HEAD", headers={"Range": "bytes=0-187"})
    assert status == 206 and headers["Content-Range"] == f"bytes 0-187/{size}" and body == b""
