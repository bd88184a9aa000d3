"""RTMP handshake (Adobe RTMP specification 1.0, section 5.2), server and client roles.

Two dialects exist on the wire. The spec's "simple" handshake echoes C1 as S2. Flash
Player 9 and later (and FFmpeg's client) put an HMAC-SHA256 digest into C1 and expect
a server that recognises it to answer with a digest in S1 and a signed S2; a server
that does not recognise it answers the simple way, which publishers accept.

Digest layout: after time (4 bytes) and version (4 bytes) come two 764-byte blocks.
The digest sits in one of them at an offset derived from four bytes at the start of
that block: ``sum(p[base:base + 4]) % 728 + base + 4`` with base 8 or 772. The digest
is the HMAC of the 1536-byte packet minus those 32 bytes, keyed by the first 30 bytes
of the player key (client) or the first 36 bytes of the server key (server).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from enum import Enum, auto

from edged.errors import LocalProtocolError, RemoteProtocolError
from edged.protocols.buffer import ReceiveBuffer

RTMP_VERSION = 3  # section 5.2.2: C0/S0 carry 3; 6 (RTMPE) and others are refused
PACKET_SIZE = 1536  # section 5.2.3: C1/S1/C2/S2 are 1536 bytes each
DIGEST_SIZE = 32  # SHA-256 output
DIGEST_BASES = (8, 772)  # where each of the two 764-byte blocks starts
_DIGEST_MOD = 728  # 764 - 32 digest - 4 offset bytes

# The well-known 32-byte suffix shared by both keys of the Flash Player 9 handshake.
_KEY_SUFFIX = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
PLAYER_KEY = b"Genuine Adobe Flash Player 001" + _KEY_SUFFIX  # 62 bytes
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_SUFFIX  # 68 bytes
PLAYER_KEY_PARTIAL = PLAYER_KEY[:30]
SERVER_KEY_PARTIAL = SERVER_KEY[:36]

# Version field we put into a digest S1; its first byte must be >= 3 for FFmpeg to check it.
_SERVER_VERSION = bytes((4, 5, 0, 1))
# Version field our digest-capable client puts into C1 (that of Flash Player 9.0.124.2).
_CLIENT_VERSION = bytes((9, 0, 124, 2))

RandomBytes = Callable[[int], bytes]


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes | bytearray, base: int) -> int:
    """Where the digest of a C1/S1 lies when its block starts at ``base`` (8 or 772)."""
    return sum(packet[base : base + 4]) % _DIGEST_MOD + base + 4


def compute_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 of ``packet`` without the 32 digest bytes at ``offset``."""
    return _hmac(key, packet[:offset] + packet[offset + DIGEST_SIZE :])


def find_digest(packet: bytes, key: bytes) -> int | None:
    """Return the offset of a valid digest in ``packet`` (trying both bases), or None."""
    for base in DIGEST_BASES:
        offset = digest_offset(packet, base)
        expected = compute_digest(packet, offset, key)
        if hmac.compare_digest(expected, packet[offset : offset + DIGEST_SIZE]):
            return offset
    return None


def imprint_digest(packet: bytearray, base: int, key: bytes) -> int:
    """Write the digest into ``packet`` at the offset chosen by ``base``; return the offset."""
    offset = digest_offset(packet, base)
    packet[offset : offset + DIGEST_SIZE] = compute_digest(bytes(packet), offset, key)
    return offset


def sign_response(packet: bytearray, peer_digest: bytes, key: bytes) -> None:
    """Set the last 32 bytes of an S2/C2 to its HMAC keyed by HMAC(key, peer's digest)."""
    signing_key = _hmac(key, peer_digest)
    packet[-DIGEST_SIZE:] = _hmac(signing_key, bytes(packet[:-DIGEST_SIZE]))


def response_is_signed(packet: bytes, own_digest: bytes, key: bytes) -> bool:
    """Check an S2/C2 signed with ``sign_response`` against our own C1/S1 digest."""
    signing_key = _hmac(key, own_digest)
    expected = _hmac(signing_key, packet[:-DIGEST_SIZE])
    return hmac.compare_digest(expected, packet[-DIGEST_SIZE:])


def _random_packet(random_bytes: RandomBytes, header: bytes) -> bytearray:
    body = random_bytes(PACKET_SIZE - len(header))
    if len(body) != PACKET_SIZE - len(header):
        raise ValueError("random_bytes returned the wrong number of bytes")
    return bytearray(header + body)


class HandshakeState(Enum):
    """Progress of one side's handshake."""

    START = auto()  # client only: nothing sent yet
    WAIT_PEER_HELLO = auto()  # waiting for C0+C1 (server) or S0+S1+S2 (client)
    WAIT_C2 = auto()  # server only: S0+S1+S2 sent, waiting for C2
    DONE = auto()


