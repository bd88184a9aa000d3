"""Serving benchmark: edged's HTTP front against nginx serving the same bytes from files, in the same run (issue 13).

Real processes on 127.0.0.1. One standalone edge (`edged run --no-srt --no-transcode`, a channel key); Debian's
ffmpeg publishes a live 1920x1080 30 fps test pattern over RTMP with `-re` (libx264 ultrafast/zerolatency,
6 Mb/s CBR, a keyframe every 2 s, AAC), so each 2 s segment is ~1.5 MB. Default CMAF (segments `N.m4s`, LL-HLS
media playlists); `--hls-format ts` for MPEG-TS (plain HLS).
Reference: nginx (Debian nginx-light; installed with apt-get when missing) with its own prefix and config in a
temp dir, `daemon off; master_process on`, sendfile on, tcp_nopush on, access_log off, keep-alive (1,000,000
requests a connection), one instance with `worker_processes 1` and one with `auto`, both serving the same
root directory at the same URL paths as edged.

1. wrk (Debian) `-t2 -c64 -d15s --latency` against a segment of the live stream, its media playlist and its
   master playlist: the bytes are copied out of edged into nginx's root right before each target's runs, and
   each target is run on nginx (1 worker), edged, nginx (auto) and nginx (1 worker) again, so nginx comes first
   and last and the difference between its two runs shows the noise. Per run: req/s, MB/s (body and headers as
   wrk counts them, 10^6 bytes), latency p50/p99 (wrk's distribution), errors (non-2xx and socket errors), the
   server's CPU seconds over the run (utime + stime from /proc/PID/stat of the server's process tree: the
   nginx master and its workers; edged and its children, the ingest pipeline worker included, whose idle
   rate measured before the runs is subtracted as "ingest baseline"), req/s per server core (requests / CPU
   seconds) and peak RSS. Ratios edged / nginx (1 worker: the mean of its first and last run; and auto).
2. While wrk saturates edged: a side client (a new connection each time, 1 request every 100 ms) times
   `/metrics` and another `/healthz`: p50/p99/max (those requests are in edged's CPU figure).
3. Simulated viewers (--viewers, default 200,1000; one asyncio aiohttp client, a connection pool bounded at one
   keep-alive connection per viewer, segment bodies read in chunks and dropped): each viewer joins at the live
   edge (the joins spread over --ramp s, default 4; figures count only after the ramp), polls the media
   playlist every second (or, with --blocking and CMAF, LL-HLS blocking reloads `_HLS_msn=<next>` against
   edged) and fetches each new segment in turn.
   Against edged, and against nginx (1 worker) serving a live copy: a copier thread in this process mirrors
   edged's media playlist and the segments (and init section) it lists into nginx's root every 200 ms over
   HTTP (segments first, each written to a temp name and renamed, then the playlist), so nginx lags edged by
   up to ~200 ms plus a copy. Per phase: the server's CPU (% of one core), RSS (VmRSS summed over its
   processes, sampled every 200 ms: before, peak, and 3 s after), p50/p99 playlist and segment latency (time
   to the last byte; with --blocking the held reloads are reported apart), delivery lag (every 500 ms, for each
   viewer: the newest segment listed by the server, polled every 100 ms by a tracker thread, minus the newest
   the viewer has fetched, in segments: p99 and max) and this client's own CPU (near 100 % of a core means
   the client, not the server, was the limit). /metrics and /healthz are timed during the edged phases too.
   `--gzip`: viewers send Accept-Encoding: gzip (edged gzips playlists; the live copy gets index.m3u8.gz, served
   by nginx's gzip_static); by default no Accept-Encoding, as wrk.
Goals (issue 13), per server core against nginx (1 worker) in the same run: media and master playlists >= 0.5x,
segments >= 0.9x, /metrics p99 < 20 ms under wrk; at 1,000 viewers, p99 playlist latency < 50 ms, no viewer more
than one segment behind, peak RSS < 1 GiB. wrk, ffmpeg, the client and both servers share this machine's cores.

    .venv/bin/python bench/serve.py [--seconds 15] [--viewers 200,1000] [--viewer-seconds 60] [--hls-format ts]
                                    [--ramp 4] [--blocking] [--gzip] [--threads 2] [--connections 64]
                                    [--no-viewers] [--no-wrk] [--keep]
    .venv/bin/python bench/serve.py --seconds 5 --viewers 200       # a quick check (about 2 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.relay import free_port, http_get, pct  # noqa: E402
from tests.integration.procs import EdgeProcess  # noqa: E402

KEY = "bench-serve-key"
CHANNEL = "news"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEGMENT_SECONDS = 2.0
COPY_EVERY = 0.2  # s between the live copier's passes
TRACK_EVERY = 0.1  # s between the tracker's polls of the newest segment
LAG_EVERY = 0.5  # s between delivery-lag samples
_MAP_RE = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


# --- process accounting -------------------------------------------------------------------------------------

def tree_pids(root: int) -> list[int]:
    """root and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of root's process tree, reaped children included (cutime + cstime)."""
    ticks = 0
    for p in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in f[11:15])
    return ticks / CLK_TCK


