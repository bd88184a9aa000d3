"""Handshake (RTMP 1.0 section 5.2): simple echo and the Flash Player 9 digest dialect."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edged.errors import LocalProtocolError, RemoteProtocolError
from edged.protocols.buffer import ReceiveBuffer
from edged.protocols.rtmp.handshake import ClientHandshake, HandshakeState, ServerHandshake
from tests.unit.protocols.rtmp.helpers import fixed_random

# Written out here independently of the implementation's constants.
SUFFIX = bytes(
    [
        0xF0,
        0xEE,
        0xC2,
        0x4A,
        0x80,
        0x68,
        0xBE,
        0xE8,
        0x2E,
        0x00,
        0xD0,
        0xD1,
        0x02,
        0x9E,
        0x7E,
        0x57,
        0x6E,
        0xEC,
        0x5D,
        0x2D,
        0x29,
        0x80,
        0x6F,
        0xAB,
        0x93,
        0xB8,
        0xE6,
        0x36,
        0xCF,
        0xEB,
        0x31,
        0xAE,
    ]
)
FP_KEY = b"Genuine Adobe Flash Player 001" + SUFFIX
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + SUFFIX


def _sha(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _offset(packet: bytes, base: int) -> int:
    return (packet[base] + packet[base + 1] + packet[base + 2] + packet[base + 3]) % 728 + base + 4


def _digest_ok(packet: bytes, base: int, key: bytes) -> bool:
    at = _offset(packet, base)
    return _sha(key, packet[:at] + packet[at + 32 :]) == packet[at : at + 32]


def _make_c1(base: int, version: bytes = b"\x09\x00\x7c\x02") -> bytes:
    c1 = bytearray(b"\x00\x00\x00\x00" + version + fixed_random(7)(1528))
    at = _offset(bytes(c1), base)
    c1[at : at + 32] = _sha(FP_KEY[:30], bytes(c1[:at] + c1[at + 32 :]))
    return bytes(c1)


def _run_server(c0c1: bytes, piece: int | None = None) -> tuple[ServerHandshake, bytes]:
    hs = ServerHandshake(fixed_random(3))
    buf = ReceiveBuffer()
    out = b""
    step = piece or len(c0c1)
    for start in range(0, len(c0c1), step):
        buf.feed(c0c1[start : start + step])
        out += hs.advance(buf)
    return hs, out


def test_simple_handshake_echoes_c1() -> None:
    c1 = bytes(8) + fixed_random(5)(1528)
    hs, out = _run_server(b"\x03" + c1)
    assert len(out) == 1 + 1536 + 1536
    assert out[0] == 3
    s1, s2 = out[1:1537], out[1537:]
    assert s1[:8] == bytes(8)  # section 5.2.3: time 0, then four zero bytes
    assert s2 == c1  # section 5.2.4: S2 echoes C1
    assert hs.state is HandshakeState.WAIT_C2 and not hs.digest


def test_c2_completes_and_leaves_trailing_bytes() -> None:
    hs = ServerHandshake(fixed_random())
    buf = ReceiveBuffer()
    buf.feed(b"\x03" + bytes(1536) + bytes(1536) + b"\x02rest")
    hs.advance(buf)
    assert hs.state is HandshakeState.DONE
    assert hs.bytes_read == 3073
    assert buf.consume_at_most(10) == b"\x02rest"


def test_byte_by_byte_feeding() -> None:
    hs, out = _run_server(b"\x03" + bytes(1536), piece=1)
    assert len(out) == 3073 and hs.state is HandshakeState.WAIT_C2


@pytest.mark.parametrize("version", [0, 6, 0xFF])
def test_bad_c0_version_is_refused_at_once(version: int) -> None:
    buf = ReceiveBuffer()
    buf.feed(bytes([version]))
    with pytest.raises(RemoteProtocolError):
        ServerHandshake().advance(buf)


@pytest.mark.parametrize("base", [8, 772])
def test_digest_handshake_is_answered_with_valid_digests(base: int) -> None:
    c1 = _make_c1(base)
    hs, out = _run_server(b"\x03" + c1)
    s1, s2 = out[1:1537], out[1537:]
    assert hs.digest
    assert s1[4:8] != bytes(4) and s1[4] >= 3  # FFmpeg checks the digest only if S1[4] >= 3
    # S1 carries a server digest keyed by the first 36 bytes of the FMS key, same scheme as C1.
    assert _digest_ok(s1, base, FMS_KEY[:36])
    # S2's last 32 bytes: HMAC over the rest, keyed by HMAC(full FMS key, C1's digest).
    c1_digest = c1[_offset(c1, base) : _offset(c1, base) + 32]
    assert _sha(_sha(FMS_KEY, c1_digest), s2[:-32]) == s2[-32:]


def test_version_without_valid_digest_gets_simple_answer() -> None:
    c1 = bytearray(_make_c1(8))
    c1[100] ^= 0xFF  # corrupt a byte covered by the digest
    _, out = _run_server(b"\x03" + bytes(c1))
    assert out[1537:] == bytes(c1)


def test_zero_version_skips_digest_even_if_present() -> None:
    c1 = _make_c1(8, version=bytes(4))
    hs, out = _run_server(b"\x03" + c1)
    assert not hs.digest and out[1537:] == c1


def _client_server_exchange(digest: bool) -> tuple[ClientHandshake, ServerHandshake, bytes]:
    client = ClientHandshake(fixed_random(11), digest=digest)
    server = ServerHandshake(fixed_random(12))
    sbuf, cbuf = ReceiveBuffer(), ReceiveBuffer()
    sbuf.feed(client.start())
    cbuf.feed(server.advance(sbuf))
    c2 = client.advance(cbuf)
    sbuf.feed(c2)
    server.advance(sbuf)
    assert client.state is server.state is HandshakeState.DONE
    return client, server, c2


def test_client_simple_handshake_echoes_s1() -> None:
    client, server, c2 = _client_server_exchange(digest=False)
    assert not client.digest and not server.digest
    assert len(c2) == 1536


def test_client_digest_handshake_signs_c2() -> None:
    client, server, c2 = _client_server_exchange(digest=True)
    assert client.digest and server.digest


def test_client_digest_rejects_bad_s2_signature() -> None:
    client = ClientHandshake(fixed_random(11), digest=True)
    server = ServerHandshake(fixed_random(12))
    sbuf, cbuf = ReceiveBuffer(), ReceiveBuffer()
    sbuf.feed(client.start())
    reply = bytearray(server.advance(sbuf))
    reply[-1] ^= 1
    cbuf.feed(bytes(reply))
    with pytest.raises(RemoteProtocolError):
        client.advance(cbuf)


def test_client_refuses_bad_s0() -> None:
    client = ClientHandshake(fixed_random())
    client.start()
    buf = ReceiveBuffer()
    buf.feed(b"\x08")
    with pytest.raises(RemoteProtocolError):
        client.advance(buf)


def test_client_start_twice_is_a_local_error() -> None:
    client = ClientHandshake(fixed_random())
    client.start()
    with pytest.raises(LocalProtocolError):
        client.start()


def test_short_random_source_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        ServerHandshake(lambda n: b"x").advance(_fed(b"\x03" + bytes(1536)))


def _fed(data: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    buf.feed(data)
    return buf
