"""Low-Latency HLS test and bench helpers: a publisher, a media playlist reader, a capture that follows a
live playlist with blocking reloads, and a headless Chromium + hls.js player that reports what it did.

* `publish()`: Debian's ffmpeg sends a test pattern with a tone in real time (`-re`), a keyframe every
  `gop_seconds`, no B-frames, AAC audio, as an encoder configured for low latency would.
* `parse_media()`: the tags an LL-HLS checker needs, read line by line (our own reading; tests also read
  every playlist with the `m3u8` library as a cross-check).
* `BlockingCapture`: one rendition's playlist, first plainly, then always asking for the next part with
  `_HLS_msn`/`_HLS_part` (as hls.js does in low-latency mode), so every part is seen as it is published,
  with the wall time each answer arrived.
* `PageServer` + `Chromium`: a page on 127.0.0.1 plays a stream with hls.js and posts its state every
  second (samples of `Date.now() - hls.playingDate`, `hls.latency`, the playhead; parts and segments
  loaded; the requests it made, by kind; `waiting` events and buffer stalls; errors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HLS_JS = REPO / "build" / "web" / "hls.min.js"  # fetched by `make test` (npm pack hls.js)

_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
PART_URI_RE = re.compile(r"(?:^|/)(\d+)\.(\d+)\.m4s$")
SEGMENT_URI_RE = re.compile(r"(?:^|/)(\d+)\.(?:m4s|ts)$")


def publish(url: str, seconds: float, *, size: str = "640x360", rate: int = 30, gop_seconds: float = 2.0,
            bitrate: str = "1000k", fmt: str = "flv") -> subprocess.Popen[bytes]:
    """ffmpeg publishing a test pattern with a 440 Hz tone in real time: H.264 (libx264 ultrafast,
    zerolatency, no B-frames, a keyframe exactly every `gop_seconds`, no scene-cut keyframes) + AAC."""
    gop = max(1, round(rate * gop_seconds))
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", bitrate,
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "96k", "-f", fmt, url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(p: subprocess.Popen[bytes] | None) -> None:
    """Ends a process this module started (by its Popen handle), pipes closed."""
    if p is None:
        return
    if p.poll() is None:
        p.terminate()
    try:
        p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()


def attrs(text: str) -> dict[str, str]:
    """An attribute list (RFC 8216 4.2), quotes stripped."""
    return {k: v[1:-1] if v.startswith('"') else v for k, v in _ATTR_RE.findall(text)}


def parse_pdt(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class PartEntry:
    duration: float
    uri: str
    independent: bool = False
    gap: bool = False


@dataclass
class SegEntry:
    seq: int
    duration: float | None  # None: the segment in progress (its parts only)
    uri: str | None
    pdt: float | None = None  # from an EXT-X-PROGRAM-DATE-TIME in this segment's own lines
    discontinuity: bool = False
    map_uri: str | None = None  # EXT-X-MAP in effect
    parts: list[PartEntry] = field(default_factory=list)


@dataclass
class Media:
    text: str
    version: int | None = None
    target_duration: int | None = None
    part_target: float | None = None
    server_control: str | None = None  # the tag's attribute text, as sent
    media_sequence: int = 0
    disc_sequence: int = 0
    skipped: int = 0
    segments: list[SegEntry] = field(default_factory=list)  # complete segments, in order
    pending: SegEntry | None = None  # parts after the last complete segment
    hints: list[dict[str, str]] = field(default_factory=list)
    reports: list[dict[str, str]] = field(default_factory=list)
    ended: bool = False
    maps: list[str] = field(default_factory=list)

    @property
    def control(self) -> dict[str, str]:
        return attrs(self.server_control or "")

    def all_parts(self) -> list[tuple[int, int, PartEntry]]:
        out = [(s.seq, i, p) for s in self.segments for i, p in enumerate(s.parts)]
        if self.pending is not None:
            out += [(self.pending.seq, i, p) for i, p in enumerate(self.pending.parts)]
        return out

    def next_part(self) -> tuple[int, int]:
        """(_HLS_msn, _HLS_part) of the part after the last one listed, as a low-latency client asks."""
        if self.pending is not None and self.pending.parts:
            return self.pending.seq, len(self.pending.parts)
        last = self.segments[-1].seq if self.segments else self.media_sequence - 1
        return last + 1, 0

    def position(self) -> tuple[int, int]:
        """(MSN, part index) of the last part listed, or (last segment, 1 << 30) when none is in progress."""
        if self.pending is not None and self.pending.parts:
            return self.pending.seq, len(self.pending.parts) - 1
        last = self.segments[-1].seq if self.segments else self.media_sequence - 1
        return last, 1 << 30


def parse_media(text: str) -> Media:
    """A media playlist, tag by tag. Raises ValueError on a line it cannot place (a URI with no
    EXTINF, an unparsable number)."""
    m = Media(text=text)
    lines = text.splitlines()
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("no #EXTM3U")
    seq: int | None = None
    cur = SegEntry(seq=-1, duration=None, uri=None)
    map_uri: str | None = None
    extinf: float | None = None
    for line in lines[1:]:
        if not line:
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            m.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            m.target_duration = int(value)
        elif tag == "#EXT-X-PART-INF":
            m.part_target = float(attrs(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            m.server_control = value
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            m.media_sequence = int(value)
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            m.disc_sequence = int(value)
        elif tag == "#EXT-X-SKIP":
            m.skipped = int(attrs(value)["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-MAP":
            map_uri = attrs(value)["URI"]
            m.maps.append(map_uri)
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            cur.pdt = parse_pdt(value)
        elif tag == "#EXT-X-DISCONTINUITY":
            cur.discontinuity = True
        elif tag == "#EXT-X-PART":
            a = attrs(value)
            cur.parts.append(PartEntry(float(a["DURATION"]), a["URI"], a.get("INDEPENDENT") == "YES",
                                       a.get("GAP") == "YES"))
        elif tag == "#EXTINF":
            extinf = float(value.split(",", 1)[0])
        elif tag == "#EXT-X-PRELOAD-HINT":
            m.hints.append(attrs(value))
        elif tag == "#EXT-X-RENDITION-REPORT":
            m.reports.append(attrs(value))
        elif tag == "#EXT-X-ENDLIST":
            m.ended = True
        elif not line.startswith("#"):
            if extinf is None:
                raise ValueError(f"URI without EXTINF: {line!r}")
            seq = m.media_sequence + m.skipped if seq is None else seq + 1
            cur.seq, cur.duration, cur.uri, cur.map_uri = seq, extinf, line, map_uri
            m.segments.append(cur)
            cur, extinf = SegEntry(seq=-1, duration=None, uri=None), None
    if cur.parts or cur.pdt is not None or cur.discontinuity:
        cur.seq = (m.media_sequence + m.skipped if seq is None else seq + 1)
        cur.map_uri = map_uri
        m.pending = cur
    return m


def get(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@dataclass
class Snapshot:
    sent: float  # time.monotonic() when the request went out
    received: float  # ... and when its answer was complete
    wall: float  # time.time() at `received`
    query: str
    status: int
    text: str
    media: Media | None = None


class BlockingCapture(threading.Thread):
    """Follows one media playlist for `seconds` (from `start()`): a plain GET, then blocking reloads for
    the next part each time. Every answer is kept, in order; 503 answers (held past 3 target durations)
    are kept too and retried."""

    def __init__(self, url: str, seconds: float, request_timeout: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seconds = seconds
        self.request_timeout = request_timeout
        self.snapshots: list[Snapshot] = []
        self.errors: list[str] = []
        self.deadline = 0.0
        self.halt = threading.Event()

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds
        super().start()

    def run(self) -> None:
        query = ""
        while not self.halt.is_set() and time.monotonic() < self.deadline:
            sent = time.monotonic()
            try:
                status, _, body = get(self.url + query, timeout=self.request_timeout)
            except OSError as exc:
                self.errors.append(f"{query}: {exc!r}")
                time.sleep(0.1)
                continue
            snap = Snapshot(sent, time.monotonic(), time.time(), query, status, body.decode(errors="replace"))
            self.snapshots.append(snap)
            if status != 200:
                if status != 503:
                    self.errors.append(f"{query}: HTTP {status} {snap.text[:200]!r}")
                    time.sleep(0.1)
                continue
            try:
                snap.media = parse_media(snap.text)
            except (ValueError, KeyError) as exc:
                self.errors.append(f"{query}: unparsable playlist ({exc}): {snap.text[:300]!r}")
                time.sleep(0.1)
                continue
            if snap.media.ended:
                break
            msn, part = snap.media.next_part()
            nxt = f"?_HLS_msn={msn}&_HLS_part={part}"
            if nxt == query:
                time.sleep(0.05)  # answered without the part asked for (old or odd): no hot loop
            query = nxt

    def playlists(self) -> list[tuple[Snapshot, Media]]:
        return [(s, s.media) for s in self.snapshots if s.media is not None]


# -- a browser playing with hls.js --------------------------------------------------------------------------

PAGE = """<!doctype html><html><body>
<video id="v" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script>
const CFG = __CFG__;
const v = document.getElementById('v');
const st = {id: CFG.id, done: false, fatal: null, errors: {}, samples: [], parts: 0, frags: 0, partUris: [],
  requests: {blocking: 0, playlist: 0, part: 0, segment: 0, init: 0, other: 0}, waiting: 0, stalled: 0,
  stallSeconds: 0, playingSince: null, w: 0, h: 0, levels: [], partTarget: null, canBlockReload: null,
  lowLatencyMode: null, started: Date.now(), decoded: 0, dropped: 0};