def tree_mem(root: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) summed over root's process tree, bytes (file pages such as LMDB's map are in VmRSS only,
    and are counted once per process that maps them)."""
    rss = anon = 0
    for p in tree_pids(root):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) * 1024
    return rss, anon


def tree_rss(root: int) -> int:
    return tree_mem(root)[0]


def box_jiffies() -> tuple[int, int, int]:
    """(busy, all, steal) jiffies of the whole machine, all CPUs, from /proc/stat."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(f[:8])
    return total - f[3] - f[4], total, f[7]


class Usage:
    """CPU seconds, wall seconds and peak RSS of a server's process tree over a `with` block."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every = pid, every
        self.cpu = self.wall = 0.0
        self.rss0 = self.peak = self.peak_anon = 0
        self.box_busy = self.box_steal = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self._note()

    def _note(self) -> None:
        rss, anon = tree_mem(self.pid)
        self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)

    def __enter__(self) -> Usage:
        self.rss0 = tree_rss(self.pid)
        self._note()
        self._cpu0, self._t0 = tree_cpu(self.pid), time.monotonic()
        self._box0 = box_jiffies()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = tree_cpu(self.pid) - self._cpu0
        b1 = box_jiffies()
        busy, total, steal = (b - a for a, b in zip(self._box0, b1, strict=True))
        self.box_busy, self.box_steal = busy / max(1, total), steal / max(1, total)  # of all CPUs
        self.wall = time.monotonic() - self._t0
        self._stop.set()
        self._thread.join()
        self._note()


# --- tools ----------------------------------------------------------------------------------------------------

def ensure_tool(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    print(f"{binary} not found: apt-get install {package}", flush=True)
    done = subprocess.run(f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}",
                          shell=True, capture_output=True, text=True)
    if done.returncode != 0 or not shutil.which(binary):
        sys.exit(f"{binary} is required (apt-get install {package}): {done.stderr.strip()[-300:]}")


def publish(url: str, log: Path) -> subprocess.Popen[bytes]:
    """A live 1080p30 test pattern at 6 Mb/s CBR (filler included, so segments are ~1.5 MB), a keyframe every 2 s."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
             "-f", "lavfi", "-i", "testsrc=size=1920x1080:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "6000k", "-maxrate", "6000k",
             "-bufsize", "6000k", "-x264-params", "nal-hrd=cbr:force-cfr=1", "-g", "60", "-keyint_min", "60",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv", url],
            stdout=subprocess.DEVNULL, stderr=out)


