"""Chat load for bench/chat_fanout.py: many IRC readers in one room, a few senders at a fixed total rate.

Runs in worker processes (the load must not share a core's event loop with what it measures):

  * a reader logs in (anonymously on edged, a plain nick on ngircd), joins the room and counts the PRIVMSG
    lines it receives; `measured` readers also parse each line's `t=` field (the sender's CLOCK_MONOTONIC in
    ns, comparable across processes on one host) and keep the delivery latency;
  * a sender sends `PRIVMSG #room :t=<ns> n=<k>` on a fixed schedule, total `rate` messages/s over all senders.

Every reader answers PING. Results go back through a multiprocessing queue as plain dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    host: str
    reader_port: int
    sender_port: int
    room: str
    reader_login: list[str]  # lines to send after connecting; "{i}" is replaced by the reader's number
    sender_logins: list[list[str]]  # one list of lines per sender
    extra: dict[str, Any] = field(default_factory=dict)


class _Reader(asyncio.Protocol):
    def __init__(self, measured: bool, stats: dict[str, Any]) -> None:
        self.measured = measured
        self.stats = stats
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.joined = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        data = self.buf + data
        cut = data.rfind(b"\n") + 1
        self.buf, data = data[cut:], data[:cut]
        got = data.count(b" PRIVMSG ")
        self.stats["received"] += got
        if b"PING" in data:
            for line in data.split(b"\n"):
                if line.startswith(b"PING"):
                    assert self.transport is not None
                    self.transport.write(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
        if not self.joined.done() and (b" 366 " in data or b" JOIN " in data):
            self.joined.set_result(None)
        if self.measured and got:
            lat = self.stats["latencies"]
            for line in data.split(b"\n"):
                i = line.find(b":t=")
                if i > 0 and b" PRIVMSG " in line:
                    sent = int(line[i + 3:line.index(b" ", i)])
                    lat.append((now - sent) / 1e6)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stats.get("closing"):
            self.stats["lost"] += 1  # the server hung up on it
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))


async def _readers(target: Target, first: int, count: int, measured: int, seconds: float,
                   ready: Any, go: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats: dict[str, Any] = {"received": 0, "lost": 0, "latencies": []}
    protos: list[_Reader] = []
    for i in range(first, first + count):
        _, proto = await loop.create_connection(lambda i=i: _Reader(i - first < measured, stats), target.host,
                                                target.reader_port)
        assert proto.transport is not None
        proto.transport.write("".join(line.replace("{i}", str(i)) + "\r\n" for line in target.reader_login).encode())
        protos.append(proto)
        if len(protos) % 50 == 0:
            await asyncio.sleep(0.05)  # a login burst, not a flood
    await asyncio.wait_for(asyncio.gather(*(p.joined for p in protos)), 120)
    ready.set()
    await asyncio.to_thread(go.wait)
    stats["received"] = 0
    stats["latencies"].clear()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    stats["elapsed"] = time.monotonic() - started
    await asyncio.sleep(1.0)  # the last messages in flight
    stats["received_total"] = stats["received"]
    stats["closing"] = True
    for p in protos:
        if p.transport is not None:
            p.transport.close()
    return stats


async def _senders(target: Target, rate: float, seconds: float, ready: Any, go: Any) -> dict[str, Any]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for login in target.sender_logins:
        r, w = await asyncio.open_connection(target.host, target.sender_port)
        w.write("".join(line + "\r\n" for line in login).encode())
        conns.append((r, w))

    async def drain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await r.readline():
                if line.startswith(b"PING"):
                    w.write(b"PONG" + line[4:])

    drains = [asyncio.create_task(drain(r, w)) for r, w in conns]
    await asyncio.sleep(2.0)  # logins and joins done
    ready.set()
    await asyncio.to_thread(go.wait)
    sent = 0
    started = time.monotonic()
    interval = 1.0 / rate
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) / interval) + 1
        while sent < due:
            _, w = conns[sent % len(conns)]
            w.write(f"PRIVMSG #{target.room} :t={time.monotonic_ns()} n={sent}\r\n".encode())
            sent += 1
        await asyncio.sleep(min(interval, 0.005))
    await asyncio.sleep(1.0)
    for t in drains:
        t.cancel()
    for _, w in conns:
        w.close()
    return {"sent": sent, "elapsed": time.monotonic() - started - 1.0}


def _run(kind: str, args: tuple[Any, ...], out: Any) -> None:
    try:
        coro = _readers(*args) if kind == "readers" else _senders(*args)
        out.put((kind, asyncio.run(coro)))
    except Exception as exc:  # reported to the parent, which prints it
        out.put((kind, {"error": repr(exc)}))


def run_load(target: Target, readers: int, rate: float, seconds: float, processes: int = 2,
             measured: int = 20) -> dict[str, Any]:
    """Readers in `processes` worker processes and one sender process; → totals and latencies (ms)."""
    ctx = mp.get_context("fork")
    out: Any = ctx.Queue()
    go = ctx.Event()
    readies = []
    procs = []
    per = readers // processes
    for k in range(processes):
        ready = ctx.Event()
        readies.append(ready)
        n = per if k < processes - 1 else readers - per * (processes - 1)
        procs.append(ctx.Process(target=_run, args=("readers", (target, k * per, n, measured // processes, seconds,
                                                               ready, go), out)))
    sready = ctx.Event()
    readies.append(sready)
    procs.append(ctx.Process(target=_run, args=("senders", (target, rate, seconds, sready, go), out)))
    for p in procs:
        p.start()
    deadline = time.monotonic() + 180
    while not all(r.is_set() for r in readies):
        if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
            break
        if not out.empty():
            break  # a worker failed before it was ready
        time.sleep(0.1)
    go.set()
    results = [out.get(timeout=seconds + 240) for _ in procs]
    for p in procs:
        p.join(10)
    errors = [r["error"] for _, r in results if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    rd = [r for k, r in results if k == "readers"]
    sd = next(r for k, r in results if k == "senders")
    lat = sorted(x for r in rd for x in r["latencies"])
    return {"sent": sd["sent"], "sent_per_s": sd["sent"] / sd["elapsed"],
            "deliveries": sum(r["received_total"] for r in rd),
            "deliveries_per_s": sum(r["received_total"] for r in rd) / max(r["elapsed"] for r in rd),
            "expected": sd["sent"] * readers, "lost_connections": sum(r["lost"] for r in rd),
            "latencies_ms": lat}
