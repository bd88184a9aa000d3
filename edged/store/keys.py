"""Pure LMDB key encoding: (channel, rendition[, seq]) with big-endian sequence numbers so that
lexicographic key order is (channel, rendition, seq) order."""

from __future__ import annotations

SEP = b"\x00"  # never valid in channel or rendition names


def prefix(channel: str, rendition: str) -> bytes:
    return channel.encode() + SEP + rendition.encode() + SEP


def segment_key(channel: str, rendition: str, seq: int) -> bytes:
    return prefix(channel, rendition) + seq.to_bytes(8, "big")


def split_segment_key(key: bytes) -> tuple[str, str, int]:
    channel, rendition = key[:-9].split(SEP, 1)
    return channel.decode(), rendition.decode(), int.from_bytes(key[-8:], "big")


def age_key(written_ns: int, seg_key: bytes) -> bytes:
    """Global eviction index: oldest write first."""
    return written_ns.to_bytes(8, "big") + seg_key


def seg_key_of_age_key(key: bytes) -> bytes:
    return key[8:]