class Nginx:
    """nginx with its own prefix and config, serving `root` on a free 127.0.0.1 port."""

    def __init__(self, work: Path, name: str, root: Path, workers: str) -> None:
        self.prefix = work / name
        (self.prefix / "logs").mkdir(parents=True)
        self.port = free_port()
        self.workers = workers
        user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must reach the (0700) work dir
        conf = self.prefix / "nginx.conf"
        conf.write_text(f"""daemon off;
master_process on;
{user}worker_processes {workers};
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  gzip_static on;
  client_body_temp_path {self.prefix}/body_temp;
  proxy_temp_path {self.prefix}/proxy_temp;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp4 m4s mp4; video/mp2t ts; }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
    add_header Access-Control-Allow-Origin * always;
    location ~ \\.m3u8$ {{ add_header Cache-Control "max-age=1" always; add_header Access-Control-Allow-Origin * always; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(self.prefix), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited; see {self.prefix}/logs/error.log")
            if http_get(self.base + "/", timeout=1)[0] in (200, 403, 404):
                return
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer; see {self.prefix}/logs/error.log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- wrk ------------------------------------------------------------------------------------------------------

_UNITS_T = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS_B = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass
class WrkRun:
    server: str
    target: str
    requests: int = 0
    seconds: float = 0.0
    nbytes: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    errors: int = 0
    cpu: float = 0.0  # server CPU seconds over the run (ingest baseline subtracted for edged)
    cpu_raw: float = 0.0
    peak_rss: int = 0
    peak_anon: int = 0
    box_busy: float = 0.0  # the whole machine, all CPUs
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds else math.nan

    @property
    def per_core(self) -> float:
        return self.requests / self.cpu if self.cpu > 0 else math.nan


def wrk(url: str, args: argparse.Namespace, run: WrkRun) -> WrkRun:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "--timeout", "10s",
           url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
    out = done.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    if done.returncode != 0 or m is None:
        run.note = f"wrk failed: {(done.stderr or out).strip()[-200:]}"
        return run
    run.requests = int(m.group(1))
    run.seconds = float(m.group(2)) * _UNITS_T[m.group(3)]
    run.nbytes = float(m.group(4)) * _UNITS_B[m.group(5)]
    for q in ("50", "99"):
        lm = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if lm:
            setattr(run, f"p{q}", float(lm.group(1)) * _UNITS_T[lm.group(2)])
    if nm := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        run.errors += int(nm.group(1))
    if sm := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        run.errors += sum(int(x) for x in sm.groups())
    return run


class SideClient(threading.Thread):
    """GET `path` on a new connection every `period` s; the time to the whole answer (a failure counts as its time)."""

    def __init__(self, port: int, path: str, period: float = 0.1, timeout: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.period, self.timeout = port, path, period, timeout
        self.times: list[float] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
            finally:
                conn.close()
            self.times.append(time.perf_counter() - t0)
            self.halt.wait(max(0.0, t0 + self.period - time.perf_counter()))

    def finish(self) -> SideClient:
        self.halt.set()
        self.join()
        return self


def ms(v: float) -> str:
    return "    -  " if math.isnan(v) else f"{v * 1000:7.1f}"


def side_summary(c: SideClient) -> str:
    t = c.times
    fail = f", {c.failures} failed" if c.failures else ""
    return (f"{c.path:9} p50 {ms(pct(t, 50))} ms  p99 {ms(pct(t, 99))} ms  max {ms(max(t) if t else math.nan)} ms"
            f"  (n={len(t)}{fail})")


# --- live stream helpers --------------------------------------------------------------------------------------

def segment_names(playlist: str) -> list[str]:
    """The full segments a media playlist lists (URI lines), in order."""
    return [ln.strip() for ln in playlist.splitlines() if ln.strip() and not ln.startswith("#")]


def seq_of(name: str) -> int:
    return int(name.split(".", 1)[0])


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Tracker(threading.Thread):
    """The newest full segment a media playlist lists, polled every TRACK_EVERY s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.newest = -1
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            status, body = http_get(self.url, timeout=5)
            if status == 200 and (names := segment_names(body.decode(errors="replace"))):
                self.newest = max(self.newest, seq_of(names[-1]))
            self.halt.wait(TRACK_EVERY)


class Copier(threading.Thread):
    """The live copy nginx serves: every COPY_EVERY s, edged's media playlist and what it lists (segments, init)
    are fetched over HTTP into nginx's root (segments first, then the playlist; each written and renamed)."""

    def __init__(self, edge_base: str, media_path: str, root: Path, gz: bool) -> None:
        super().__init__(daemon=True)
        self.edge_base, self.media_path, self.gz = edge_base, media_path, gz
        self.dir = root / media_path.lstrip("/").rsplit("/", 1)[0]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.have: set[str] = set()
        self.passes = self.errors = 0
        self.halt = threading.Event()

    def step(self) -> None:
        status, body = http_get(self.edge_base + self.media_path, timeout=5)
        if status != 200:
            self.errors += 1
            return
        text = body.decode(errors="replace")
        names = segment_names(text)
        wanted = names + _MAP_RE.findall(text)
        for name in wanted:
            if name in self.have:
                continue
            st, data = http_get(f"{self.edge_base}{self.media_path.rsplit('/', 1)[0]}/{name}", timeout=10)
            if st != 200:
                self.errors += 1
                return  # the playlist is written only once all it lists is here
            write_atomic(self.dir / name, data)
            self.have.add(name)
        if self.gz:
            write_atomic(self.dir / "index.m3u8.gz", gzip.compress(body, 6))
        write_atomic(self.dir / "index.m3u8", body)
        self.passes += 1
        if names:  # drop segments well out of the window (a viewer may still be fetching a recent one)
            floor = seq_of(names[0]) - len(names)
            for name in [n for n in self.have if not n.startswith("init") and seq_of(n) < floor]:
                self.have.discard(name)
                with contextlib.suppress(OSError):
                    (self.dir / name).unlink()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                self.step()
            except OSError:
                self.errors += 1
            self.halt.wait(max(0.0, t0 + COPY_EVERY - time.monotonic()))


# --- simulated viewers ------------------------------------------------------------------------------------------

@dataclass
class ViewerStats:
    playlist: list[float] = field(default_factory=list)  # s to the whole playlist (non-blocking requests)
    held: list[float] = field(default_factory=list)  # s a blocking reload took (the hold included)
    segment: list[float] = field(default_factory=list)  # s to a segment's last byte
    lag: list[int] = field(default_factory=list)  # segments behind the newest listed, sampled
    max_lag_by_viewer: list[int] = field(default_factory=list)
    errors: int = 0
    skipped: int = 0  # segments a viewer never fetched (out of the window before it got there)
    segments: int = 0
    nbytes: int = 0
    client_cpu: float = 0.0  # this process's CPU over the phase, % of a core
    loop_lag: list[float] = field(default_factory=list)  # s a 10 ms sleep in the client's event loop overran


async def run_viewers(base: str, media_path: str, n: int, seconds: float, ramp: float, blocking: bool, gz: bool,
                      tracker: Tracker) -> ViewerStats:
    """n viewers for `seconds`, joining over the first `ramp` s; what they see is counted after the ramp."""
    st = ViewerStats()
    last: list[int | None] = [None] * n
    worst = [0] * n
    loop = asyncio.get_running_loop()
    warm, deadline = loop.time() + ramp, loop.time() + seconds
    media_url = base + media_path
    seg_base = media_url.rsplit("/", 1)[0] + "/"
    headers = {"Accept-Encoding": "gzip"} if gz else {}
    skip = () if gz else ("Accept-Encoding",)
    connector = aiohttp.TCPConnector(limit=n + 4, limit_per_host=n + 4, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)

    async def viewer(i: int, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(i / n * ramp)  # joins staggered, as real viewers are not in phase
        next_poll = loop.time()
        while loop.time() < deadline:
            cur = last[i]
            url = media_url if not (blocking and cur is not None) else f"{media_url}?_HLS_msn={cur + 1}"
            t0, counted = time.perf_counter(), loop.time() >= warm
            try:
                async with session.get(url, headers=headers) as r:
                    body = await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok, body = False, b""
            dt = time.perf_counter() - t0
            if counted:
                (st.held if url != media_url else st.playlist).append(dt)
            if not ok:
                st.errors += counted
                await asyncio.sleep(0.5)
                continue
            listed = [(seq_of(name), name) for name in segment_names(body.decode(errors="replace"))]
            todo = listed[-1:] if cur is None else [(s, name) for s, name in listed if s > cur]
            if counted and cur is not None and todo and todo[0][0] > cur + 1:
                st.skipped += todo[0][0] - cur - 1
            for s, name in todo:
                if loop.time() >= deadline:
                    break
                t0, counted = time.perf_counter(), loop.time() >= warm
                got = 0
                try:
                    async with session.get(seg_base + name) as r:
                        async for chunk in r.content.iter_any():
                            got += len(chunk)
                        ok = r.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                if counted:
                    st.segment.append(time.perf_counter() - t0)
                if not ok:
                    st.errors += counted
                    continue
                if counted:
                    st.segments += 1
                    st.nbytes += got
                last[i] = s
            if blocking:
                if not todo:
                    await asyncio.sleep(0.1)  # answered without a new full segment (a part): ask again shortly
                continue
            next_poll = max(next_poll + 1.0, loop.time())  # late (a slow segment): reload at once
            await asyncio.sleep(max(0.0, next_poll - loop.time()))

    async def sample() -> None:
        while loop.time() < deadline:
            await asyncio.sleep(LAG_EVERY)
            newest = tracker.newest
            if loop.time() < warm:
                continue
            for i, v in enumerate(last):
                if v is not None and newest >= 0:
                    lag = max(0, newest - v)
                    st.lag.append(lag)
                    worst[i] = max(worst[i], lag)

    async def loop_lag() -> None:  # the client's own delay: a busy loop adds it to every figure above
        while loop.time() < deadline:
            t = loop.time()
            await asyncio.sleep(0.01)
            if t >= warm:
                st.loop_lag.append(loop.time() - t - 0.01)

    cpu0 = time.process_time()
    t_start = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=skip,
                                     read_bufsize=1 << 20) as session:
        helpers = [asyncio.create_task(sample()), asyncio.create_task(loop_lag())]
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(viewer(i, session)) for i in range(n)]
        _, pending = await asyncio.wait(tasks, timeout=seconds + 10)
        for t in [*pending, *helpers]:
            t.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
    st.client_cpu = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - t_start)
    st.max_lag_by_viewer = worst
    return st


