"""Viewer latency benchmark: hls.js in headless Chromium on edged's LL-HLS, at the ingest edge and one relay hop
away, against plain HLS from edged and ffmpeg's own HLS behind nginx, all in the same run.

Real processes on 127.0.0.1. For each part target (--parts, default 0.5 and 0.2 s): `originctl serve`, an ingest
edge A and a viewer edge B (`edged run --origin`, [hls] format cmaf, --part-seconds); Debian's ffmpeg publishes
a 640x360 30 fps test pattern with `-re` (libx264 ultrafast/zerolatency, a keyframe every 2 s, AAC) to A over
RTMP; B relays the channel from A (one hop). Two Chromium instances play at once, one from A and one from B,
with hls.js `lowLatencyMode: true`, for --seconds of playback each.
References, each in its own phase of the same run, with the same page and publisher:
  * edged plain HLS: a standalone edge with `--hls-format ts` (2 s segments), hls.js `lowLatencyMode: false`;
  * ffmpeg's own HLS (`-f hls -hls_time 1`, a keyframe every second, program date times) written to a
    directory served by nginx (Debian nginx-light: `apt-get install nginx-light`; the bench installs it when
    missing and it may, `--no-nginx` skips it), hls.js `lowLatencyMode: false`.
Measured every second by the page: `Date.now() - hls.playingDate` (wall clock against the playhead's program
date time, which edged stamps at the first byte's arrival at ingest and ffmpeg at the muxer, so encoder
delay before that is not in it) and `hls.latency`, p50/p95 over the samples after --settle seconds of
playback; stalls: `waiting` events after playback began, hls.js bufferStalledError, and the seconds spent
waiting. hls.js does not speed up to catch up unless --sync-rate (maxLiveSyncPlaybackRate) > 1.
Goal (issue 12), at the ingest edge: p50 <= 2.0 s and p95 <= 3.0 s at 0.5 s parts, p50 <= 1.2 s at 0.2 s
parts; one relay hop adds <= 0.1 s; no stalls.

    .venv/bin/python bench/latency.py [--seconds 180] [--parts 0.5,0.2] [--no-nginx] [--no-ts] [--keep]
    .venv/bin/python bench/latency.py --seconds 20        # a quick check (about 3 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.relay import Fleet, free_port, http_get  # noqa: E402
from tests.integration.llhls_tools import PageServer, latencies, pct, play, publish, stop  # noqa: E402
from tests.integration.procs import EdgeProcess  # noqa: E402

KEY = "bench-latency-key"


@dataclass
class Row:
    name: str
    wall: list[float] = field(default_factory=list)  # Date.now() - playingDate, s
    hls: list[float] = field(default_factory=list)  # hls.latency, s
    waiting: int = 0
    stalled: int = 0
    stall_seconds: float = 0.0
    parts: int = 0
    segments: int = 0
    error: str = ""

    @classmethod
    def of(cls, name: str, st: dict[str, Any] | None, settle: float, error: str = "") -> Row:
        if st is None:
            return cls(name, error=error or "no report")
        wall, hls = latencies(st, settle)
        return cls(name, wall, hls, int(st["waiting"]), int(st["stalled"]), float(st["stallSeconds"]),
                   int(st["parts"]), int(st["frags"]), error or (st["fatal"] or ""))


def players(pages: PageServer, runs: list[tuple[str, str, str, dict[str, Any]]], seconds: float,
            settle: float) -> list[Row]:
    """Plays each (name, page id, source, hls.js config) at the same time, each in its own Chromium."""
    rows: dict[str, Row] = {}

    def one(name: str, pid: str, src: str, cfg: dict[str, Any]) -> None:
        try:
            rows[name] = Row.of(name, play(pages, pid, src, seconds + settle, cfg), settle)
        except AssertionError as exc:
            rows[name] = Row.of(name, pages.state(pid), settle, error=str(exc)[:200])

    threads = [threading.Thread(target=one, args=r, daemon=True) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [rows[name] for name, *_ in runs]


def ll_phase(work: Path, pages: PageServer, part: float, args: argparse.Namespace) -> list[Row]:
    """A fleet (controller, ingest edge A, viewer edge B) at this part target; players at A and B."""
    fleet = Fleet(work / f"ll-{part:g}", 2.0)
    fleet.work.mkdir(parents=True)
    ffmpeg: subprocess.Popen[bytes] | None = None
    try:
        fleet.controller()
        tokens = fleet.cli("token", "create", "--count", "2").split()
        extra = ("--hls-format", "cmaf", "--part-seconds", str(part))
        for name in ("a", "b"):
            fleet.edge(name, tokens.pop(), extra_args=extra)
        fleet.wait(lambda: all(fleet.node_id(n) for n in fleet.edges), "enrollment")
        fleet.wait(lambda: len([n for n in json.loads(fleet.cli("nodes", "-o", "json")) if n["state"] == "healthy"])
                   == 2, "two healthy edges")
        key = fleet.cli("channel", "create", "news").strip()
        ffmpeg = publish(f"rtmp://127.0.0.1:{fleet.edges['a']['rtmp']}/live/{key}", args.seconds + args.settle + 120)
        fleet.wait(lambda: http_get(fleet.url("a", "source/index.m3u8"))[1].count(b"#EXTINF") >= 2, "A's segments")
        fleet.wait(lambda: http_get(fleet.url("b", "source/index.m3u8"))[1].count(b"#EXTINF") >= 2, "B relaying")
        cfg = ll_config(args)
        tag = f"{part:g} s parts"
        return players(pages, [(f"LL-HLS {tag} @ ingest A", f"ll{part:g}-a", fleet.url("a", "master.m3u8"), cfg),
                               (f"LL-HLS {tag} @ B (1 hop)", f"ll{part:g}-b", fleet.url("b", "master.m3u8"), cfg)],
                       args.seconds, args.settle)
    finally:
        stop(ffmpeg)
        fleet.stop()


def ll_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {"lowLatencyMode": True}
    if args.sync_rate > 1:
        cfg["maxLiveSyncPlaybackRate"] = args.sync_rate
    return cfg


def ts_phase(work: Path, pages: PageServer, args: argparse.Namespace) -> list[Row]:
    """edged as it was before LL-HLS: MPEG-TS, 2 s segments, no parts; the player in normal live mode."""
    (work / "ts").mkdir()
    edge = EdgeProcess(work / "ts" / "edge", {"news": KEY}, hls_format="ts")
    ffmpeg: subprocess.Popen[bytes] | None = None
    try:
        edge.start()
        ffmpeg = publish(edge.rtmp_url(KEY), args.seconds + args.settle + 120)
        deadline = time.monotonic() + 60
        while http_get(f"{edge.http}/live/news/source/index.m3u8")[1].count(b"#EXTINF") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no TS segments; log {edge.log_path}")
            time.sleep(0.2)
        return players(pages, [("edged HLS (ts, 2 s segments)", "ts", f"{edge.http}/live/news/master.m3u8",
                                {"lowLatencyMode": False})], args.seconds, args.settle)
    finally:
        stop(ffmpeg)
        edge.stop()


def nginx_available(allow_install: bool) -> bool:
    if shutil.which("nginx") or not allow_install:
        return shutil.which("nginx") is not None
    print("nginx not found: apt-get install nginx-light")
    done = subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light",
                          shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"could not install nginx-light: {done.stderr.strip()[-300:]}")
    return shutil.which("nginx") is not None


def nginx_phase(work: Path, pages: PageServer, args: argparse.Namespace) -> list[Row]:
    """ffmpeg's own HLS muxer (1 s segments, a keyframe a second) writing files that nginx serves."""
    prefix = work / "nginx"
    out = prefix / "www" / "hls"
    out.mkdir(parents=True)
    (prefix / "logs").mkdir()
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must reach the (0700) work dir
    conf = prefix / "nginx.conf"
    conf.write_text(f"""daemon off;
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body_temp;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{
    listen 127.0.0.1:{port};
    root {prefix / "www"};
    add_header Access-Control-Allow-Origin * always;
    location ~ \\.m3u8$ {{ add_header Cache-Control "max-age=1" always; add_header Access-Control-Allow-Origin * always; }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    seconds = args.seconds + args.settle + 120
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
         "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "1000k",
         "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "96k", "-f", "hls", "-hls_time", "1", "-hls_list_size", "6",
         "-hls_flags", "delete_segments+program_date_time+independent_segments+temp_file",
         "-hls_segment_filename", str(out / "seg%05d.ts"), str(out / "index.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/hls/index.m3u8"
        deadline = time.monotonic() + 60
        while http_get(url)[1].count(b"#EXTINF") < 3:
            if time.monotonic() > deadline or nginx.poll() is not None:
                raise RuntimeError(f"nginx/ffmpeg HLS not up; see {prefix}/logs")
            time.sleep(0.2)
        return players(pages, [("ffmpeg -hls_time 1 + nginx", "nginx", url, {"lowLatencyMode": False})],
                       args.seconds, args.settle)
    finally:
        stop(ffmpeg)
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            nginx.wait(10)
        if nginx.poll() is None:
            nginx.kill()
            nginx.wait(5)


def _s(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{x:6.2f}"


def report(rows: list[Row], args: argparse.Namespace) -> None:
    by = {r.name: r for r in rows}
    ts = by.get("edged HLS (ts, 2 s segments)")
    ng = by.get("ffmpeg -hls_time 1 + nginx")
    print(f"\nlatency over {args.seconds:g} s of playback per player (samples every 1 s after {args.settle:g} s), "
          "seconds:")
    head = (f"{'player':34} {'wall p50':>8} {'p95':>6} {'hls p50':>8} {'p95':>6} {'waiting':>7} {'stalled':>7} "
            f"{'stall s':>7} {'parts':>6} {'segs':>5} {'vs ts':>6} {'vs nginx':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        p50 = pct(r.wall, 50)
        vs_ts = p50 / pct(ts.wall, 50) if ts and ts.wall else float("nan")
        vs_ng = p50 / pct(ng.wall, 50) if ng and ng.wall else float("nan")
        print(f"{r.name:34} {_s(p50):>8} {_s(pct(r.wall, 95))} {_s(pct(r.hls, 50)):>8} {_s(pct(r.hls, 95))} "
              f"{r.waiting:7d} {r.stalled:7d} {r.stall_seconds:7.2f} {r.parts:6d} {r.segments:5d} "
              f"{_s(vs_ts):>6} {_s(vs_ng):>8}" + (f"  ERROR {r.error}" if r.error else ""))
    print("wall = Date.now() - hls.playingDate; hls = hls.latency; vs = wall p50 / the reference's wall p50")
    print("\ngoals (issue 12):")
    for part, p50_goal, p95_goal in ((0.5, 2.0, 3.0), (0.2, 1.2, None)):
        a, b = by.get(f"LL-HLS {part:g} s parts @ ingest A"), by.get(f"LL-HLS {part:g} s parts @ B (1 hop)")
        if a is None:
            continue
        p50, p95 = pct(a.wall, 50), pct(a.wall, 95)
        line = f"  {part:g} s parts at A: p50 {_s(p50).strip()} s (<= {p50_goal}: {'met' if p50 <= p50_goal else 'MISSED'})"
        if p95_goal is not None:
            line += f", p95 {_s(p95).strip()} s (<= {p95_goal}: {'met' if p95 <= p95_goal else 'MISSED'})"
        print(line)
        if b is not None:
            hop = pct(b.wall, 50) - p50
            print(f"  {part:g} s parts, one relay hop adds {hop:+.2f} s at p50 (<= 0.1: {'met' if hop <= 0.1 else 'MISSED'})")
    ll = [r for r in rows if r.name.startswith("LL-HLS")]
    stalls = sum(r.waiting + r.stalled for r in ll)
    print(f"  stalls in the LL-HLS players: {stalls} ({'met' if stalls == 0 else 'MISSED'}: none in "
          f"{args.seconds:g} s{'' if args.seconds >= 180 else '; the goal is over 3 minutes'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180, help="playback per player (default 180)")
    ap.add_argument("--settle", type=float, default=5, help="first seconds of playback not counted (default 5)")
    ap.add_argument("--parts", default="0.5,0.2", help="LL-HLS part targets, comma-separated (default 0.5,0.2)")
    ap.add_argument("--sync-rate", type=float, default=1.0, help="hls.js maxLiveSyncPlaybackRate (default 1: off)")
    ap.add_argument("--no-ts", action="store_true", help="skip the edged plain-HLS reference")
    ap.add_argument("--no-nginx", action="store_true", help="skip the ffmpeg + nginx reference")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = ap.parse_args()
    parts = [float(p) for p in args.parts.split(",") if p.strip()]
    for tool in ("ffmpeg", "chromium"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required (make test installs it)")
    use_nginx = not args.no_nginx and nginx_available(allow_install=True)
    work = Path(tempfile.mkdtemp(prefix="edged-latency-bench-"))
    pages = PageServer()
    rows: list[Row] = []
    t0 = time.monotonic()
    try:
        for part in parts:
            print(f"LL-HLS, {part:g} s parts: players at A and B ...", flush=True)
            rows += ll_phase(work, pages, part, args)
        if not args.no_ts:
            print("reference: edged plain HLS (ts) ...", flush=True)
            rows += ts_phase(work, pages, args)
        if use_nginx:
            print("reference: ffmpeg -hls_time 1 behind nginx ...", flush=True)
            rows += nginx_phase(work, pages, args)
        elif not args.no_nginx:
            print("nginx unavailable: that reference is skipped")
    finally:
        pages.close()
    report(rows, args)
    print(f"\n(run took {time.monotonic() - t0:.0f} s on {os.cpu_count()} CPUs)")
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