let waitingAt = null;
const post = () => fetch('/result/' + CFG.id, {method: 'POST', body: JSON.stringify(st)}).catch(() => {});
const classify = (url) => {
  const path = url.split('?')[0];
  if (url.includes('_HLS_msn=')) st.requests.blocking++;
  else if (path.endsWith('.m3u8')) st.requests.playlist++;
  else if (/\\/\\d+\\.\\d+\\.m4s$/.test(path)) st.requests.part++;
  else if (/\\/\\d+\\.(m4s|ts)$/.test(path)) st.requests.segment++;
  else if (path.endsWith('.mp4')) st.requests.init++;
  else st.requests.other++;
};
const finish = () => { st.done = true; post(); };
if (!Hls.isSupported()) { st.fatal = 'MSE not supported'; finish(); }
const hls = new Hls(Object.assign({}, CFG.hls, {xhrSetup: (xhr, url) => { classify(url); }}));
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  st.levels = d.levels.map(l => ({w: l.width, h: l.height, codecs: (l.videoCodec || '') + ',' + (l.audioCodec || '')}));
});
hls.on(Hls.Events.LEVEL_LOADED, (e, d) => {
  st.partTarget = d.details.partTarget; st.canBlockReload = d.details.canBlockReload;
  st.lowLatencyMode = hls.lowLatencyMode;
});
hls.on(Hls.Events.FRAG_LOADED, (e, d) => {
  if (d.part) { st.parts++; if (st.partUris.length < 50) st.partUris.push(d.part.relurl); } else { st.frags++; }
});
hls.on(Hls.Events.ERROR, (e, d) => {
  st.errors[d.details] = (st.errors[d.details] || 0) + 1;
  if (d.details === 'bufferStalledError') st.stalled++;
  if (d.fatal && !st.fatal) { st.fatal = d.details; finish(); }
});
v.addEventListener('playing', () => {
  if (st.playingSince === null) st.playingSince = Date.now();
  if (waitingAt !== null) { st.stallSeconds += (Date.now() - waitingAt) / 1000; waitingAt = null; }
});
v.addEventListener('waiting', () => { if (st.playingSince !== null) { st.waiting++; waitingAt = Date.now(); } });
hls.loadSource(CFG.src);
hls.attachMedia(v);
v.play().catch(() => {});
setInterval(() => {
  if (st.done) return;
  const now = Date.now();
  const pd = hls.playingDate;
  let ahead = 0;
  for (let i = 0; i < v.buffered.length; i++) {
    if (v.buffered.start(i) <= v.currentTime && v.currentTime <= v.buffered.end(i)) ahead = v.buffered.end(i) - v.currentTime;
  }
  st.samples.push({t: now, ct: v.currentTime, pdt: pd ? pd.getTime() : null, lat: hls.latency,
                   target: hls.targetLatency, ahead: ahead, rate: v.playbackRate, paused: v.paused});
  st.w = v.videoWidth; st.h = v.videoHeight;
  const q = v.getVideoPlaybackQuality(); st.decoded = q.totalVideoFrames; st.dropped = q.droppedVideoFrames;
  if (st.playingSince !== null && now - st.playingSince >= CFG.seconds * 1000) { finish(); } else { post(); }
}, 1000);
</script></body></html>"""


class PageServer:
    """Serves hls.js and one page per player (`add()`), and keeps the latest state each page posted."""

    def __init__(self) -> None:
        if not HLS_JS.exists():
            raise FileNotFoundError(f"{HLS_JS} (make test fetches hls.js)")
        self.pages: dict[str, bytes] = {}
        self.states: dict[str, dict[str, Any]] = {}
        hls_js = HLS_JS.read_bytes()
        pages, states = self.pages, self.states

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/hls.min.js":
                    body, ctype = hls_js, "text/javascript"
                elif self.path.lstrip("/") in pages:
                    body, ctype = pages[self.path.lstrip("/")], "text/html"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                data = json.loads(self.rfile.read(n))
                states[self.path.rsplit("/", 1)[-1]] = data
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, pid: str, src: str, seconds: float, hls_config: dict[str, Any]) -> str:
        """A page that plays `src` for `seconds` of playback with hls.js `hls_config`; its URL."""
        cfg = {"id": pid, "src": src, "seconds": seconds, "hls": hls_config}
        self.pages[pid] = PAGE.replace("__CFG__", json.dumps(cfg)).encode()
        return self.base + pid

    def state(self, pid: str) -> dict[str, Any] | None:
        return self.states.get(pid)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Chromium:
    """Headless Chromium on one page, with its own throwaway profile; `close()` ends it by its PID."""

    def __init__(self, url: str) -> None:
        exe = shutil.which("chromium")
        if exe is None:
            raise FileNotFoundError("chromium (make test installs it)")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def play(server: PageServer, pid: str, src: str, seconds: float, hls_config: dict[str, Any],
         startup: float = 45.0) -> dict[str, Any]:
    """Chromium plays `src` until hls.js has played `seconds` (or a fatal error): the page's last state.
    Raises AssertionError when the page never finished within `startup` + `seconds` + 15 s."""
    browser = Chromium(server.add(pid, src, seconds, hls_config))
    try:
        deadline = time.monotonic() + startup + seconds + 15
        while time.monotonic() < deadline:
            st = server.state(pid)
            if st is not None and st.get("done"):
                return st
            if browser.proc.poll() is not None:
                raise AssertionError(f"chromium exited ({browser.proc.returncode}); last state {st}")
            time.sleep(0.25)
        raise AssertionError(f"the page did not finish in time; last state {server.state(pid)}")
    finally:
        browser.close()


def played(st: dict[str, Any], settle: float = 0.0) -> list[dict[str, Any]]:
    """The samples taken while playing, `settle` seconds after playback began."""
    since = st.get("playingSince")
    if since is None:
        return []
    return [s for s in st["samples"] if s["t"] >= since + settle * 1000]


def latencies(st: dict[str, Any], settle: float = 5.0) -> tuple[list[float], list[float]]:
    """(Date.now() - playhead's program date time, hls.latency) in seconds, per sample after `settle`."""
    samples = played(st, settle)
    wall = [(s["t"] - s["pdt"]) / 1000 for s in samples if s.get("pdt")]
    hls = [float(s["lat"]) for s in samples if isinstance(s.get("lat"), int | float)]
    return wall, hls


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank, inclusive); nan without values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def resolve(base: str, uri: str) -> str:
    return urllib.parse.urljoin(base, uri)
