"""Channels and their stream keys: the controller is the authority on who may publish what.

Only the SHA-256 of each stream key is kept (in the store and here): a key is shown once, in the
answer to `channel create` or `channel rotate-key`. Stream keys are random (KEY_BYTES of entropy), so
their digests can be handed to enrolled edges, which then answer a publish from local state (SRT must
decide inside its handshake) and keep answering through a short controller outage.

Loop-only: the in-memory maps change only after the store has committed, and every change is passed
to the listeners (the edge service pushes it down every open edge stream).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable

from originctl.errors import Conflict, NotFound, UsageError
from originctl.model import ChannelRecord
from originctl.server.store import Store

# Same rule as edged's channel names (edged/config.py): they appear in URLs and playlists.
CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_BYTES = 24  # 192 bits: the key is the broadcaster's only credential; 32 URL-safe characters

# (kind, record): kind is "upsert" (created or key rotated) or "delete"
ChannelListener = Callable[[str, ChannelRecord], None]


def key_sha256(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


def new_stream_key() -> str:
    # URL-safe base64 only: fits edged's stream key rule (A-Z a-z 0-9 _ . ~ -) and an RTMP URL path;
    # never a leading "-", which command lines would take for an option
    while True:
        key = secrets.token_urlsafe(KEY_BYTES)
        if not key.startswith("-"):
            return key


def check_name(name: str) -> str:
    if not CHANNEL_RE.match(name):
        raise UsageError(f"invalid channel name {name!r}: 1-64 characters of A-Z a-z 0-9 _ . -, starting with a "
                         "letter or digit")
    return name


class ChannelBook:
    def __init__(self, store: Store, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall = wall
        self._by_name: dict[str, ChannelRecord] = {}
        self._by_digest: dict[str, str] = {}
        self.listeners: list[ChannelListener] = []

    async def load(self) -> None:
        for rec in await self.store.list_channels():
            self._put(rec)

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> ChannelRecord | None:
        return self._by_name.get(name)

    def all(self) -> list[ChannelRecord]:
        return sorted(self._by_name.values(), key=lambda c: c.name)

    def by_key(self, stream_key: str) -> ChannelRecord | None:
        """The channel this stream key publishes, or None."""
        name = self._by_digest.get(key_sha256(stream_key))
        return self._by_name.get(name) if name is not None else None

    def _put(self, rec: ChannelRecord) -> None:
        old = self._by_name.get(rec.name)
        if old is not None:
            self._by_digest.pop(old.key_sha256, None)
        self._by_name[rec.name] = rec
        self._by_digest[rec.key_sha256] = rec.name

    def _notify(self, kind: str, rec: ChannelRecord) -> None:
        for cb in self.listeners:
            cb(kind, rec)

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    async def create(self, name: str) -> tuple[ChannelRecord, str]:
        """A new channel and its stream key (the only time the key exists outside the broadcaster)."""
        check_name(name)
        if name in self._by_name:
            raise Conflict(f"channel {name!r} exists: rotate its key with `originctl channel rotate-key {name}`")
        key = new_stream_key()
        rec = ChannelRecord(name=name, key_sha256=key_sha256(key), created_unix_ms=self._now_ms())
        await self.store.create_channel(rec)
        self._put(rec)
        self._notify("upsert", rec)
        return rec, key

    async def rotate(self, name: str) -> tuple[ChannelRecord, str]:
        """A new key for the channel; the old one stops working."""
        if name not in self._by_name:
            raise NotFound(f"no channel {name!r}: list them with `originctl channels`")
        key = new_stream_key()
        rec = await self.store.set_channel_key(name, key_sha256(key), self._now_ms())
        self._put(rec)
        self._notify("upsert", rec)
        return rec, key

    async def delete(self, name: str) -> ChannelRecord:
        rec = self._by_name.get(name)
        if rec is None:
            raise NotFound(f"no channel {name!r}: list them with `originctl channels`")
        await self.store.delete_channel(name)
        self._by_name.pop(name, None)
        self._by_digest.pop(rec.key_sha256, None)
        self._notify("delete", rec)
        return rec
