"""Chat's shared vocabulary: who speaks, what an edge submits, what a room emits. Pure data.

Every part of chat speaks these types: the IRC/WebSocket servers on an edge turn a client's PRIVMSG into a
`Submission`; a `ChatBus` (the controller hub, NATS, or the in-process bus of a standalone edge) carries it
to the room's single orderer, which runs the room's rules (`edged.chat.room`) and answers with sequenced
`RoomEvent`s for every edge that has members in the room, and a `Verdict` for the submitting edge when the
message was refused. The servers render events as TMI lines.

Identifiers:
- a room is named by its channel name, without the IRC '#' (the IRC channel `#demo` is room `demo`);
- a message's `id` tag is the submission id, a UUID the submitting edge assigns once per client message:
  a retry after a reconnect, or the replay of messages buffered while the hub was away, carries the same
  id, so the orderer drops the copy and every edge sees the message once;
- `seq` numbers a room's events from 1 at the orderer; an edge resumes a room from the last seq it saw.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ROLES = ("broadcaster", "moderator", "subscriber", "vip")
OPERATOR = "operator"  # a moderation action's actor login when it came from `originctl chat`


@dataclass(frozen=True, slots=True)
class Chatter:
    """A chatter as their token (or anonymity) says. `user_id` is empty for an anonymous reader."""

    user_id: str
    login: str  # lower-case IRC nick
    display_name: str = ""
    roles: frozenset[str] = frozenset()
    color: str = ""  # "#RRGGBB" or ""

    @property
    def anonymous(self) -> bool:
        return not self.user_id

    @property
    def is_moderator(self) -> bool:
        """Moderation rights in the room: the broadcaster and moderators."""
        return "broadcaster" in self.roles or "moderator" in self.roles


@dataclass(frozen=True, slots=True)
class Submission:
    """A chatter's PRIVMSG to a room as the edge received it (a moderation command is one too: '/ban x')."""

    id: str  # UUID assigned by the submitting edge; becomes the message's `id` tag
    room: str
    chatter: Chatter
    text: str
    sent_ms: int  # wall clock at the submitting edge, ms since the epoch
    origin_node: str = ""  # node ID of the submitting edge ("" for a standalone edge)
    client_nonce: str = ""  # the client's `client-nonce` tag, for retry suppression
    emotes: str = ""  # the `emotes` tag value, as TMI writes it ("25:0-4,12-16/1902:6-10"); "" for none


class ModerationAction(enum.StrEnum):
    BAN = "ban"
    UNBAN = "unban"
    TIMEOUT = "timeout"
    UNTIMEOUT = "untimeout"
    DELETE = "delete"
    CLEAR = "clear"
    SLOW = "slow"
    SLOWOFF = "slowoff"
    SUBSCRIBERS = "subscribers"
    SUBSCRIBERSOFF = "subscribersoff"
    EMOTEONLY = "emoteonly"
    EMOTEONLYOFF = "emoteonlyoff"
    R9KBETA = "r9kbeta"
    R9KBETAOFF = "r9kbetaoff"


@dataclass(frozen=True, slots=True)
class Moderation:
    """An operator's moderation action (`originctl chat ...`); chatters' come as '/command' submissions."""

    room: str
    action: ModerationAction
    target_login: str = ""  # ban/unban/timeout/untimeout
    target_msg_id: str = ""  # delete
    seconds: int = 0  # timeout duration; slow-mode interval
    reason: str = ""
    actor: str = OPERATOR


@dataclass(frozen=True, slots=True)
class RoomModes:
    slow_seconds: int = 0
    subscribers_only: bool = False
    emote_only: bool = False
    r9k: bool = False


@dataclass(frozen=True, slots=True)
class Restriction:
    """A ban (`until_ms` 0) or a timeout (until `until_ms`, wall clock) of one login in one room."""

    login: str
    user_id: str = ""
    until_ms: int = 0
    reason: str = ""

    @property
    def permanent(self) -> bool:
        return self.until_ms == 0


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """What an edge needs to apply a room's rules itself while the orderer is away, and to render ROOMSTATE."""

    room: str
    room_id: str  # stable numeric string (the `room-id` tag)
    modes: RoomModes = RoomModes()
    restrictions: tuple[Restriction, ...] = ()


class EventKind(enum.StrEnum):
    MESSAGE = "message"  # PRIVMSG
    CLEARCHAT = "clearchat"  # a ban/timeout of one user (target_login set) or /clear (no target)
    CLEARMSG = "clearmsg"  # one message deleted
    ROOMSTATE = "roomstate"  # modes changed
    UNBAN = "unban"  # a ban or timeout lifted (no TMI line to clients; edges update their replica)
    GAP = "gap"  # events were lost for this edge (resume position gone): clients get a NOTICE


