"""A real browser plays the edge's HLS: headless Chromium with hls.js (MSE), as most web players do.

The page is served by the test on 127.0.0.1; it loads the stream from the edge (another origin,
so CORS is exercised), plays it muted, and posts what it saw back to the test server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.procs import REPO, EdgeProcess, ffmpeg_publish, http_get, wait_for

HLS_JS = REPO / "build" / "web" / "hls.min.js"  # fetched by `make test` (npm pack hls.js)
KEY = "browser-key"

PAGE = """<!doctype html><html><body>
<video id="v" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script>
const report = (o) => fetch('/result', {method: 'POST', body: JSON.stringify(o)});
const v = document.getElementById('v');
let levels = [];
let sent = false;
if (!Hls.isSupported()) { report({ok: false, error: 'MSE not supported'}); }
const hls = new Hls();
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  levels = d.levels.map(l => ({w: l.width, h: l.height, codecs: (l.videoCodec || '') + ',' + (l.audioCodec || '')}));
});
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal && !sent) { sent = true; report({ok: false, error: d.details}); } });
hls.loadSource(SRC);
hls.attachMedia(v);
v.play().catch(() => {});
// media time where playback began: hls.js starts near the live edge (with LL-HLS parts, PART-HOLD-BACK from it)
let start = null;
v.addEventListener('playing', () => { if (start === null) start = v.currentTime; });
setInterval(() => {
  if (!sent && start !== null && v.currentTime - start > 4) {
    sent = true;
    report({ok: true, t: v.currentTime - start, w: v.videoWidth, h: v.videoHeight, levels: levels,
            decoded: v.getVideoPlaybackQuality().totalVideoFrames,
            dropped: v.getVideoPlaybackQuality().droppedVideoFrames});
  }
}, 250);
</script></body></html>"""


class _PageServer:
    def __init__(self, source: str) -> None:
        self.results: list[dict] = []
        page = PAGE.replace("SRC", json.dumps(source)).encode()
        results = self.results

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body, ctype = (HLS_JS.read_bytes(), "text/javascript") if self.path == "/hls.min.js" else (page, "text/html")
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                results.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def browser() -> Iterator[str]:
    exe = shutil.which("chromium")
    if exe is None or not HLS_JS.exists():
        pytest.fail("headless Chromium and hls.js are required (make test installs both)")
    yield exe


def test_hlsjs_in_chromium_plays_the_live_stream(tmp_path: Path, browser: str) -> None:
    edge = EdgeProcess(tmp_path / "edge", {"web": KEY}).start()
    pub = ffmpeg_publish(edge.rtmp_url(KEY), seconds=25)
    page: _PageServer | None = None
    chrome: subprocess.Popen[bytes] | None = None
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        wait_for(lambda: http_get(f"{edge.http}/live/web/source/index.m3u8")[2].count(b"#EXTINF") >= 2, 30,
                 "two segments")
        page = _PageServer(f"{edge.http}/live/web/master.m3u8")
        chrome = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}", page.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = wait_for(lambda: page.results, 45, "the browser's playback report")[0]
    finally:
        if chrome is not None:
            chrome.kill()
            chrome.wait(10)
        if page is not None:
            page.close()
        pub.kill()
        pub.communicate()
        edge.stop()
        shutil.rmtree(profile, ignore_errors=True)
    assert result["ok"], result
    assert (result["w"], result["h"]) == (640, 360)
    assert result["t"] > 4 and result["decoded"] > 60
    assert result["levels"] and result["levels"][0]["w"] == 640
    assert "avc1" in result["levels"][0]["codecs"] and "mp4a.40.2" in result["levels"][0]["codecs"]
