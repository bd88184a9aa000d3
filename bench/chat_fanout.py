"""Chat fan-out benchmark: 1,000 IRC clients in one room, against Debian's ngircd in the same run.

edged: `originctl serve` (the chat hub) and two edges, `edged run --origin`. --clients readers join the room
on edge A (anonymous, tags and commands capabilities); --senders authenticated chatters (tokens from
`originctl chat token`) send on edge B, so every message crosses the hub: B → controller → A → clients.
The controller's chat limits are raised for the run (the default 20 messages per 30 s per user would refuse
most of the load; the bench measures delivery, not the limiter). 50 senders keep each connection at 10 lines/s
at 500 messages/s, under the edge's 20 lines/s per connection.

Reference, same run, same load: ngircd (Debian's, `apt-get install ngircd`), one server, no fleet, flood
penalties off, the same readers and senders.

For each rate in --rates (messages/s, all senders together), over --seconds: deliveries per second (PRIVMSG
lines received by all readers), expected deliveries (sent × readers), p50/p99 delivery latency measured on
20 readers (send → received, CLOCK_MONOTONIC across processes), the share delivered within 500 ms (the
SLO: 99.5 %), and for edged, edge A's CPU (% of one core) and RSS per connection. Goal: ≥ ngircd's
deliveries/s, p99 < 100 ms, and the SLO held at 500 messages/s.

    .venv/bin/python bench/chat_fanout.py [--clients 1000] [--senders 50] [--rates 50,500] [--seconds 20]
                                          [--no-ngircd] [--no-edged]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chat_load import Target, run_load  # noqa: E402
from bench.relay import Fleet, cpu_seconds, free_port, http_get, pct  # noqa: E402

ROOM = "bench"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ngircd_start(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    if not os.path.exists(binary):
        raise SystemExit("ngircd not found: apt-get install ngircd (or pass --no-ngircd)")
    port = free_port()
    conf = work / "ngircd.conf"
    conf.write_text(f"""[Global]
Name = bench.local
Info = bench
Listen = 127.0.0.1
Ports = {port}
PidFile = {work}/ngircd.pid
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 60
[Options]
DNS = no
Ident = no
PAM = no
""")
    p = subprocess.Popen([binary, "--nodaemon", "--config", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("ngircd did not start")


def summary(name: str, rate: float, r: dict[str, Any], clients: int, extra: str = "") -> dict[str, Any]:
    lat = r["latencies_ms"]
    within = sum(1 for x in lat if x < 500) / len(lat) if lat else 0.0
    row = {"server": name, "rate": rate, "sent_per_s": round(r["sent_per_s"], 1),
           "deliveries_per_s": round(r["deliveries_per_s"]), "delivered_share": round(r["deliveries"] / max(1, r["expected"]), 4),
           "p50_ms": round(pct(lat, 50), 1) if lat else None, "p99_ms": round(pct(lat, 99), 1) if lat else None,
           "within_500ms": round(within, 4), "lost_connections": r["lost_connections"]}
    print(f"{name:7s} {rate:6.0f}/s  sent {row['sent_per_s']:7.1f}/s  deliveries {row['deliveries_per_s']:8d}/s "
          f"({row['delivered_share']:.1%} of sent×{clients})  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
          f"<500ms {within:.2%}  dropped conns {row['lost_connections']} {extra}", flush=True)
    return row


def bench_ngircd(work: Path, args: argparse.Namespace, rates: list[float]) -> list[dict[str, Any]]:
    p, port = ngircd_start(work)
    rows = []
    try:
        for rate in rates:
            target = Target("127.0.0.1", port, port, ROOM,
                            ["NICK r{i}", "USER r{i} 0 * :r", f"JOIN #{ROOM}"],
                            [[f"NICK s{k}", f"USER s{k} 0 * :s", f"JOIN #{ROOM}"] for k in range(args.senders)])
            c0 = cpu_seconds(p.pid)
            t0 = time.monotonic()
            r = run_load(target, args.clients, rate, args.seconds)
            cpu = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0) * 100
            rows.append(summary("ngircd", rate, r, args.clients, f"cpu {cpu:.0f}% (incl. logins)"))
    finally:
        p.terminate()
        p.wait(10)
    return rows


def bench_edged(work: Path, args: argparse.Namespace, rates: list[float]) -> list[dict[str, Any]]:
    fleet = Fleet(work, 2.0)
    rows = []
    try:
        fleet.controller("[chat.limits]\nmessages_per_window = 1000000\nmoderator_messages_per_window = 1000000\n")
        tokens = fleet.cli("token", "create", "--count", "2").split()
        irc = {}
        for name in ("a", "b"):
            fleet.edge(name, tokens.pop())
            irc[name] = fleet.edges[name]["irc"]
        fleet.wait(lambda: fleet.node_id("a") and fleet.node_id("b"), "enrollment")
        fleet.wait(lambda: http_get(f"http://127.0.0.1:{fleet.edges['a']['http']}/healthz")[0] == 200, "edge a")
        time.sleep(2)
        senders = []
        for k in range(args.senders):
            tok = fleet.cli("chat", "token", "--user", str(1000 + k), "--login", f"sender{k}").strip()
            senders.append([f"PASS oauth:{tok}", f"NICK sender{k}", "CAP REQ :twitch.tv/tags twitch.tv/commands",
                            f"JOIN #{ROOM}"])
        pid = fleet.procs["a"].pid
        for rate in rates:
            target = Target("127.0.0.1", irc["a"], irc["b"], ROOM,
                            ["CAP REQ :twitch.tv/tags twitch.tv/commands", "PASS SCHMOOPIIE", "NICK justinfan{i}",
                             f"JOIN #{ROOM}"], senders)
            rss0 = rss_bytes(pid)
            others = {"B": fleet.procs["b"].pid, "controller": fleet.procs["originctl"].pid}
            c0 = cpu_seconds(pid)
            o0 = {k: cpu_seconds(v) for k, v in others.items()}
            t0 = time.monotonic()
            r = run_load(target, args.clients, rate, args.seconds)
            took = time.monotonic() - t0
            cpu = (cpu_seconds(pid) - c0) / took * 100
            ocpu = ", ".join(f"{k} {(cpu_seconds(v) - o0[k]) / took * 100:.0f}%" for k, v in others.items())
            rss_per = max(0, rss_bytes(pid) - rss0) / args.clients
            rows.append(summary("edged", rate, r, args.clients,
                                f"edge A cpu {cpu:.0f}% (incl. logins; {ocpu}), RSS +{rss_per / 1024:.1f} KiB/conn"))
    finally:
        fleet.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=50)
    ap.add_argument("--rates", default="50,500")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--no-ngircd", action="store_true")
    ap.add_argument("--no-edged", action="store_true")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    rows: list[dict[str, Any]] = []
    if not args.no_ngircd:
        rows += bench_ngircd(work, args, rates)
    if not args.no_edged:
        rows += bench_edged(work, args, rates)
    ref = {r["rate"]: r for r in rows if r["server"] == "ngircd"}
    for r in rows:
        if r["server"] == "edged" and r["rate"] in ref and ref[r["rate"]]["deliveries_per_s"]:
            print(f"ratio at {r['rate']:.0f}/s: edged / ngircd deliveries per second = "
                  f"{r['deliveries_per_s'] / ref[r['rate']]['deliveries_per_s']:.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
