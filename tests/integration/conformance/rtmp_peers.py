"""Raw RTMP peers for the RTMP conformance tests (attackers and a scripted publisher) and /proc figures.

Attackers are asyncio sockets on loopback. Where a test needs an attacker to be a different source
address from the honest encoder (per-address limits), it binds the *client* socket to another loopback
address (127.0.0.2): nothing listens there, and no packet leaves the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.client import RtmpClientSession

HANDSHAKE_SIZE = 1536


def chunk(csid: int, type_id: int, payload: bytes, *, length: int | None = None, size: int = 128,
          stream_id: int = 0) -> bytes:
    """A message as a type-0 chunk plus type-3 continuations of ``size`` bytes (RTMP 5.3.1)."""
    n = len(payload) if length is None else length
    head = bytes([csid]) + bytes(3) + n.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", stream_id)
    out = bytearray(head + payload[:size])
    for i in range(size, len(payload), size):
        out += bytes([0xC0 | csid]) + payload[i : i + size]
    return bytes(out)


def ping_request(n: int = 0) -> bytes:
    """User Control Ping Request (section 7.1.7) on chunk stream 2."""
    return chunk(2, 4, struct.pack(">HI", 6, n & 0xFFFFFFFF))


def connect_command(app: str = "live") -> bytes:
    return chunk(3, 20, amf0.encode("connect", 1.0, {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}"}))


async def open_from(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to 127.0.0.1:``port`` whose source address is ``source`` (a loopback address)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def handshaked(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection past the simple handshake (section 5.2), nothing else sent."""
    r, w = await open_from(port, source)
    w.write(b"\x03" + bytes(8) + os.urandom(HANDSHAKE_SIZE - 8))
    await w.drain()
    s0s1s2 = await r.readexactly(1 + 2 * HANDSHAKE_SIZE)
    w.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
    await w.drain()
    return r, w


async def closed_by_server(r: asyncio.StreamReader, wait_s: float) -> bool:
    """True when the server closes the connection within ``wait_s`` (whatever it sent first)."""
    try:
        async with asyncio.timeout(wait_s):
            while await r.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def still_open(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    """The server has not closed this connection (no EOF or reset has reached us)."""
    return not (r.at_eof() or r.exception() is not None or w.is_closing())


async def publish(port: int, key: str, source: str = "127.0.0.1",
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, RtmpClientSession]:
    """A scripted publisher (the client core over a socket) that stops once the publish is accepted."""
    r, w = await open_from(port, source)
    client = RtmpClientSession(app="live", tc_url=f"rtmp://127.0.0.1:{port}/live", stream_key=key)
    client.connect()
    async with asyncio.timeout(10):
        while True:
            w.write(client.data_to_send())
            await w.drain()
            data = await r.read(65536)
            if not data:
                raise ConnectionError("server closed the connection before accepting the publish")
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, ev.PublishAccepted):
                    w.write(client.data_to_send())
                    return r, w, client
                if isinstance(event, ev.PublishRejected):
                    raise ConnectionError(f"publish refused: {event.code}")


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    """Reset every connection now (abort closes the socket on the next loop pass: let it run)."""
    for w in writers:
        with contextlib.suppress(Exception):
            w.transport.abort()
    await asyncio.sleep(0.05)


async def eventually(predicate: Callable[[], object], within: float, what: str) -> None:
    """Wait, letting the loop run, until ``predicate()`` is true; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


def rss_kib(pid: int) -> int:
    """VmRSS of a process (KiB), from /proc/PID/status."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match, "VmRSS missing"
    return int(match.group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0
