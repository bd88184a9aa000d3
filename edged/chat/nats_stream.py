"""What every reader of the NATS chat stream shares, so that they all decide alike: the stream's layout
(subjects, the checkpoint bucket, created by whoever connects first), how one record of a room's subject
is decided by the room's rules, and when a room's state is checkpointed.

Two readers use it: `edged.chat.nats_bus.NatsBus` on an edge (one ordered consumer per watched room) and
the controller's `originctl.server.chat_nats.NatsChatFollower` (one ordered consumer on every room's
subject, `StreamLayout.wildcard`, to keep its store's bans and modes in step with the fleet and to answer
operators). Both feed each record to an `edged.chat.room.Room` with `now_ms` = the record's JetStream
timestamp (`record_time_ms`), never a local clock; `decide_record` is the one place that does it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.kv import KeyValue

from edged.chat.model import EventKind, Moderation, Submission
from edged.chat.nats_checkpoints import KV_HISTORY
from edged.chat.nats_wire import decode_record, room_from_token, room_token
from edged.chat.room import Outcome, Room
from edged.log import QuietLog

DEFAULT_STREAM = "CHAT"
DEFAULT_PREFIX = "chat.room"
MSG_ID = "Nats-Msg-Id"  # JetStream's dedup header
STREAM_EXISTS = 10058  # JetStream: "stream name already in use with a different configuration"
_DURABLE = (EventKind.CLEARCHAT, EventKind.UNBAN, EventKind.ROOMSTATE)  # CLEARCHAT of a user, not /clear


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """The stream `stream` holds the subjects `<prefix>.<room token>`, one per room; the rooms' checkpoints
    are in the KV bucket `<stream>_ROOMS`. `retention_s` and `duplicate_window_s` apply when this reader
    is the one that creates the stream."""

    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    retention_s: float = 86_400.0
    duplicate_window_s: float = 600.0

    @property
    def bucket(self) -> str:
        return f"{self.stream}_ROOMS"

    @property
    def wildcard(self) -> str:
        """Every room's subject."""
        return f"{self.prefix}.*"

    def subject(self, room: str) -> str:
        return f"{self.prefix}.{room_token(room)}"

    def room_of(self, subject: str) -> str | None:
        """The room a subject of this stream belongs to; None for one no room's subject can be."""
        head, dot, token = subject.rpartition(".")
        if not dot or head != self.prefix:
            return None
        return room_from_token(token)


async def ensure_layout(js: JetStreamContext, layout: StreamLayout, quiet: QuietLog) -> KeyValue:
    """The stream and the checkpoint bucket exist (created here the first time; a stream that exists with
    another configuration is used as it is, with a warning); the bucket."""
    config = StreamConfig(name=layout.stream, subjects=[layout.wildcard], storage=StorageType.FILE,
                          max_age=layout.retention_s, duplicate_window=layout.duplicate_window_s)
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != STREAM_EXISTS:
            raise
        info = await js.stream_info(layout.stream)
        quiet.log("stream-config", logging.WARNING, "chat bus: stream %s exists with another configuration "
                  "(subjects %s); using it as it is", layout.stream, info.config.subjects)
    try:
        return await js.create_key_value(bucket=layout.bucket, history=KV_HISTORY)
    except nats.js.errors.BadRequestError:
        return await js.key_value(layout.bucket)


def record_time_ms(msg: Msg) -> int:
    """The record's JetStream timestamp (the server's clock, the same for every reader), in ms."""
    return int(msg.metadata.timestamp.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Decision:
    record: Submission | Moderation
    outcome: Outcome
    durable: bool  # the room's durable state (bans, timeouts, modes) changed


def changes_durable_state(outcome: Outcome) -> bool:
    """A ban, a timeout, an unban or a mode change (what a checkpoint and the controller's store keep)."""
    return any(e.kind in _DURABLE and (e.kind != EventKind.CLEARCHAT or e.target_login) for e in outcome.events)


def decide_record(room: Room, data: bytes, now_ms: int) -> Decision:
    """One record of the room's subject through the room's rules, at its JetStream time `now_ms`. Raises
    `nats_wire.WireError` for a record that does not decode (every reader skips it alike)."""
    record = decode_record(data, room.room)
    outcome = room.submit(record, now_ms) if isinstance(record, Submission) else room.moderate(record, now_ms)
    return Decision(record, outcome, changes_durable_state(outcome))


def checkpoint_due(previous_ms: int | None, now_ms: int, checkpoint_ms: int, durable: bool) -> bool:
    """Whether a live reader checkpoints the room after a record at `now_ms` (the room's previous record was
    at `previous_ms`): after a durable change, and after the first record of each `checkpoint_ms` bucket
    of JetStream time (`edged.chat.nats_checkpoints`). Every reader computes the same moments, so their
    compare-and-set writes coincide."""
    return durable or previous_ms is None or now_ms // checkpoint_ms != previous_ms // checkpoint_ms