# --- phases -----------------------------------------------------------------------------------------------------

def fetch(url: str) -> bytes:
    status, body = http_get(url, timeout=10)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status}")
    return body


def wait_for(check: Any, what: str, within: float = 90) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if got := check():
                return got
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


SERVERS = ("nginx 1 worker (first)", "edged", "nginx auto", "nginx 1 worker (last)")
TARGETS = ("segment", "media playlist", "master playlist")


def wrk_phase(args: argparse.Namespace, edge: EdgeProcess, ng1: Nginx, nga: Nginx, root: Path, media_path: str,
              master_path: str, baseline: float) -> tuple[list[WrkRun], dict[str, list[SideClient]], dict[str, str]]:
    runs: list[WrkRun] = []
    sides: dict[str, list[SideClient]] = {}
    what: dict[str, str] = {}
    media_dir = media_path.rsplit("/", 1)[0]
    for target in TARGETS:
        if target == "segment":
            path = f"{media_dir}/{segment_names(fetch(edge.http + media_path).decode())[-1]}"
        else:
            path = media_path if target == "media playlist" else master_path
        data = fetch(edge.http + path)
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, data)
        for ng in (ng1, nga):
            if fetch(ng.base + path) != data:
                raise RuntimeError(f"nginx does not serve the bytes copied to {dest}")
        what[target] = f"{path} ({len(data):,} bytes)"
        print(f"wrk against the {target} {what[target]}: {', '.join(SERVERS)} ...", flush=True)
        for label in SERVERS:
            server: Any = edge if label == "edged" else nga if label == "nginx auto" else ng1
            is_edge = server is edge
            base = edge.http if is_edge else server.base
            run = WrkRun(label, target)
            side = [SideClient(edge.http_port, "/metrics"), SideClient(edge.http_port, "/healthz")] if is_edge else []
            for c in side:
                c.start()
            assert server.proc is not None
            with Usage(server.proc.pid) as u:
                wrk(base + path, args, run)
            for c in side:
                c.finish()
            if side:
                sides[target] = side
            run.cpu_raw = u.cpu
            run.cpu = max(1e-9, u.cpu - baseline * u.wall) if is_edge else u.cpu
            run.peak_rss, run.peak_anon, run.box_busy = u.peak, u.peak_anon, u.box_busy
            runs.append(run)
    return runs, sides, what


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def x(v: float) -> str:
    return "  -  " if math.isnan(v) else f"{v:5.2f}x"


