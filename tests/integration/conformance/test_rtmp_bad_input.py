"""Bad RTMP input ends that one connection with a logged reason; a real publisher keeps streaming."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
from collections.abc import AsyncIterator

import pytest

from edged.config import RtmpConfig
from edged.ingest.auth import StaticAuthorizer
from edged.ingest.rtmp_server import RtmpServer
from edged.media.hub import StreamHub
from edged.media.stream import Stream
from tests.conftest import need

KEY = "good-key"


@pytest.fixture
async def server() -> AsyncIterator[tuple[RtmpServer, StreamHub]]:
    hub = StreamHub()
    cfg = RtmpConfig(listen="127.0.0.1:0", handshake_timeout=1.0, idle_timeout=1.0, max_chunk_size=65536,
                     max_message_size=1024 * 1024)
    srv = RtmpServer(cfg, hub, StaticAuthorizer({KEY: "good"}))
    await srv.start()
    try:
        yield srv, hub
    finally:
        await srv.stop()


async def _handshaked(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    c1 = bytes(8) + os.urandom(1528)  # simple handshake: time 0, zero version
    w.write(b"\x03" + c1)
    await w.drain()
    s0s1s2 = await r.readexactly(1 + 1536 + 1536)
    w.write(s0s1s2[1:1537])  # C2 echoes S1
    await w.drain()
    return r, w


def _chunk(csid: int, type_id: int, payload: bytes, length: int | None = None, chunk: int = 128) -> bytes:
    """A message as fmt-0 chunk plus fmt-3 continuations (RTMP 5.3.1)."""
    n = len(payload) if length is None else length
    head = bytes([csid]) + b"\x00\x00\x00" + n.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", 0)
    out = head + payload[:chunk]
    for i in range(chunk, len(payload), chunk):
        out += bytes([0xC0 | csid]) + payload[i : i + chunk]
    return out


async def _closed_by_server(r: asyncio.StreamReader, wait_s: float = 5.0) -> bool:
    try:
        while await asyncio.wait_for(r.read(65536), wait_s):
            pass
    except ConnectionError:
        pass
    return True


def _amf_string(s: str) -> bytes:
    return b"\x02" + len(s).to_bytes(2, "big") + s.encode()


def _publisher(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [need("ffmpeg"), "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "flv",
         f"rtmp://127.0.0.1:{port}/live/{KEY}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_bad_inputs_end_one_connection(server: tuple[RtmpServer, StreamHub],
                                            caplog: pytest.LogCaptureFixture) -> None:
    srv, hub = server
    caplog.set_level(logging.INFO)
    # closes of unauthenticated connections are rate-limited to one line per reason; the rest go to DEBUG
    caplog.set_level(logging.DEBUG, logger="edged.ingest.rtmp_server")
    streams: list[Stream] = []
    hub.add_listener(streams.append)
    pub = _publisher(srv.port)
    try:
        for _ in range(100):
            if streams:
                break
            await asyncio.sleep(0.1)
        assert streams, "the good publisher is live"
        reader = streams[0].add_reader("probe")

        # 1. garbage instead of a handshake
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(2000))
        await w.drain()
        assert await _closed_by_server(r)
        w.close()
        # 2. absurd chunk size
        r, w = await _handshaked(srv.port)
        w.write(_chunk(2, 1, struct.pack(">I", 0x7FFFFFFF)))
        await w.drain()
        assert await _closed_by_server(r)
        w.close()
        # 3. absurd message length (16 MiB > the 1 MiB cap, and the pre-publish budget)
        r, w = await _handshaked(srv.port)
        w.write(_chunk(3, 20, b"\x02\x00\x07connect", length=0xFFFFFF))
        await w.drain()
        assert await _closed_by_server(r)
        w.close()
        # 4. deeply nested AMF0 object
        deep = _amf_string("connect") + b"\x00" + struct.pack(">d", 1.0)
        deep += b"\x03\x00\x01a" * 200 + b"\x05" + b"\x00\x00\x09" * 200
        r, w = await _handshaked(srv.port)
        w.write(_chunk(3, 20, deep))
        await w.drain()
        assert await _closed_by_server(r)
        w.close()
        # 5. truncated message, then silence: the idle timeout ends it
        r, w = await _handshaked(srv.port)
        w.write(_chunk(3, 20, _amf_string("connect"), length=500))
        await w.drain()
        assert await _closed_by_server(r)
        w.close()
        # 6. connects and never sends a byte
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await _closed_by_server(r)
        w.close()

        # The good publisher never stopped: packets keep arriving and nothing was dropped.
        before = reader.qsize()
        await asyncio.sleep(1.0)
        assert reader.qsize() > before
        assert reader.dropped == 0
        assert hub.live_channels() == ["good"]
    finally:
        pub.kill()
        pub.communicate()

    text = caplog.text
    assert "protocol error" in text
    assert "chunk size" in text.lower()
    assert "no publish request within the handshake timeout" in text
    assert text.count("closed: protocol error") >= 3
    assert "closed: over budget: message of 16777215 bytes" in text