class ServerHandshake:
    """Server side: read C0+C1, answer S0+S1+S2, then read (and ignore) C2."""

    def __init__(self, random_bytes: RandomBytes = os.urandom) -> None:
        self._random_bytes = random_bytes
        self.state = HandshakeState.WAIT_PEER_HELLO
        self.digest = False  # True when the client used, and we answered, the digest handshake
        self.bytes_read = 0

    def advance(self, buf: ReceiveBuffer) -> bytes:
        """Consume what the handshake needs from ``buf``; return bytes to send (maybe empty)."""
        out = b""
        if self.state is HandshakeState.WAIT_PEER_HELLO:
            head = buf.peek(1)
            if head and head[0] != RTMP_VERSION:
                raise RemoteProtocolError(f"unsupported RTMP version {head[0]} in C0")
            hello = buf.consume_exactly(1 + PACKET_SIZE)
            if hello is None:
                return out
            self.bytes_read += buf.commit()
            out = self._answer(hello[1:])
            self.state = HandshakeState.WAIT_C2
        if self.state is HandshakeState.WAIT_C2:
            # C2 should echo S1, but FFmpeg and others send variants; nothing depends on it.
            if buf.consume_exactly(PACKET_SIZE) is None:
                return out
            self.bytes_read += buf.commit()
            self.state = HandshakeState.DONE
        return out

    def _answer(self, c1: bytes) -> bytes:
        client_digest_at = find_digest(c1, PLAYER_KEY_PARTIAL) if c1[4:8] != b"\0\0\0\0" else None
        if client_digest_at is None:
            # Section 5.2.3/5.2.4: S1 is time + zero + random; S2 echoes C1.
            s1 = _random_packet(self._random_bytes, b"\0" * 8)
            return bytes((RTMP_VERSION,)) + bytes(s1) + c1
        self.digest = True
        base = DIGEST_BASES[0] if client_digest_at < DIGEST_BASES[1] else DIGEST_BASES[1]
        s1 = _random_packet(self._random_bytes, b"\0" * 4 + _SERVER_VERSION)
        imprint_digest(s1, base, SERVER_KEY_PARTIAL)
        s2 = _random_packet(self._random_bytes, b"")
        sign_response(s2, c1[client_digest_at : client_digest_at + DIGEST_SIZE], SERVER_KEY)
        return bytes((RTMP_VERSION,)) + bytes(s1) + bytes(s2)


class ClientHandshake:
    """Client side: send C0+C1, read S0+S1+S2, answer C2."""

    def __init__(self, random_bytes: RandomBytes = os.urandom, digest: bool = False) -> None:
        self._random_bytes = random_bytes
        self._use_digest = digest
        self._own_digest: bytes | None = None
        self.state = HandshakeState.START
        self.digest = False  # True when the server answered the digest handshake and it checked out
        self.bytes_read = 0

    def start(self) -> bytes:
        """Return C0+C1."""
        if self.state is not HandshakeState.START:
            raise LocalProtocolError("handshake already started")
        if self._use_digest:
            c1 = _random_packet(self._random_bytes, b"\0" * 4 + _CLIENT_VERSION)
            offset = imprint_digest(c1, DIGEST_BASES[0], PLAYER_KEY_PARTIAL)
            self._own_digest = bytes(c1[offset : offset + DIGEST_SIZE])
        else:
            c1 = _random_packet(self._random_bytes, b"\0" * 8)
        self.state = HandshakeState.WAIT_PEER_HELLO
        return bytes((RTMP_VERSION,)) + bytes(c1)

    def advance(self, buf: ReceiveBuffer) -> bytes:
        """Consume S0+S1+S2 from ``buf`` once complete; return C2 (or b"" while waiting)."""
        if self.state is not HandshakeState.WAIT_PEER_HELLO:
            return b""
        head = buf.peek(1)
        if head and head[0] != RTMP_VERSION:
            raise RemoteProtocolError(f"unsupported RTMP version {head[0]} in S0")
        hello = buf.consume_exactly(1 + 2 * PACKET_SIZE)
        if hello is None:
            return b""
        self.bytes_read += buf.commit()
        s1, s2 = hello[1 : 1 + PACKET_SIZE], hello[1 + PACKET_SIZE :]
        self.state = HandshakeState.DONE
        server_digest_at = None
        if self._own_digest is not None and s1[4:8] != b"\0\0\0\0":
            server_digest_at = find_digest(s1, SERVER_KEY_PARTIAL)
        if server_digest_at is None:
            return s1  # section 5.2.4: C2 echoes S1
        if not response_is_signed(s2, self._own_digest or b"", SERVER_KEY):
            raise RemoteProtocolError("S2 signature does not match our C1 digest")
        self.digest = True
        c2 = _random_packet(self._random_bytes, b"")
        sign_response(c2, s1[server_digest_at : server_digest_at + DIGEST_SIZE], PLAYER_KEY)
        return bytes(c2)