def report_wrk(args: argparse.Namespace, runs: list[WrkRun], sides: dict[str, list[SideClient]],
               what: dict[str, str], baseline: float) -> dict[str, float]:
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.seconds}s --latency (edged's ingest baseline "
          f"{baseline * 100:.1f} % of a core, measured idle with the stream on, is subtracted from its CPU):")
    head = (f"{'target':16} {'server':24} {'req/s':>9} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
            f"{'cpu s':>6} {'req/core-s':>10} {'RSS MiB':>7} {'anon':>5} {'machine':>7}")
    print(head)
    print("-" * len(head))
    for r in runs:
        print(f"{r.target:16} {r.server:24} {r.rps:9.0f} {r.mbps:8.1f} {ms(r.p50)} {ms(r.p99)} {r.errors:6d} {r.cpu:6.2f} "
              f"{r.per_core:10.0f} {r.peak_rss / 2**20:7.0f} {r.peak_anon / 2**20:5.0f} {r.box_busy * 100:6.0f}%"
              + (f"  {r.note}" if r.note else ""))
    print("(MB = 10^6 bytes as wrk read them, headers included; cpu s = the server's process tree over the run; RSS "
          "= peak VmRSS summed over its processes, anon = peak RssAnon; machine = all CPUs busy, wrk included; "
          "edged's raw: " + ", ".join(f"{r.target} {r.cpu_raw:.2f}" for r in runs if r.server == "edged") + ")")
    per_core: dict[str, float] = {}
    print("\nedged / nginx, same bytes, same run (nginx 1 worker = the mean of its first and last run):")
    for target in TARGETS:
        by = {r.server: r for r in runs if r.target == target}
        e, first, last, auto = by["edged"], by[SERVERS[0]], by[SERVERS[3]], by["nginx auto"]
        ng_rps, ng_core = (first.rps + last.rps) / 2, (first.per_core + last.per_core) / 2
        per_core[target] = ratio(e.per_core, ng_core)
        print(f"  {target:16} vs 1 worker: req/s {x(ratio(e.rps, ng_rps))} (vs first {x(ratio(e.rps, first.rps))}, "
              f"vs last {x(ratio(e.rps, last.rps))}), per core {x(per_core[target])};  vs auto: req/s "
              f"{x(ratio(e.rps, auto.rps))}, per core {x(ratio(e.per_core, auto.per_core))};  nginx last/first "
              f"req/s {x(ratio(last.rps, first.rps))} (noise)")
    print("\n/metrics and /healthz while wrk saturated edged (a new connection every 100 ms each; these requests "
          "are in edged's CPU above):")
    for target in TARGETS:
        for c in sides.get(target, []):
            print(f"  during {target:16} {side_summary(c)}")
    return per_core


