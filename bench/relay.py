"""Relay benchmark: per-hop lag, relay CPU and fan-out cost, against an nginx pull-cache tier in the same run.

Real processes on 127.0.0.1: `originctl serve` ([relay] max_children = 2), an ingest edge A, a relay node R
and viewer edges B and C (`edged run --origin`); Debian ffmpeg publishes a 640x360 30 fps test pattern to A.
The controller hangs B below A (one hop) and C below R, recruited below A (two hops).

Measured over --seconds of live stream:
  * per-hop lag: a segment committed at A → committed at the next edge (each copy's LMDB write time against
    the ingest commit time it carries; one host, one clock), for A→B, A→R, R→C and A→C end to end;
  * → listed: a viewer polling B's and C's media playlists every 10 ms (a playlist is rendered from the
    store per request, so "listed" is "committed" plus the poll and the HTTP round trip);
  * relay CPU per stream per hop: R's CPU (utime + stime from /proc) over the window, less its idle baseline
    measured before the stream, as % of one core; likewise for B (a leaf) and A (the ingest edge: pipeline
    worker not included, it is a child process);
  * fan-out: --fanout extra children (in this process, real gRPC with mutual TLS, certificates from the
    controller's CA) subscribe to R for --fanout-seconds: R's extra CPU per child, and R's relay egress per
    child per segment (it must be one copy each).
Reference, same run: nginx (Debian nginx-light, installed by hand: `apt-get install nginx-light`) as a pull
cache in front of A (proxy_cache + proxy_cache_lock; playlists cached 1 s, as CDNs do for live, which is also
what edged's Cache-Control says; segments 1 day): the time from the commit at A to the segment being listed
at the nginx tier (4 viewers polling it every 10 ms), and upstream fetches per segment. `--no-nginx` skips it.
Goal: p99 per-hop lag ≤ 50 ms on loopback; exactly one upstream copy per child per segment.

    .venv/bin/python bench/relay.py [--seconds 60] [--segment-seconds 1] [--fanout 20] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.agent.enroll import new_key_and_csr  # noqa: E402
from edged.relay.client import RelayClient  # noqa: E402
from edged.relay.records import SegmentRecord  # noqa: E402
from edged.relay.tls import FleetIdentity  # noqa: E402
from edged.store.segments import SegmentStore  # noqa: E402
from originctl.server.enrollment import CertificateAuthority  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
_EXTINF_RE = re.compile(r"#EXTINF:[\d.]+,\n(\d+)\.ts")
POLL = 0.01  # s between a polling viewer's playlist requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(values)


class Fleet:
    def __init__(self, work: Path, segment_seconds: float) -> None:
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINCTL_")}
        self.env.update(EDGENET_MDNS_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1", GRPC_VERBOSITY="ERROR",
                        XDG_CONFIG_HOME=str(work / "xdg"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.grpc, self.edge_grpc, self.ctl_http = free_port(), free_port(), free_port()
        self.segment_seconds = segment_seconds
        self.edges: dict[str, dict[str, Any]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "wb") as log:
            p = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def cli(self, *args: str) -> str:
        token = (self.work / "origin" / "admin.token").read_text().strip()
        done = subprocess.run([sys.executable, "-m", "originctl", "--origin", f"127.0.0.1:{self.grpc}", "--token",
                               token, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"originctl {' '.join(args)}: {done.stderr}")
        return done.stdout

    def wait(self, check: Any, what: str, within: float = 60) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if got := check():
                    return got
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.work}")

    def controller(self, extra_config: str = "") -> None:
        cfg = self.work / "originctl.toml"
        cfg.write_text(f'data_dir = "{self.work / "origin"}"\ngrpc = "127.0.0.1:{self.grpc}"\n'
                       f'edge_grpc = "127.0.0.1:{self.edge_grpc}"\nhttp = "127.0.0.1:{self.ctl_http}"\n'
                       "[relay]\nmax_children = 2\n" + extra_config)
        self.start("originctl", [sys.executable, "-m", "originctl", "serve", "--config", str(cfg)])
        self.wait(lambda: http_get(f"http://127.0.0.1:{self.ctl_http}/healthz")[0] == 200, "the controller")

    def edge(self, name: str, token: str, relay: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        e = {"http": free_port(), "rtmp": free_port(), "relay": free_port(), "irc": free_port(), "data": self.work / name}
        cfg = self.work / f"{name}.toml"
        cfg.write_text(f'[origin]\nheartbeat_seconds = 0.5\n[node]\nname = "{name}"\nadvertise = false\n'
                       f"relay = {'true' if relay else 'false'}\n[hls]\nsegment_seconds = {self.segment_seconds}\n"
                       "[store]\nretention_segments = 100000\n")  # every segment of the run stays for the figures
        self.edges[name] = e
        self.start(name, [sys.executable, "-m", "edged", "run", "--config", str(cfg), "--data-dir", str(e["data"]),
                          "--rtmp", f"127.0.0.1:{e['rtmp']}", "--http", f"127.0.0.1:{e['http']}",
                          "--relay", f"127.0.0.1:{e['relay']}", "--irc", f"127.0.0.1:{e['irc']}", "--no-srt",
                          "--no-transcode", *extra_args,
                          "--origin", f"127.0.0.1:{self.grpc}", "--enroll-token", token])

    def node_id(self, name: str) -> str:
        meta = self.edges[name]["data"] / "agent" / "identity.json"
        return str(json.loads(meta.read_text())["node_id"]) if meta.exists() else ""

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.edges[name]['http']}/live/news/{path}"

    def metric(self, name: str, metric: str, labels: str = "") -> float:
        body = http_get(f"http://127.0.0.1:{self.edges[name]['http']}/metrics")[1].decode()
        m = re.search(rf"^{re.escape(metric)}{re.escape(labels)} (\S+)$", body, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


class Poller(threading.Thread):
    """A viewer polling a media playlist: when each sequence number was first listed (wall clock)."""

    def __init__(self, url: str, fetch_segments: bool = False) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.fetch_segments = fetch_segments  # as a player does: each new segment once
        self.first_seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            status, body = http_get(self.url, timeout=2)
            now = time.time()
            if status == 200:
                for m in _EXTINF_RE.finditer(body.decode(errors="replace")):
                    seq = int(m.group(1))
                    if seq not in self.first_seen:
                        self.first_seen[seq] = now
                        if self.fetch_segments:
                            http_get(self.url.rsplit("/", 1)[0] + f"/{seq}.ts", timeout=5)
            time.sleep(POLL)


def nginx_start(work: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    access = prefix / "logs" / "access.log"
    loc = (f"proxy_pass http://127.0.0.1:{upstream}; proxy_cache hls; proxy_cache_lock on; "
           "proxy_cache_lock_timeout 5s; proxy_http_version 1.1;")
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must reach the (0700) work dir
    conf.write_text(f"""daemon off;
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format cache '$msec $request_uri $upstream_cache_status $status';
  access_log {access} cache;
  proxy_temp_path {prefix}/proxy_temp;
  client_body_temp_path {prefix}/body_temp;
  proxy_cache_path {prefix}/cache keys_zone=hls:10m;
  server {{
    listen 127.0.0.1:{port};
    location ~ \\.m3u8$ {{ {loc} proxy_cache_valid 200 1s; }}
    location ~ \\.ts$ {{ {loc} proxy_cache_valid 200 1d; }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.STDOUT)
    return p, port, access


FANOUT_WARMUP = 3.0  # s: the children's replay of the live window is not counted as egress


async def fanout(ident_for: Any, address: str, node_id: str, n: int, seconds: float,
                 sample: Any) -> tuple[int, int, float, float]:
    """`n` children subscribed to the parent for `seconds`: (segments received, bytes) in all, and what
    `sample()` (the parent's egress bytes) grew by, and over how long, after the warm-up."""
    counts = [0, 0]

    async def child(i: int) -> None:
        ident = ident_for(f"bench-child-{i}")
        client = RelayClient(ident, max_record_bytes=64 << 20, stall_timeout=5)
        with contextlib.suppress(Exception):
            async for rec in client.subscribe(address, node_id, "news", {}):
                if isinstance(rec, SegmentRecord):
                    counts[0] += 1
                    counts[1] += len(rec.payload)

    tasks = [asyncio.create_task(child(i)) for i in range(n)]
    await asyncio.sleep(FANOUT_WARMUP)
    s0, t0 = await asyncio.to_thread(sample), time.monotonic()
    await asyncio.sleep(max(1.0, seconds - FANOUT_WARMUP))
    s1, t1 = await asyncio.to_thread(sample), time.monotonic()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts[0], counts[1], s1 - s0, t1 - t0


def lags(work: Path, edges: dict[str, dict[str, Any]]) -> dict[str, dict[tuple[str, int], Any]]:
    out = {}
    for name, e in edges.items():
        store = SegmentStore(e["data"] / "store", 1 << 30)
        try:
            out[name] = {(m.rendition, m.seq): m for m in store.metas_from("news", "source", 0, 100_000)}
        finally:
            store.close()
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (f"p50 {pct(values, 50) * 1000:6.1f} ms  p99 {pct(values, 99) * 1000:6.1f} ms  "
            f"max {max(values) * 1000:6.1f} ms  (n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--segment-seconds", type=float, default=1.0)
    ap.add_argument("--fanout", type=int, default=20)
    ap.add_argument("--fanout-seconds", type=float, default=20)
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = ap.parse_args()
    use_nginx = not args.no_nginx and shutil.which("nginx") is not None
    if not args.no_nginx and not use_nginx:
        print("nginx not found: the reference tier is skipped (apt-get install nginx-light to measure it)")
    work = Path(tempfile.mkdtemp(prefix="edged-relay-bench-"))
    fleet = Fleet(work, args.segment_seconds)
    ffmpeg: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    try:
        fleet.controller()
        tokens = fleet.cli("token", "create", "--count", "4").split()
        for name in ("a", "r", "b", "c"):
            fleet.edge(name, tokens.pop(), relay=name == "r", extra_args=("--hls-format", "ts"))  # as measured for issue 10
        ids = fleet.wait(lambda: all(fleet.node_id(n) for n in fleet.edges) and {n: fleet.node_id(n)
                                                                                for n in fleet.edges}, "enrollment")
        fleet.wait(lambda: len([n for n in json.loads(fleet.cli("nodes", "-o", "json")) if n["state"] == "healthy"])
                   == 4, "four healthy edges")
        key = fleet.cli("channel", "create", "news").strip()
        time.sleep(2)
        base = {n: cpu_seconds(fleet.procs[n].pid) for n in ("a", "r", "b")}
        t0 = time.monotonic()
        time.sleep(10)
        idle = {n: (cpu_seconds(fleet.procs[n].pid) - base[n]) / (time.monotonic() - t0) for n in base}
        gop = max(1, round(30 * args.segment_seconds))
        ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
             "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(args.seconds + args.fanout_seconds + 30), "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-b:v", "1500k", "-g", str(gop), "-pix_fmt", "yuv420p", "-c:a", "aac",
             "-b:a", "96k", "-f", "flv", f"rtmp://127.0.0.1:{fleet.edges['a']['rtmp']}/live/{key}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fleet.wait(lambda: http_get(fleet.url("a", "source/index.m3u8"))[1].count(b"#EXTINF") >= 2, "A's segments")
        for n in ("b", "c"):
            fleet.wait(lambda n=n: http_get(fleet.url(n, "master.m3u8"))[0] == 200, f"{n} relaying")
        tree = json.loads(fleet.cli("relay", "tree", "news", "-o", "json"))
        parents = {m["node_id"]: m["parent_node_id"] for m in tree["members"] if m["parent_node_id"]}
        print(f"tree: {' '.join(f'{k}<-{v}' for k, v in parents.items())}")
        if parents.get(ids["c"]) != ids["r"]:
            print("note: C is not below R in this plan; the two-hop figures are for whichever edge is")
        pollers = {n: Poller(fleet.url(n, "source/index.m3u8")) for n in ("b", "c")}
        access: Path | None = None
        if use_nginx:
            nginx, nport, access = nginx_start(work, fleet.edges["a"]["http"])
            time.sleep(0.5)
            for i in range(4):
                pollers[f"nginx{i}"] = Poller(f"http://127.0.0.1:{nport}/live/news/source/index.m3u8", True)
        for p in pollers.values():
            p.start()
        a_out0 = fleet.metric("a", "edged_relay_bytes_total", '{direction="out"}')
        cpu0 = {n: cpu_seconds(fleet.procs[n].pid) for n in ("a", "r", "b")}
        w0 = time.monotonic()
        window_start = time.time()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - w0
        window_end = time.time()
        cpu = {n: (cpu_seconds(fleet.procs[n].pid) - cpu0[n]) / elapsed - idle[n] for n in cpu0}
        a_out = fleet.metric("a", "edged_relay_bytes_total", '{direction="out"}') - a_out0
        # fan-out: extra children on R
        ca = CertificateAuthority.load_or_create(work / "origin")

        def ident_for(node_id: str) -> FleetIdentity:
            k, csr = new_key_and_csr(node_id)
            return FleetIdentity(node_id, k, ca.sign_node_csr(csr, node_id).cert_pem, ca.cert_pem)

        r0, f0 = cpu_seconds(fleet.procs["r"].pid), time.monotonic()
        segs, nbytes, fan_out, fan_window = asyncio.run(fanout(
            ident_for, f"127.0.0.1:{fleet.edges['r']['relay']}", ids["r"], args.fanout, args.fanout_seconds,
            lambda: fleet.metric("r", "edged_relay_bytes_total", '{direction="out"}')))
        fan_elapsed = time.monotonic() - f0
        fan_cpu = (cpu_seconds(fleet.procs["r"].pid) - r0) / fan_elapsed - idle["r"]
        for p in pollers.values():
            p.stop.set()
        if ffmpeg is not None:
            ffmpeg.terminate()
            ffmpeg.wait(10)
            ffmpeg = None
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                nginx.wait(10)
        if ffmpeg is not None:
            ffmpeg.kill()
        fleet.stop()

    metas = lags(work, fleet.edges)
    in_window = [k for k, m in metas["a"].items() if window_start <= m.written_ns / 1e9 <= window_end]

    def hop(child: str, parent: str | None) -> list[float]:
        out = []
        for k in in_window:
            m = metas[child].get(k)
            if m is None or not m.origin_ns:
                continue
            start = metas[parent][k].written_ns if parent and k in metas[parent] else m.origin_ns
            out.append((m.written_ns - start) / 1e9)
        return out

    def listed(name: str) -> list[float]:
        p = pollers[name]
        return [p.first_seen[s] - metas["a"][("source", s)].written_ns / 1e9 for (_, s) in in_window
                if s in p.first_seen]

    seg_bytes = [m.size for k, m in metas["a"].items() if k in in_window]
    print(f"\n{len(in_window)} segments of {args.segment_seconds:g} s over {args.seconds:g} s "
          f"(~{statistics.mean(seg_bytes) / 1e3:.0f} kB each, ~{sum(seg_bytes) * 8 / args.seconds / 1e6:.2f} Mbit/s)")
    print("commit at A -> committed at (per hop):")
    print(f"  A->B (one hop)        {fmt(hop('b', None))}")
    print(f"  A->R                  {fmt(hop('r', None))}")
    print(f"  R->C                  {fmt(hop('c', 'r'))}")
    print(f"  A->C (two hops)       {fmt(hop('c', None))}")
    print(f"commit at A -> listed (a viewer polling every {POLL * 1000:.0f} ms):")
    print(f"  at B                  {fmt(listed('b'))}")
    print(f"  at C                  {fmt(listed('c'))}")
    if use_nginx:
        ng = [v for i in range(4) for v in listed(f"nginx{i}")]
        print(f"  at the nginx tier     {fmt(ng)}")
        fetches: dict[str, int] = {}
        playlist_fetches = 0
        for line in access.read_text().splitlines() if access else ():
            parts = line.split()
            if len(parts) >= 3 and parts[2] in ("MISS", "EXPIRED", "UPDATING", "STALE", "BYPASS"):
                if parts[1].endswith(".ts"):
                    fetches[parts[1]] = fetches.get(parts[1], 0) + 1
                elif parts[1].endswith(".m3u8"):
                    playlist_fetches += 1
        if fetches:
            print(f"  nginx upstream fetches per segment: mean {statistics.mean(fetches.values()):.2f}, "
                  f"max {max(fetches.values())}; playlist fetches {playlist_fetches / args.seconds:.2f}/s")
        b_p99 = pct(listed("b"), 99)
        n_p99 = pct(ng, 99)
        if ng and b_p99 > 0:
            print(f"  ratio: nginx tier p99 / edged one-hop (listed at B) p99 = {n_p99 / pct(listed('b'), 99):.1f}x")
    a_children = sum(1 for v in parents.values() if v == ids["a"])
    print(f"A's relay egress over the window: {a_out / max(1, sum(seg_bytes)):.2f} copies of the stream for its "
          f"{a_children} children (1.00 per child is the goal; the rest is headers and keepalives)")
    print("relay CPU (% of one core, idle baseline subtracted; one stream; B and C also serve the 10 ms poller):")
    print(f"  A (ingest edge, parent of B and R)  {cpu['a'] * 100:5.1f} %  (its pipeline worker not counted)")
    print(f"  R (one hop in, one child out)       {cpu['r'] * 100:5.1f} %")
    print(f"  B (leaf: one hop in)                {cpu['b'] * 100:5.1f} %")
    per_seg = (sum(seg_bytes) / len(seg_bytes)) if seg_bytes else 1
    segs_per_s = 1 / args.segment_seconds
    copies = fan_out / (fan_window * segs_per_s * per_seg) if per_seg else 0
    print(f"fan-out: R with C and {args.fanout} more children for {fan_elapsed:.0f} s: {fan_cpu * 100:.1f} % of a "
          f"core ({(fan_cpu - cpu['r']) / args.fanout * 100:.2f} % per extra child); relay egress after the "
          f"warm-up {fan_out * 8 / fan_window / 1e6:.1f} Mbit/s = {copies:.1f} copies of the stream for "
          f"{args.fanout + 1} children; children received {segs} segments ({nbytes / 1e6:.1f} MB)")
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
