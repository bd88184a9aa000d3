"""Simulated fleet against one real controller: report-handling latency and false `lost` states.

One `originctl serve` process; N simulated edges spread over W worker processes. Every simulated
edge has its own enrolled identity (real Enroll RPCs, cached in the work dir so later runs skip
them) and its own mutual-TLS channel and Connect stream, says Hello, and sends a realistic report
(one GPU, node figures) every --interval seconds, the first one at a random offset within the interval.

Measured from the controller's own /metrics over a window after every edge is connected:
  * originctl_report_delay_seconds: an edge stamping the report → the controller having handled it
    (same host, so no clock skew; includes queueing in the simulators and in the controller)
  * reports handled per second, the controller's CPU use
  * transitions to `lost` (every simulated edge keeps reporting, so any is false)
A size passes when p99 ≤ 100 ms and there was no false `lost`. Reference, same run: the first
(smallest) size; later sizes print their p99 and throughput as ratios against it.

    .venv/bin/python bench/fleet_sim.py --sizes 200,1000,2000 [--workers 4] [--window 20]

Note: simulators and controller share the machine; on a small machine the simulators' own CPU
use limits the largest size measurable, and their queueing counts in the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from edged.agent import convert, enroll  # noqa: E402
from edged.agent.status import NodeStatus  # noqa: E402
from edged.agent.telemetry import GPU_OK, GpuState, HostReading  # noqa: E402
from edged.common.gpu import GpuSample  # noqa: E402
from edgenet.v1 import edge_pb2, edge_pb2_grpc  # noqa: E402

OPTIONS = [("grpc.ssl_target_name_override", enroll.CONTROLLER_TLS_NAME)]
P99_GOAL = 0.1  # s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the controller -------------------------------------------------------------------------------


class Controller:
    def __init__(self, workdir: Path, cpus: set[int] | None = None) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.grpc, self.edge, self.http = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "originctl.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "originctl", "serve", "--data-dir", str(self.workdir / "origin"),
             "--grpc", f"127.0.0.1:{self.grpc}", "--edge-grpc", f"127.0.0.1:{self.edge}",
             "--http", f"127.0.0.1:{self.http}", "--no-advertise", "--log-level", "warning"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
        if self.cpus:
            os.sched_setaffinity(self.proc.pid, self.cpus)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the controller did not start; see " + str(self.workdir / "originctl.log"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def metrics(self) -> dict[str, float]:
        """Flattened samples of the originctl_* families we use: name{labels} → value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=60) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("originctl_report_delay_seconds_bucket", "originctl_report_delay_seconds_count",
                                "originctl_event_loop_lag_seconds_bucket", "originctl_report_processing_seconds_bucket",
                                "originctl_reports_received_total", "originctl_node_state_transitions_total",
                                "originctl_nodes{", "originctl_nodes_connected")):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def admin_token(self) -> str:
        return (self.workdir / "origin" / "admin.token").read_text().strip()


# --- identities -----------------------------------------------------------------------------------


async def _enroll_many(ctl: Controller, count: int) -> list[dict[str, str]]:
    from edgenet.v1 import admin_pb2, admin_pb2_grpc
    from edgenet.v1 import common_pb2 as pb

    token = ctl.admin_token()
    fp = token.rsplit(".", 1)[1]
    ca = await asyncio.to_thread(enroll.fetch_ca, "127.0.0.1", ctl.grpc, fp)
    out: list[dict[str, str]] = []
    async with grpc.aio.secure_channel(f"127.0.0.1:{ctl.grpc}", grpc.ssl_channel_credentials(ca),
                                       options=OPTIONS) as ch:
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        enroller = edge_pb2_grpc.EnrollmentServiceStub(ch)
        md = (("authorization", f"Bearer {token}"),)
        sem = asyncio.Semaphore(64)

        async def one(tok: str, i: int) -> None:
            async with sem:
                key, csr = await asyncio.to_thread(enroll.new_key_and_csr, f"sim-{i}")
                resp = await enroller.Enroll(edge_pb2.EnrollRequest(
                    token=tok, csr_pem=csr, info=pb.NodeInfo(name=f"sim-{i}", hostname="sim", heartbeat_seconds=2)))
                out.append({"node_id": resp.node_id, "key": key.decode(), "cert": resp.certificate_pem.decode(),
                            "ca": resp.ca_certificate_pem.decode()})

        done = 0
        while done < count:
            batch = min(5000, count - done)
            tokens = (await admin.CreateToken(admin_pb2.CreateTokenRequest(ttl_seconds=3600, count=batch),
                                              metadata=md)).tokens
            await asyncio.gather(*(one(t, done + j) for j, t in enumerate(tokens)))
            done += batch
            print(f"  enrolled {done}/{count}", flush=True)
    return out