@dataclass(frozen=True, slots=True)
class ChatLine:
    id: str  # the submission id
    chatter: Chatter
    text: str
    sent_ms: int  # the orderer's clock when it accepted it: `tmi-sent-ts`
    emotes: str = ""
    client_nonce: str = ""
    origin_node: str = ""
    action: bool = False  # a CTCP ACTION (/me)


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One event of a room, in the room's order. `seq` 0 means ordered locally (the bus was away)."""

    room: str
    seq: int
    kind: EventKind
    time_ms: int
    room_id: str = ""
    line: ChatLine | None = None  # MESSAGE; CLEARMSG carries the deleted line (id, login, text)
    target_login: str = ""  # CLEARCHAT/UNBAN: the user ("" in CLEARCHAT: the whole room was cleared)
    target_user_id: str = ""
    duration_s: int = 0  # CLEARCHAT of a user: 0 = permanent ban, else timeout seconds
    modes: RoomModes | None = None  # ROOMSTATE
    local: bool = False  # delivered by this edge alone while the bus was away; replayed later


class NoticeId(enum.StrEnum):
    """TMI msg-id values for a refused message (sent as NOTICE to the sender only)."""

    RATELIMIT = "msg_ratelimit"
    SLOWMODE = "msg_slowmode"
    BANNED = "msg_banned"
    TIMEDOUT = "msg_timedout"
    DUPLICATE = "msg_duplicate"
    SUBSONLY = "msg_subsonly"
    EMOTEONLY = "msg_emoteonly"
    R9K = "msg_r9k"
    NO_PERMISSION = "no_permission"
    UNRECOGNIZED_CMD = "unrecognized_cmd"
    BAD_ARGS = "invalid_command_args"
    TOO_LONG = "msg_too_long"  # not TMI's own id; TMI truncates silently, we refuse with a reason
    REQUIRES_LOGIN = "msg_requires_login"
    CHANNEL_SUSPENDED = "msg_channel_suspended"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The orderer's answer to one submission that produced no MESSAGE: a refusal, or a command's outcome.

    `ok` is True for a moderation command that was carried out (the NOTICE confirms it, as TMI does, e.g.
    `ban_success`); False for a refused message. A silently dropped retry (same client-nonce or id) has no
    verdict at all."""

    submission_id: str
    room: str
    login: str  # the sender
    ok: bool
    notice_id: str  # a NoticeId value, or a TMI success id such as "ban_success"
    text: str  # human-readable NOTICE text


@dataclass(frozen=True)
class ChatLimits:
    """Fleet-wide limits, applied by the room's orderer (defaults from the issue; configurable)."""

    messages_per_window: int = 20
    moderator_messages_per_window: int = 100
    window_seconds: float = 30.0
    max_body_chars: int = 500
    duplicate_seconds: float = 30.0  # the same text from the same user again within this: msg_duplicate
    nonce_seconds: float = 300.0  # a client-nonce seen within this: the retry is dropped silently
    history_messages: int = 100
    history_seconds: float = 600.0
    timeout_max_seconds: int = 1_209_600  # two weeks, as TMI
    default_timeout_seconds: int = 600
    r9k_seconds: float = 600.0  # r9k mode: a text seen in the room within this is refused (msg_r9k)


def limits_problem(lim: ChatLimits) -> tuple[str, str] | None:
    """The first limit out of its range, as (config key, what is expected), or None: the one check of
    [chat.limits] that edged's and originctl's configs both make."""
    for name, n in (("messages_per_window", lim.messages_per_window),
                    ("moderator_messages_per_window", lim.moderator_messages_per_window),
                    ("max_body_chars", lim.max_body_chars), ("history_messages", lim.history_messages),
                    ("timeout_max_seconds", lim.timeout_max_seconds),
                    ("default_timeout_seconds", lim.default_timeout_seconds)):
        if not 1 <= n <= 10_000_000:
            return f"chat.limits.{name}", "expected between 1 and 10000000"
    for name, v in (("window_seconds", lim.window_seconds), ("duplicate_seconds", lim.duplicate_seconds),
                    ("nonce_seconds", lim.nonce_seconds), ("history_seconds", lim.history_seconds),
                    ("r9k_seconds", lim.r9k_seconds)):
        if not 0 <= v <= 86_400 * 30:  # also refuses nan
            return f"chat.limits.{name}", "expected between 0 and 2592000 seconds"
    return None
