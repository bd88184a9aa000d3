"""GStreamer's own RTMP client (rtmp2sink) publishes to a real edged and stops cleanly (exit status 0).

rtmp2sink ends a publish with FCUnpublish and then deleteStream carrying the stream *name*; edged
used to answer that with a protocol error, so every stop was "connection closed remotely", exit 1.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.procs import EdgeProcess, http_get, wait_for

KEY = "gst-key"


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    e = EdgeProcess(tmp_path / "edge", {"gst": KEY}, hls_format="ts").start()
    try:
        yield e
    finally:
        e.stop()


def _gst(url: str, *, buffers: int | None) -> list[str]:
    """A live test pattern and tone, x264 + AAC in FLV, to rtmp2sink (as a GStreamer-based encoder sends)."""
    limit = [f"num-buffers={buffers}"] if buffers is not None else []
    audio_limit = [f"num-buffers={buffers * 48000 // 30 // 1024}"] if buffers is not None else []
    return [need("gst-launch-1.0"), "-e", "-q",
            "videotestsrc", "is-live=true", *limit, "!", "video/x-raw,width=320,height=240,framerate=30/1", "!",
            "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=30", "!", "h264parse", "!",
            "queue", "!", "mux.",
            "audiotestsrc", "is-live=true", "samplesperbuffer=1024", *audio_limit, "!", "audio/x-raw,rate=48000", "!",
            "audioconvert", "!", "avenc_aac", "!", "aacparse", "!", "queue", "!", "mux.",
            "flvmux", "name=mux", "streamable=true", "!", "rtmp2sink", f"location={url}"]


def _playlist(edge: EdgeProcess) -> str:
    status, _, body = http_get(f"{edge.http}/live/gst/source/index.m3u8")
    return body.decode() if status == 200 else ""


def _assert_clean_stop(edge: EdgeProcess, proc: subprocess.Popen[bytes], err: bytes) -> None:
    assert proc.returncode == 0, f"gst-launch exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    assert b"ERROR" not in err, err.decode(errors="replace")
    wait_for(lambda: "closed: peer closed the connection" in edge.log(), 10, "edged to log the clean close")
    log = edge.log()
    assert "channel=gst unpublished" in log
    assert "protocol error" not in log and "over budget" not in log
    # what it published was cut into a segment that ffprobe plays
    wait_for(lambda: ".ts" in _playlist(edge), 15, "a segment in the playlist")
    first = next(line for line in _playlist(edge).splitlines() if line.endswith(".ts"))
    probe = subprocess.run(
        [need("ffprobe"), "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
         f"{edge.http}/live/gst/source/{first}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert {"h264", "aac"} <= set(probe.stdout.split()), probe.stdout


def test_rtmp2sink_ends_by_itself_and_exits_0(edge: EdgeProcess) -> None:
    proc = subprocess.Popen(_gst(edge.rtmp_url(KEY), buffers=90), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    _assert_clean_stop(edge, proc, err)


def test_rtmp2sink_stopped_with_sigint_sends_eos_and_exits_0(edge: EdgeProcess) -> None:
    proc = subprocess.Popen(_gst(edge.rtmp_url(KEY), buffers=None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is None and "channel=gst publishing" in edge.log(), 20, "rtmp2sink to publish")
        wait_for(lambda: ".ts" in _playlist(edge), 20, "a first segment")
        proc.send_signal(signal.SIGINT)  # with -e: EOS, then rtmp2sink's own teardown
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_clean_stop(edge, proc, err)