def identities(ctl: Controller, count: int) -> list[dict[str, str]]:
    path = ctl.workdir / "identities.jsonl"
    have = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if len(have) < count:
        print(f"enrolling {count - len(have)} simulated edges ...", flush=True)
        started = time.monotonic()
        new = asyncio.run(_enroll_many(ctl, count - len(have)))
        took = time.monotonic() - started
        print(f"  {len(new)} enrollments in {took:.1f} s ({len(new) / took:.0f}/s)", flush=True)
        with open(path, "a") as fh:
            for ident in new:
                fh.write(json.dumps(ident) + "\n")
        have += new
    return have[:count]


# --- simulated edges (worker processes) -----------------------------------------------------------


def _report_template(i: int) -> Any:
    gpu = GpuSample(index=0, uuid=f"GPU-sim-{i:08d}", name="Tesla T4", utilization_gpu_pct=35,
                     utilization_memory_pct=20, encoder_utilization_pct=60, decoder_utilization_pct=15,
                     encoder_sessions=5, encoder_average_fps=60, encoder_average_latency_us=4000,
                     encoder_capacity_h264_pct=40, encoder_capacity_hevc_pct=33, memory_used_bytes=2 << 30,
                     memory_total_bytes=15 << 30, temperature_c=62, power_w=55.0, power_limit_w=70.0,
                     clocks_event_reasons=0, sm_clock_mhz=1365, memory_clock_mhz=5000, ecc_corrected_volatile=0,
                     ecc_uncorrected_volatile=0, pcie_replay_counter=0)
    status = NodeStatus(active_streams=5, live_channels=("a", "b", "c", "d", "e"), transcodes=5, viewers=300,
                        egress_bps=900_000_000, cache_bytes=400 << 20, cache_capacity_bytes=1 << 30)
    return GpuState(GPU_OK, "", "550.54.15", (gpu,)), HostReading(2.5, 16, 8 << 30, 64 << 30), status


