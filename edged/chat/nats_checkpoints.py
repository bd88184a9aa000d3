"""Where a new watcher of a room starts reading its NATS subject: checkpoints in the rooms' KV bucket.

A room's subject holds every input of the room; replaying all of it on every watch would be unbounded,
and starting at a plain start time would forget bans and modes older than that. So every edge that
follows a room live checkpoints the room's durable state (modes, bans, live timeouts: `RoomSnapshot`) at
a stream sequence, in the KV bucket `<stream>_ROOMS` (key: the room's token, 64 revisions kept):
- after the first record of each `checkpoint_s` bucket of JetStream time (the newest one is never much
  older than that in a busy room);
- after every record that changed the durable state (a ban, a timeout, an unban, a mode), so that a ban
  just before a room went quiet is kept however long it stays quiet;
- when it goes live after its own replay (what the replay applied - an operator's action while no edge
  watched - is kept too).
Writes are compare-and-set and only ever move the key forward (a newer stream sequence), so edges that
race write one of the identical states.

A new watcher takes the newest checkpoint at least the room's longest rule window old (history, r9k,
client-nonce, duplicate and rate windows, and the checkpoint's own slow-mode interval, plus `SKEW_MS`
for clock skew between the edge and the server; about ten minutes with the default limits) and replays
every record after it, delivering nothing, before it goes live. The checkpoint carries what can be older
than any window; the replay rebuilds what `Room` keeps only in memory (history, rate, slow-mode,
duplicate and r9k windows, seen ids). Why not a checkpoint of everything: `Room`'s per-user windows are
not part of its snapshot. A window's worth of records decides as the edges that watched all along did,
except where a record in the first window of the replay depended on what came before the checkpoint (a
borderline rate or duplicate decision); that can differ for up to one window's length, and never changes
an event's seq (the stream sequence). With no checkpoint old enough the replay starts at the subject's
first record (a room younger than its windows). What is lost: an operator's action on a room nobody
watched for longer than the stream's retention; and, with more than 64 checkpoints inside one window,
the part of the window before the oldest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import nats.js.errors
from nats.js.kv import KeyValue

from edged.chat.model import ChatLimits
from edged.chat.nats_wire import Checkpoint, WireError, decode_checkpoint, encode_checkpoint

KV_HISTORY = 64  # checkpoints kept per room (JetStream's KV maximum)
SKEW_MS = 30_000  # edge wall clock vs the server's clock, when choosing a checkpoint old enough


def replay_window_ms(limits: ChatLimits, slow_seconds: int = 0) -> int:
    """How far back a watcher's replay must start so that every rule window of `Room` is covered."""
    longest = max(limits.history_seconds, limits.r9k_seconds, limits.nonce_seconds, limits.duplicate_seconds,
                  limits.window_seconds, float(slow_seconds))
    return int(longest * 1000) + SKEW_MS


def choose_checkpoint(entries: Sequence[Checkpoint], wall_ms: int, limits: ChatLimits,
                      complete: bool) -> Checkpoint | None:
    """The checkpoint a new watcher replays from: the newest one at least the replay window old.

    `entries` oldest first; `complete` when the bucket may hold older ones no more (fewer than its
    history limit). None: replay from the subject's first record. When every checkpoint is too new and
    older ones were dropped, the oldest kept one (the replay then covers less than the window)."""
    for c in reversed(entries):
        if c.time_ms <= wall_ms - replay_window_ms(limits, c.snapshot.modes.slow_seconds):
            return c
    if entries and not complete:
        return entries[0]
    return None


async def read_checkpoints(kv: KeyValue, key: str) -> tuple[list[Checkpoint], bool, list[str]]:
    """A room's kept checkpoints, oldest first; whether that is all there ever were (fewer than the
    bucket keeps); and why any could not be read (they are skipped)."""
    try:
        history = await kv.history(key)
    except nats.js.errors.NoKeysError:
        return [], True, []
    entries: list[Checkpoint] = []
    skipped: list[str] = []
    kept = 0
    for entry in history:
        if entry.value is None:
            continue
        kept += 1
        try:
            entries.append(decode_checkpoint(entry.value))
        except WireError as exc:
            skipped.append(exc.reason)
    entries.sort(key=lambda c: c.sseq)
    return entries, kept < KV_HISTORY, skipped


async def write_checkpoint(kv: KeyValue, key: str, c: Checkpoint) -> bool:
    """Write `c` unless the key already holds one as new (compare-and-set); True when written."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        try:
            await kv.create(key, encode_checkpoint(c))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # another edge created it meanwhile
        return True
    if entry.value is not None:
        try:
            if decode_checkpoint(entry.value).sseq >= c.sseq:
                return False
        except WireError:
            pass  # unreadable: replace it
    try:
        await kv.update(key, encode_checkpoint(c), last=entry.revision)
    except nats.js.errors.KeyWrongLastSequenceError:
        return False  # another edge wrote one meanwhile
    return True
