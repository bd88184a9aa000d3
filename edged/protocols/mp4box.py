"""ISO BMFF (ISO/IEC 14496-12) box serialisation helpers for the CMAF writer; pure bytes."""

from __future__ import annotations

import struct

_U32_MAX = 0xFFFFFFFF


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box: 32-bit size, four-character type, payload (a 64-bit largesize when needed)."""
    body = b"".join(payload)
    size = 8 + len(body)
    if size > _U32_MAX:
        return struct.pack(">I4sQ", 1, kind, size + 8) + body
    return struct.pack(">I4s", size, kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with version (8 bits) and flags (24 bits)."""
    return box(kind, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *payload)


def u8(v: int) -> bytes:
    return struct.pack(">B", v)


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


# The unity matrix of mvhd/tkhd (16.16 and 2.30 fixed point).
UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3): tag, variable-length size, payload."""
    n = len(payload)
    size = bytearray([n & 0x7F])
    n >>= 7
    while n:
        size.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes([tag]) + bytes(size) + payload