async def _sim_edge(ident: dict[str, str], edge_port: int, interval: float, stop_at: float, stats: dict[str, float],
                    connect_sem: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    creds = grpc.ssl_channel_credentials(ident["ca"].encode(), ident["key"].encode(), ident["cert"].encode())
    gpu, host, status = _report_template(int(stats["base"]))
    async with grpc.aio.secure_channel(f"127.0.0.1:{edge_port}", creds, options=OPTIONS) as ch:
        async with connect_sem:  # bounded handshakes in flight
            call = edge_pb2_grpc.EdgeServiceStub(ch).Connect()
            info = convert.node_info_to_pb(name=ident["node_id"], hostname="sim", site="bench", version="sim",
                                           latitude=None, longitude=None, prefixes=(), public_url="", status=status,
                                           heartbeat_seconds=interval, gpu=gpu)
            await call.write(convert.hello(info, "sim"))
            await call.read()
        stats["connected"] += 1

        async def drain() -> None:  # a real edge reads everything the controller sends (key tables, pulses)
            while await call.read() is not grpc.aio.EOF:
                pass
        reader = asyncio.ensure_future(drain())
        await asyncio.sleep(random.uniform(0, interval))
        next_at = loop.time()
        seq = 0
        msg = convert.report(convert.report_to_pb(0, 0, gpu, host, status))  # built once; two fields change
        while loop.time() < stop_at:
            seq += 1
            msg.report.seq = seq
            msg.report.sent_unix_us = int(time.time() * 1e6)
            await call.write(msg)
            stats["sent"] += 1
            next_at += interval
            lag = loop.time() - next_at + interval
            stats["max_lag"] = max(stats["max_lag"], lag)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        reader.cancel()
        call.cancel()


async def _worker_main(idents: list[dict[str, str]], edge_port: int, interval: float, stop_at_wall: float,
                       conn: Any) -> None:
    stats = {"connected": 0.0, "sent": 0.0, "max_lag": 0.0, "base": 0.0, "errors": 0.0}
    stop_at = asyncio.get_running_loop().time() + (stop_at_wall - time.time())
    sem = asyncio.Semaphore(100)

    async def guarded(ident: dict[str, str]) -> None:
        try:
            await _sim_edge(ident, edge_port, interval, stop_at, stats, sem)
        except grpc.aio.AioRpcError:
            stats["errors"] += 1

    async def progress() -> None:
        while True:
            conn.send(dict(stats))
            await asyncio.sleep(1.0)

    prog = asyncio.ensure_future(progress())
    await asyncio.gather(*(guarded(i) for i in idents))
    prog.cancel()
    conn.send(dict(stats))
    conn.send(None)


def _worker(idents: list[dict[str, str]], edge_port: int, interval: float, stop_at_wall: float, conn: Any,
            cpus: set[int] | None = None) -> None:
    os.environ["GRPC_VERBOSITY"] = "ERROR"
    if cpus:
        os.sched_setaffinity(0, cpus)
    asyncio.run(_worker_main(idents, edge_port, interval, stop_at_wall, conn))


# --- one measured size ----------------------------------------------------------------------------


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Interpolated quantile from cumulative (upper bound, count) buckets, as Prometheus does."""
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cum in buckets:
        if cum >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(1e-12, cum - below)
        lower, below = upper, cum
    return lower


def delay_buckets(before: dict[str, float], after: dict[str, float],
                  family: str = "originctl_report_delay_seconds") -> list[tuple[float, float]]:
    out = []
    for key, value in after.items():
        if key.startswith(family + "_bucket"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            out.append((float(le), value - before.get(key, 0.0)))
    return sorted(out)


def run_size(ctl: Controller, idents: list[dict[str, str]], workers: int, interval: float, window: float,
             ramp: float, sim_cpus: set[int] | None = None) -> dict[str, float]:
    n = len(idents)
    stop_at = time.time() + ramp + window + 3 * interval
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for w in range(workers):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(idents[w::workers], ctl.edge, interval, stop_at, child, sim_cpus),
                        daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    latest: list[dict[str, float]] = [{} for _ in range(workers)]

    def poll() -> None:
        for i, pipe in enumerate(pipes):
            while pipe.poll():
                msg = pipe.recv()
                if msg is not None:
                    latest[i] = msg

    deadline = time.time() + ramp
    while time.time() < deadline:
        poll()
        if sum(s.get("connected", 0) for s in latest) >= n:
            break
        time.sleep(0.5)
    connected = sum(s.get("connected", 0) for s in latest)
    time.sleep(2 * interval)  # every edge has sent at least one report
    # edges enrolled by earlier (larger) runs but not simulated now turn lost 3 intervals after the
    # controller started; let that happen before the window, so it is not counted as a false lost
    settle = time.monotonic() + 4 * interval + 5
    while time.monotonic() < settle:
        m = ctl.metrics()
        enrolled = sum(v for k, v in m.items() if k.startswith("originctl_nodes{"))
        if m.get('originctl_nodes{state="lost"}', 0.0) >= enrolled - n:
            break
        time.sleep(interval / 2)
    before, cpu0, t0 = ctl.metrics(), ctl.cpu_seconds(), time.monotonic()
    time.sleep(window)
    after, cpu1, t1 = ctl.metrics(), ctl.cpu_seconds(), time.monotonic()
    poll()
    for p in procs:
        p.join(timeout=ramp + window + 60)
        if p.is_alive():
            p.kill()
    poll()
    buckets = delay_buckets(before, after)
    count = buckets[-1][1] if buckets else 0
    within = dict(buckets).get(P99_GOAL, 0.0)
    lost_key = 'originctl_node_state_transitions_total{state="lost"}'
    return {
        "nodes": n, "connected": connected, "reports": count, "rate": count / (t1 - t0),
        "p50": quantile(buckets, 0.5), "p99": quantile(buckets, 0.99), "within_100ms": within / count if count else 0,
        "false_lost": after.get(lost_key, 0.0) - before.get(lost_key, 0.0),
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "lag_p99": quantile(delay_buckets(before, after, "originctl_event_loop_lag_seconds"), 0.99),
        "proc_p99": quantile(delay_buckets(before, after, "originctl_report_processing_seconds"), 0.99), "sim_errors": sum(s.get("errors", 0) for s in latest),
        "sim_max_lag": max((s.get("max_lag", 0) for s in latest), default=0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,1000", help="comma-separated fleet sizes, smallest first (reference)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--interval", type=float, default=2.0, help="s between reports per edge (edged's default)")
    ap.add_argument("--window", type=float, default=20.0, help="s measured, after every edge is connected")
    ap.add_argument("--ramp", type=float, default=120.0, help="s allowed for every edge to connect")
    ap.add_argument("--workdir", default=str(REPO / "var" / "bench-fleet"))
    ap.add_argument("--fresh", action="store_true", help="forget cached identities and controller state")
    ap.add_argument("--pin", action="store_true",
                    help="controller on CPU 0, simulators on the other CPUs (less interference on small machines)")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.workdir)
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"fleet_sim: sizes {sizes}, {args.workers} simulator processes, report every {args.interval:g} s, "
          f"{args.window:g} s window, {os.cpu_count()} CPUs", flush=True)
    results = []
    all_cpus = sorted(os.sched_getaffinity(0))
    ctl_cpus = {all_cpus[0]} if args.pin and len(all_cpus) > 1 else None
    sim_cpus = set(all_cpus[1:]) if ctl_cpus else None
    for n in sizes:
        ctl = Controller(workdir, ctl_cpus)
        ctl.start()  # a fresh controller process per size: nodes of the previous size start `lost` in it
        try:
            idents = identities(ctl, n)
            r = run_size(ctl, idents, args.workers, args.interval, args.window, args.ramp, sim_cpus)
        finally:
            ctl.stop()
        results.append(r)
        ref = results[0]
        print(f"{n:>6} nodes: connected {r['connected']:.0f}, {r['rate']:.0f} reports/s, delay p50 "
              f"{r['p50'] * 1000:.1f} ms p99 {r['p99'] * 1000:.1f} ms ({r['within_100ms'] * 100:.2f}% <= 100 ms), "
              f"false lost {r['false_lost']:.0f}, controller CPU {r['cpu'] * 100:.0f}%, loop lag p99 "
              f"{r['lag_p99'] * 1000:.1f} ms, processing p99 {r['proc_p99'] * 1000:.2f} ms, simulator max lag "
              f"{r['sim_max_lag'] * 1000:.0f} ms, errors {r['sim_errors']:.0f}; vs {ref['nodes']} nodes: p99 x"
              f"{r['p99'] / ref['p99']:.2f}, rate x{r['rate'] / ref['rate']:.2f}", flush=True)
    passing = [r for r in results if r["within_100ms"] >= 0.99 and r["false_lost"] == 0 and r["connected"] == r["nodes"]]
    best = max((int(r["nodes"]) for r in passing), default=0)
    print(f"largest fleet measured with p99 <= 100 ms and no false lost: {best or 'none'} nodes (goal 10000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
