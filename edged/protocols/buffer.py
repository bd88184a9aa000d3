"""Receive buffer for sans-IO parsers: read tentatively, then commit or roll back.

A reader consumes a header field by field; if the bytes run out half way it rolls back
to the last commit and waits for more, so a header split across reads is re-parsed from
its start and never half-applied (the idea of wsproto's ``Buffer``).
"""

from __future__ import annotations

# Committed bytes are dropped from the front lazily: deleting from a bytearray's head
# costs a copy of the remainder, so we only compact once this much is dead (bytes).
_COMPACT_THRESHOLD = 64 * 1024


class ReceiveBuffer:
    """Bytes received from a peer, with a read cursor that can be committed or rolled back."""

    __slots__ = ("_data", "_start", "_cursor")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0  # first byte not yet committed
        self._cursor = 0  # first byte not yet consumed (tentatively)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._data += data

    def __len__(self) -> int:
        """Bytes available to consume from the cursor on."""
        return len(self._data) - self._cursor

    def __bool__(self) -> bool:
        return len(self._data) > self._cursor

    @property
    def uncommitted(self) -> int:
        """Bytes held since the last commit, consumed or not."""
        return len(self._data) - self._start

    def consume_exactly(self, nbytes: int) -> bytes | None:
        """Consume and return exactly ``nbytes``, or None (consuming nothing) if fewer are held."""
        end = self._cursor + nbytes
        if nbytes < 0 or end > len(self._data):
            return None
        out = bytes(self._data[self._cursor : end])
        self._cursor = end
        return out

    def consume_at_most(self, nbytes: int) -> bytes:
        """Consume and return up to ``nbytes``."""
        end = min(self._cursor + max(nbytes, 0), len(self._data))
        out = bytes(self._data[self._cursor : end])
        self._cursor = end
        return out

    def peek(self, nbytes: int) -> bytes:
        """Return up to ``nbytes`` from the cursor without consuming them."""
        return bytes(self._data[self._cursor : self._cursor + nbytes])

    def commit(self) -> int:
        """Make everything consumed so far permanent; return how many bytes that was."""
        committed = self._cursor - self._start
        self._start = self._cursor
        if self._start >= _COMPACT_THRESHOLD or self._start == len(self._data):
            del self._data[: self._start]
            self._cursor -= self._start
            self._start = 0
        return committed

    def rollback(self) -> None:
        """Un-consume everything consumed since the last commit."""
        self._cursor = self._start

    def clear(self) -> int:
        """Drop every byte held (committing them); return how many were dropped."""
        dropped = len(self._data) - self._start
        self._data.clear()
        self._start = self._cursor = 0
        return dropped