@dataclass
class ViewerRow:
    viewers: int
    server: str
    stats: ViewerStats
    cpu: float  # % of a core
    rss0: int
    peak: int
    peak_anon: int
    rss_after: int
    sides: list[SideClient]
    box: str
    note: str = ""


def viewer_phase(label: str, pid: int, base: str, media_path: str, n: int, args: argparse.Namespace,
                 blocking: bool, side_port: int | None) -> ViewerRow:
    tracker = Tracker(base + media_path)
    tracker.start()
    wait_for(lambda: tracker.newest >= 0, f"{label}'s playlist", 30)
    side = [SideClient(side_port, "/metrics"), SideClient(side_port, "/healthz")] if side_port else []
    for c in side:
        c.start()
    with Usage(pid) as u:
        st = asyncio.run(run_viewers(base, media_path, n, args.viewer_seconds, args.ramp, blocking, args.gzip,
                                     tracker))
    for c in side:
        c.finish()
    tracker.halt.set()
    tracker.join()
    time.sleep(3)
    return ViewerRow(n, label, st, u.cpu / u.wall * 100, u.rss0, u.peak, u.peak_anon, tree_rss(pid), side,
                     f"{u.box_busy * 100:.0f}% ({u.box_steal * 100:.0f}% steal)")


def report_viewers(args: argparse.Namespace, rows: list[ViewerRow], blocking: bool) -> None:
    mode = "LL-HLS blocking reloads (_HLS_msn=next) at edged, 1 s polls at nginx" if blocking else \
        "a playlist poll every second"
    print(f"\nsimulated viewers for {args.viewer_seconds:g} s each, joining over {args.ramp:g} s and counted after "
          f"that ({mode}, then each new segment; "
          f"{'Accept-Encoding: gzip' if args.gzip else 'no Accept-Encoding'}). nginx serves a live copy: a thread "
          f"here mirrors edged's playlist and segments into its root every {COPY_EVERY * 1000:.0f} ms over HTTP.")
    head = (f"{'viewers':>7} {'server':16} {'cpu %':>6} {'RSS MiB before/peak/after':>25} {'anon':>5} {'playlist p50/p99 ms':>19} "
            f"{'segment p50/p99 ms':>19} {'lag p99/max':>11} {'>1 behind':>9} {'segs':>6} {'Mb/s':>6} "
            f"{'skip':>4} {'err':>4} {'client cpu':>10} {'loop lag p99':>12} {'machine busy':>16}")
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r.stats
        pl = s.playlist
        behind = sum(1 for w in s.max_lag_by_viewer if w > 1)
        lag = f"{pct([float(v) for v in s.lag], 99):.0f}/{max(s.lag) if s.lag else math.nan}" if s.lag else "-"
        rss = f"{r.rss0 / 2**20:.0f}/{r.peak / 2**20:.0f}/{r.rss_after / 2**20:.0f}"
        print(f"{r.viewers:7d} {r.server:16} {r.cpu:6.1f} {rss:>25} {r.peak_anon / 2**20:5.0f} {ms(pct(pl, 50)).strip():>9}/"
              f"{ms(pct(pl, 99)).strip():<9} {ms(pct(s.segment, 50)).strip():>9}/{ms(pct(s.segment, 99)).strip():<9} "
              f"{lag:>11} {behind:9d} {s.segments:6d} {s.nbytes * 8 / (args.viewer_seconds - args.ramp) / 1e6:6.0f} "
              f"{s.skipped:4d} {s.errors:4d} {s.client_cpu * 100:9.0f}% {ms(pct(s.loop_lag, 99)).strip():>9} ms {r.box:>16}")
        if s.held:
            print(f"{'':7} {'':16} blocking reloads: p50 {ms(pct(s.held, 50)).strip()} ms, p99 "
                  f"{ms(pct(s.held, 99)).strip()} ms (the hold included; n={len(s.held)})")
        for c in r.sides:
            print(f"{'':7} {'':16} {side_summary(c)}")
    print("cpu % = the server's process tree, % of one core (edged's ingest included); RSS = VmRSS summed over its "
          "processes (LMDB's mapped file pages included, once per process), anon = its RssAnon peak; lag = newest segment listed "
          "minus the newest a viewer has fetched, sampled every 0.5 s, in segments; '>1 behind' = viewers ever more "
          "than one behind; client cpu = this bench process (near 100 % means the client was the limit); loop lag = how late "
          "a 10 ms timer fired in the client's event loop (the client's own share of every latency); machine "
          "busy = all CPUs, from /proc/stat (near 100 % means the machine, not the server, was the limit)")


def goals(per_core: dict[str, float], runs: list[WrkRun], sides: dict[str, list[SideClient]],
          rows: list[ViewerRow]) -> None:
    def ok(cond: bool) -> str:
        return "met" if cond else "MISSED"

    print("\ngoals (issue 13):")
    for target, goal in (("media playlist", 0.5), ("master playlist", 0.5), ("segment", 0.9)) if runs else ():
        v = per_core.get(target, math.nan)
        print(f"  {target} per core vs nginx 1 worker: {x(v).strip()} (>= {goal}x: {ok(v >= goal)})")
    metrics = [t for cs in sides.values() for c in cs if c.path == "/metrics" for t in c.times]
    p99 = pct(metrics, 99)
    if runs:
        print(f"  /metrics p99 under wrk: {ms(p99).strip()} ms (< 20 ms: {ok(p99 < 0.020)})")
    for r in rows:
        if r.server != "edged" or r.viewers != max(row.viewers for row in rows):
            continue
        pl = r.stats.playlist
        behind = max(r.stats.max_lag_by_viewer, default=0)
        print(f"  at {r.viewers} viewers: p99 playlist {ms(pct(pl, 99)).strip()} ms (< 50 ms: "
              f"{ok(pct(pl, 99) < 0.050) if pl else 'not measured with --blocking'}), most behind {behind} segment(s) (<= 1: {ok(behind <= 1)}), peak RSS "
              f"{r.peak / 2**20:.0f} MiB (< 1024: {ok(r.peak < 2**30)})"
              + ("" if r.viewers >= 1000 else "  [the goal is at 1,000 viewers]"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15, help="each wrk run (default 15)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    ap.add_argument("--viewers", default="200,1000", help="simulated viewer counts, comma-separated (default 200,1000)")
    ap.add_argument("--viewer-seconds", type=float, default=0.0,
                    help="each viewer phase (default 4 x --seconds, at least 20)")
    ap.add_argument("--ramp", type=float, default=4.0,
                    help="s over which viewers join; figures are counted after it (default 4: two segments)")
    ap.add_argument("--no-viewers", action="store_true", help="only the wrk runs")
    ap.add_argument("--no-wrk", action="store_true", help="only the viewer phases")
    ap.add_argument("--hls-format", choices=("cmaf", "ts"), default="cmaf", help="edged's segment container")
    ap.add_argument("--blocking", action="store_true", help="viewers use LL-HLS blocking reloads at edged (cmaf)")
    ap.add_argument("--gzip", action="store_true", help="viewers send Accept-Encoding: gzip")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, store, nginx root)")
    args = ap.parse_args()
    args.viewer_seconds = args.viewer_seconds or max(20.0, 4.0 * args.seconds)
    if args.viewer_seconds < args.ramp + 10:
        sys.exit("--viewer-seconds must be at least --ramp + 10")
    counts = [] if args.no_viewers else [int(v) for v in args.viewers.split(",") if v.strip()]
    blocking = args.blocking and args.hls_format == "cmaf"
    if args.blocking and not blocking:
        print("--blocking needs CMAF (LL-HLS); TS viewers poll every second")
    ensure_tool("ffmpeg", "ffmpeg")
    ensure_tool("nginx", "nginx-light")
    ensure_tool("wrk", "wrk")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the start",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="edged-serve-bench-"))
    root = work / "www"
    root.mkdir()
    cfg = work / "edged.toml"
    keep = max(60, math.ceil(5 * args.seconds / SEGMENT_SECONDS) + 20)  # the wrk segment stays through its runs
    cfg.write_text(f"[http]\nmax_connections_per_address = 100000\n[hls]\nsegment_seconds = {SEGMENT_SECONDS}\n"
                   f"[store]\nretention_segments = {keep}\n")
    edge = EdgeProcess(work / "edge", {CHANNEL: KEY}, extra=["--no-srt", "--no-transcode", "--config", str(cfg)],
                       hls_format=args.hls_format)
    ffmpeg: subprocess.Popen[bytes] | None = None
    nginxes: list[Nginx] = []
    t0 = time.monotonic()
    try:
        edge.start()
        ffmpeg = publish(edge.rtmp_url(KEY), work / "ffmpeg.log")
        master_path = f"/live/{CHANNEL}/master.m3u8"
        rendition = wait_for(lambda: segment_names(fetch(edge.http + master_path).decode())[0], "the master playlist")
        media_path = f"/live/{CHANNEL}/{rendition}"
        print(f"publishing 1080p30 6 Mb/s to edged ({args.hls_format}); waiting for 3 segments ...", flush=True)
        wait_for(lambda: len(segment_names(fetch(edge.http + media_path).decode())) >= 3, "3 segments", 120)
        sizes = [len(fetch(f"{edge.http}{media_path.rsplit('/', 1)[0]}/{n}"))
                 for n in segment_names(fetch(edge.http + media_path).decode())[-3:]]
        print(f"segments: {', '.join(f'{s / 1e6:.2f}' for s in sizes)} MB", flush=True)
        nginxes = [Nginx(work, "nginx1", root, "1"), Nginx(work, "nginx-auto", root, "auto")]
        for ng in nginxes:
            ng.wait()
        ng1, nga = nginxes
        assert edge.proc is not None
        with Usage(edge.proc.pid) as idle:
            time.sleep(3)
        baseline = idle.cpu / idle.wall
        runs: list[WrkRun] = []
        sides: dict[str, list[SideClient]] = {}
        per_core: dict[str, float] = {}
        if not args.no_wrk:
            runs, sides, what = wrk_phase(args, edge, ng1, nga, root, media_path, master_path, baseline)
            per_core = report_wrk(args, runs, sides, what, baseline)
        rows: list[ViewerRow] = []
        for n in counts:
            print(f"\n{n} viewers at edged for {args.viewer_seconds:g} s ...", flush=True)
            rows.append(viewer_phase("edged", edge.proc.pid, edge.http, media_path, n, args, blocking, edge.http_port))
            print(f"{n} viewers at nginx 1 worker (live copy) for {args.viewer_seconds:g} s ...", flush=True)
            copier = Copier(edge.http, media_path, root, args.gzip)
            copier.start()
            wait_for(lambda c=copier: c.passes > 0, "the live copy", 30)
            try:
                rows.append(viewer_phase("nginx 1 worker", ng1.proc.pid, ng1.base, media_path, n, args, False, None))
            finally:
                copier.halt.set()
                copier.join()
            rows[-1].note = f"copier: {copier.passes} passes, {copier.errors} errors"
        if rows:
            report_viewers(args, rows, blocking)
            for r in rows:
                if r.note:
                    print(f"  ({r.viewers} viewers at {r.server}: {r.note})")
        goals(per_core, runs, sides, rows)
    except BaseException:
        print(f"work dir kept (logs of edged, ffmpeg and nginx): {work}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        for ng in nginxes:
            ng.stop()
        if ffmpeg is not None and ffmpeg.poll() is None:
            ffmpeg.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                ffmpeg.wait(10)
            if ffmpeg.poll() is None:
                ffmpeg.kill()
        edge.stop()
    print(f"\n(run took {time.monotonic() - t0:.0f} s on {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end; wrk, ffmpeg, this client and the servers "
          "share them)")
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
