"""One chat room's rules: the single place that decides what a message or a moderation action does. Pure.

A `Room` is a deterministic function of its starting snapshot, its limits and the ordered inputs it is
given (`submit`, `moderate`, `apply`), each with the `now_ms` the caller passes in: there is no clock read,
no randomness and no iteration over unordered sets inside. So every orderer that replays the same inputs
in the same order decides the same: the controller hub, every edge consuming a NATS subject (with `now_ms`
taken from the JetStream timestamp), the in-process LocalBus of a standalone edge, and the local replica a
HubBus keeps ordering with while the hub is away.

Decisions become `RoomEvent`s (seq 0; the bus stamps seq with `dataclasses.replace`), and the room's own
state changes by applying those events, so a replica fed the events another room emitted (`apply`; seeded
with `load_history`) ends up with the same modes, restrictions and history, and decides a message as the
orderer would. What only the orderer sees differs: refused submissions counted towards the rate limit,
the ids of carried-out commands (for retry dedup), and ban/timeout reasons (no event carries them).
Reading (`history`, `snapshot`, `restriction`) never changes state, so orderers that read at different
moments (a watch here, none there) still agree.

Rules for a chatter's message, in this order (the first that refuses decides the NOTICE msg-id):
1. a submission id, or the (user, client-nonce) pair, accepted within `nonce_seconds`: dropped silently
   (`Outcome.duplicate`, no event, no verdict) - a retry after a reconnect or a replay of buffered messages;
   A refused submission is not remembered: its retry is decided again;
2. anonymous readers cannot send (msg_requires_login); an empty body is dropped silently, `/me` without
   text is usage_me;
3. a body over `max_body_chars` characters is refused (msg_too_long);
4. a banned or timed-out chatter is refused (msg_banned / msg_timedout); an expired timeout has lapsed;
5. more than `messages_per_window` submissions in `window_seconds` (`moderator_messages_per_window` for
   the broadcaster and moderators): msg_ratelimit. Every submission that gets past this check counts,
   whether a later rule refuses it or not; the refused-by-rate-limit ones do not;
6. '/word' is a command; '.word' only when `word` names one (so '.net rocks' is a message) - see below;
7. subscribers-only mode: subscribers, VIPs, moderators and the broadcaster pass (msg_subsonly);
8. emote-only mode: every non-blank character must lie inside a range of the `emotes` tag; moderators and
   the broadcaster are exempt (msg_emoteonly);
9. slow mode: one message per `slow_seconds` since the chatter's last accepted one; moderators, the
   broadcaster and VIPs are exempt (msg_slowmode);
10. the same text (blanks collapsed, case folded) as the chatter's previous accepted message within
    `duplicate_seconds`: msg_duplicate; moderators, the broadcaster and VIPs are exempt (as on Twitch);
11. r9k (unique-chat) mode: a text accepted in the room within `r9k_seconds` is refused (msg_r9k);
    moderators and the broadcaster are exempt. Texts are remembered whether r9k is on or not, so turning it
    on applies to what was just said.

Commands (the broadcaster and moderators; anyone else gets no_permission; an unknown one unrecognized_cmd):
/ban USER [REASON], /unban USER, /timeout USER [DURATION] [REASON] (DURATION: seconds, or 30s 10m 1h 2d
1w; default `default_timeout_seconds`; 1 s .. `timeout_max_seconds`), /untimeout USER, /delete MSGID,
/clear, /slow [SECONDS] (default 30), /slowoff, /subscribers, /subscribersoff, /emoteonly, /emoteonlyoff,
/r9kbeta (/uniquechat), /r9kbetaoff (/uniquechatoff). `/me TEXT` (or a CTCP ACTION) is an ACTION message
for anyone. A ban replaces a timeout; a timeout of a banned user is already_banned; a new timeout replaces
the running one; /unban lifts a timeout too (untimeout_success); /untimeout of a ban is bad_untimeout_banned.
Mode commands that change nothing answer already_* with no event. A carried-out command answers with the success NOTICE msg-id TMI sends and tmi.js waits for
(ban_success, timeout_success, unban_success, untimeout_success, delete_message_success, slow_on, slow_off,
subs_on, subs_off, emote_only_on, emote_only_off, r9k_on, r9k_off); a refused one with TMI's usage_* /
bad_* / already_* ids, which tmi.js maps to the right promise's rejection. /clear has no NOTICE: TMI
confirms it with the CLEARCHAT itself, and so does tmi.js (an operator's /clear gets "clear_success" for
the RPC). Note for renderers: tmi.js resolves slow() and slowoff() from a ROOMSTATE that carries the
`slow` tag *without* `subs-only`, so a ROOMSTATE for a change must carry only the changed tag (compare
the event's modes with the previous ones: `changed_modes`, or `tmi.roomstate(..., previous=...)`).

Permissions: nobody bans or times out themselves (bad_ban_self / bad_timeout_self); nobody bans, times out
or deletes a message of the broadcaster (the login that names the room, or any chatter seen with the
broadcaster role); moderators cannot ban, time out, or delete the messages of other moderators (those
seen with the moderator role) - the broadcaster can; anyone may delete their own lines. Operators
(`moderate`) may do anything a command can, to anyone.

A ban, a timeout and /clear remove the affected lines from the history; /delete removes one.

Bounds: per-user state is evicted once it can no longer matter (idle longer than the rate window, the
duplicate window and the slow-mode interval) and capped at `max_users` (least recently active evicted
first); accepted submission ids and client-nonces are kept `nonce_seconds` and capped at `max_seen` (a
busy room's window is shorter: 500 messages/s with nonces fill 100,000 in about 100 s); r9k
texts are kept `r9k_seconds` and capped at `max_r9k_texts`; history is `history_messages` lines of at most
`history_seconds`; moderators and broadcasters seen (to protect them from other moderators) are capped at
`max_privileged`. Bans are the room's state and are not capped (the hub persists them); timeouts lapse.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edged.chat.commands import (
    ACTION_PREFIX,
    ALIASES,
    DEFAULT_SLOW_SECONDS,
    MAX_SLOW_SECONDS,
    MOD_COMMANDS,
    MODES,
    USAGE,
    emotes_cover,
    is_command,
    is_uint,
    normalize_login,
    parse_duration,
)
from edged.chat.model import (
    OPERATOR,
    ChatLimits,
    ChatLine,
    Chatter,
    EventKind,
    Moderation,
    ModerationAction,
    NoticeId,
    Restriction,
    RoomEvent,
    RoomModes,
    RoomSnapshot,
    Submission,
    Verdict,
)

MAX_TRACKED_USERS = 50_000  # per-user rate/slow/duplicate state, per room
MAX_SEEN = 100_000  # accepted submission ids and client-nonces remembered, per room
MAX_R9K_TEXTS = 20_000  # texts remembered for r9k, per room
MAX_PRIVILEGED = 1_000  # broadcasters and moderators seen, per room


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one input decided: events for the whole room, and a verdict for the sender only."""

    events: tuple[RoomEvent, ...] = ()  # seq 0; the bus stamps seq with dataclasses.replace
    verdict: Verdict | None = None  # refusal, or a command's confirmation, to the sender only
    duplicate: bool = False  # same submission id or client-nonce seen: dropped silently

    @property
    def accepted(self) -> bool:
        """The input produced at least one event (a message delivered, or a moderation carried out)."""
        return bool(self.events)


@dataclass(slots=True)
class _User:
    """What the rules remember of one chatter (keyed by user id)."""

    sends: deque[int]  # times of counted submissions in the rate window (maxlen: the higher cap)
    last_ms: int | None = None  # the last accepted message (slow mode)
    last_text: str = ""  # its normalised text (msg_duplicate)
    active_ms: int = 0  # last activity, for eviction


def changed_modes(before: RoomModes, after: RoomModes) -> tuple[str, ...]:
    """The RoomModes field names that differ, in field order (for a ROOMSTATE carrying only what changed)."""
    return tuple(
        f.name for f in dataclasses.fields(RoomModes) if getattr(before, f.name) != getattr(after, f.name)
    )


def _normalize_text(text: str) -> str:
    return " ".join(text.split()).casefold()


class Room:
    """One room's rules and state. Not thread-safe; each orderer owns its own."""

    def __init__(
        self,
        snapshot: RoomSnapshot,
        limits: ChatLimits,
        *,
        max_users: int = MAX_TRACKED_USERS,
        max_seen: int = MAX_SEEN,
        max_r9k_texts: int = MAX_R9K_TEXTS,
        max_privileged: int = MAX_PRIVILEGED,
    ) -> None:
        self.room = snapshot.room
        self.room_id = snapshot.room_id
        self.limits = limits
        self._modes = snapshot.modes
        self._restrictions: dict[str, Restriction] = {r.login: r for r in snapshot.restrictions}
        self._max_users = max_users
        self._max_seen = max_seen
        self._max_r9k = max_r9k_texts
        self._max_privileged = max_privileged
        self._users: OrderedDict[str, _User] = OrderedDict()  # least recently active first
        self._seen: OrderedDict[str, int] = OrderedDict()  # "i:<id>" / "n:<user id>:<nonce>" -> time
        self._r9k: OrderedDict[str, int] = OrderedDict()  # normalised text -> time last accepted
        self._history: OrderedDict[str, ChatLine] = OrderedDict()  # id -> line, oldest first
        self._privileged: OrderedDict[str, Chatter] = OrderedDict()  # login -> broadcaster/moderator seen
        self._expiries: list[tuple[int, str]] = []  # heap of (until_ms, login); stale entries skipped
        for r in self._restrictions.values():
            self._schedule(r)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def modes(self) -> RoomModes:
        return self._modes

    # Reading never changes what the room will decide: only inputs (submit, moderate, apply) change its
    # state, so orderers that read at different moments (a watch here, none there) still agree.

    def restriction(self, login: str, now_ms: int) -> Restriction | None:
        """The live ban or timeout of `login`, if any."""
        r = self._restrictions.get(login)
        return r if r is not None and (r.permanent or r.until_ms > now_ms) else None

    def snapshot(self, now_ms: int) -> RoomSnapshot:
        """Modes and live restrictions (sorted by login), for a new watcher or for persistence."""
        live = (self.restriction(k, now_ms) for k in sorted(self._restrictions))
        restrictions = tuple(r for r in live if r is not None)
        return RoomSnapshot(
            room=self.room, room_id=self.room_id, modes=self._modes, restrictions=restrictions
        )

    def history(self, now_ms: int) -> list[ChatLine]:
        """The recent lines, oldest first: at most `history_messages`, none older than `history_seconds`,
        moderated ones removed."""
        oldest = now_ms - int(self.limits.history_seconds * 1000)
        return [line for line in self._history.values() if line.sent_ms >= oldest]

    @property
    def tracked_users(self) -> int:
        """How many chatters' rate/slow/duplicate state is held (bounded by `max_users`)."""
        return len(self._users)

    @property
    def tracked_ids(self) -> int:
        """How many submission ids and client-nonces are remembered for dedup (bounded by `max_seen`)."""
        return len(self._seen)

    # -- deciding --------------------------------------------------------------------------------

    def submit(self, sub: Submission, now_ms: int) -> Outcome:
        """A chatter's PRIVMSG: a message, `/me`, or a '/command'."""
        if sub.room != self.room:
            raise ValueError(f"submission for room {sub.room!r} given to room {self.room!r}")
        self._housekeep(now_ms)
        chatter = sub.chatter
        if self._is_seen(sub, now_ms):
            return Outcome(duplicate=True)
        if chatter.anonymous:
            return self._refuse(sub, NoticeId.REQUIRES_LOGIN, "You must be logged in to chat.")
        text, action = sub.text, False
        if text.startswith(ACTION_PREFIX):
            text, action = text[len(ACTION_PREFIX) :].removesuffix("\x01"), True
        elif text[:4].lower() in ("/me ", ".me ") or text.lower() in ("/me", ".me"):
            text, action = text[4:], True
            if not text.strip():
                return self._refuse(sub, "usage_me", USAGE["me"])
        if not text.strip():
            return Outcome()
        if len(text) > self.limits.max_body_chars:
            return self._refuse(
                sub,
                NoticeId.TOO_LONG,
                f"Your message was not sent because it is more than {self.limits.max_body_chars} characters long.",
            )
        self._note_chatter(chatter)
        refusal = self._restricted(sub, now_ms)
        if refusal is not None:
            return refusal
        user = self._user(chatter.user_id, now_ms)
        if self._rate_limited(user, chatter, now_ms):
            return self._refuse(
                sub,
                NoticeId.RATELIMIT,
                "Your message was not sent because you are sending messages too quickly.",
            )
        user.sends.append(now_ms)
        if not action and is_command(text):
            return self._command(sub, text, now_ms)
        return self._message(sub, user, text, action, now_ms)

    def moderate(self, mod: Moderation, now_ms: int) -> Outcome:
        """An operator's moderation action (`originctl chat ...`): anything a command can do, to anyone."""
        if mod.room != self.room:
            raise ValueError(f"moderation for room {mod.room!r} given to room {self.room!r}")
        self._housekeep(now_ms)
        actor = mod.actor or OPERATOR
        ctx = _Ctx(submission_id="", login=actor, operator=True, broadcaster=True)
        a = ModerationAction(mod.action)
        if a in (
            ModerationAction.BAN,
            ModerationAction.TIMEOUT,
            ModerationAction.UNBAN,
            ModerationAction.UNTIMEOUT,
        ):
            login = normalize_login(mod.target_login)
            if not login:
                return self._answer(ctx, False, "invalid_user", f"Invalid username: {mod.target_login}")
            if a is ModerationAction.BAN:
                return self._ban(ctx, login, mod.reason, now_ms)
            if a is ModerationAction.TIMEOUT:
                seconds = mod.seconds or self.limits.default_timeout_seconds
                return self._timeout(ctx, login, seconds, mod.reason, now_ms)
            if a is ModerationAction.UNBAN:
                return self._unban(ctx, login, now_ms)
            return self._untimeout(ctx, login, now_ms)
        if a is ModerationAction.DELETE:
            return self._delete(ctx, mod.target_msg_id, now_ms)
        if a is ModerationAction.CLEAR:
            return self._clear(ctx, now_ms)
        if a is ModerationAction.SLOW:
            return self._slow(ctx, mod.seconds or DEFAULT_SLOW_SECONDS, now_ms)
        return self._mode(ctx, a.value, now_ms)

    # -- keeping a replica in step ---------------------------------------------------------------

    def apply(self, event: RoomEvent) -> None:
        """Take in an event another orderer of this room emitted, at its `time_ms` (a MESSAGE also counts
        towards its sender's rate limit here, as it did there)."""
        if event.room != self.room:
            raise ValueError(f"event for room {event.room!r} given to room {self.room!r}")
        self._housekeep(event.time_ms)
        self._apply(event, count_send=True)

    def load_history(self, lines: Iterable[ChatLine]) -> None:
        """Seed the history (and the dedup, duplicate and r9k memory) with lines ordered elsewhere, oldest
        first: what a replica gets from `ChatSink.on_history` before the events that follow them."""
        for line in lines:
            self._apply(
                RoomEvent(room=self.room, seq=0, kind=EventKind.MESSAGE, time_ms=line.sent_ms, line=line)
            )

    def _apply(self, event: RoomEvent, count_send: bool = False) -> None:
        now_ms = event.time_ms
        kind = event.kind
        if kind is EventKind.MESSAGE and event.line is not None:
            line = event.line
            self._remember_seen(line.id, line.chatter.user_id, line.client_nonce, now_ms)
            self._note_chatter(line.chatter)
            if line.chatter.user_id:
                user = self._user(line.chatter.user_id, now_ms)
                if count_send:
                    user.sends.append(now_ms)
                user.last_ms = now_ms
                user.last_text = _normalize_text(line.text)
            key = _normalize_text(line.text)
            self._r9k.pop(key, None)
            self._r9k[key] = now_ms
            while len(self._r9k) > self._max_r9k:
                self._r9k.popitem(last=False)
            self._history.pop(line.id, None)
            self._history[line.id] = line
            self._trim_history(now_ms)
        elif kind is EventKind.CLEARCHAT:
            if event.target_login:
                until = 0 if event.duration_s == 0 else now_ms + event.duration_s * 1000
                restriction = Restriction(
                    login=event.target_login, user_id=event.target_user_id, until_ms=until
                )
                self._restrictions[event.target_login] = restriction
                self._schedule(restriction)
                for line_id in [
                    i for i, ln in self._history.items() if ln.chatter.login == event.target_login
                ]:
                    del self._history[line_id]
            else:
                self._history.clear()
        elif kind is EventKind.CLEARMSG:
            if event.line is not None:
                self._history.pop(event.line.id, None)
        elif kind is EventKind.ROOMSTATE:
            if event.modes is not None:
                self._modes = event.modes
        elif kind is EventKind.UNBAN:
            self._restrictions.pop(event.target_login, None)
        # GAP: nothing to keep; the bus resynchronises with a snapshot

    # -- messages --------------------------------------------------------------------------------

    def _message(self, sub: Submission, user: _User, text: str, action: bool, now_ms: int) -> Outcome:
        chatter = sub.chatter
        roles = chatter.roles
        privileged = chatter.is_moderator
        if self._modes.subscribers_only and not (privileged or roles & {"subscriber", "vip"}):
            return self._refuse(sub, NoticeId.SUBSONLY, "This room is in subscribers-only mode.")
        if self._modes.emote_only and not privileged and not emotes_cover(text, sub.emotes):
            return self._refuse(sub, NoticeId.EMOTEONLY, "This room is in emote-only mode.")
        exempt = privileged or "vip" in roles
        slow_ms = self._modes.slow_seconds * 1000
        if slow_ms and not exempt and user.last_ms is not None and now_ms - user.last_ms < slow_ms:
            wait = -(-(slow_ms - (now_ms - user.last_ms)) // 1000)
            return self._refuse(
                sub,
                NoticeId.SLOWMODE,
                "This room is in slow mode and you are sending messages too quickly. "
                f"You will be able to talk again in {wait} seconds.",
            )
        key = _normalize_text(text)
        dup_ms = int(self.limits.duplicate_seconds * 1000)
        if (
            not exempt
            and user.last_ms is not None
            and user.last_text == key
            and now_ms - user.last_ms < dup_ms
        ):
            return self._refuse(
                sub,
                NoticeId.DUPLICATE,
                "Your message was not sent because it is identical to the previous one you sent, "
                f"less than {int(self.limits.duplicate_seconds)} seconds ago.",
            )
        if self._modes.r9k and not privileged:
            seen = self._r9k.get(key)
            if seen is not None and now_ms - seen < int(self.limits.r9k_seconds * 1000):
                return self._refuse(
                    sub,
                    NoticeId.R9K,
                    "This room is in unique-chat mode and the message you attempted to send is not unique.",
                )
        line = ChatLine(
            id=sub.id,
            chatter=chatter,
            text=text,
            sent_ms=now_ms,
            emotes=sub.emotes,
            client_nonce=sub.client_nonce,
            origin_node=sub.origin_node,
            action=action,
        )
        event = RoomEvent(
            room=self.room, seq=0, kind=EventKind.MESSAGE, time_ms=now_ms, room_id=self.room_id, line=line
        )
        self._apply(event)
        return Outcome(events=(event,))

    # -- commands --------------------------------------------------------------------------------

    def _command(self, sub: Submission, text: str, now_ms: int) -> Outcome:
        name, *args = text[1:].split()
        name = name.lower()
        chatter = sub.chatter
        if name not in MOD_COMMANDS:
            return self._refuse(sub, NoticeId.UNRECOGNIZED_CMD, f"Unrecognized command: /{name}")
        if not chatter.is_moderator:
            return self._refuse(
                sub, NoticeId.NO_PERMISSION, "You don't have permission to perform that action."
            )
        name = ALIASES.get(name, name)
        ctx = _Ctx(
            submission_id=sub.id,
            login=chatter.login,
            operator=False,
            broadcaster=self._is_broadcaster_chatter(chatter),
        )
        outcome = self._run_command(ctx, name, args, now_ms)
        if outcome.events:
            self._remember_seen(sub.id, chatter.user_id, sub.client_nonce, now_ms)
        return outcome

    def _run_command(self, ctx: _Ctx, name: str, args: list[str], now_ms: int) -> Outcome:
        if name in ("ban", "unban", "timeout", "untimeout"):
            if not args:
                return self._answer(ctx, False, f"usage_{name}", USAGE[name])
            login = normalize_login(args[0])
            if not login:
                return self._answer(ctx, False, "invalid_user", f"Invalid username: {args[0]}")
            if name == "ban":
                return self._ban(ctx, login, " ".join(args[1:]), now_ms)
            if name == "timeout":
                seconds = parse_duration(args[1]) if len(args) > 1 else None
                reason_from = 2 if seconds is not None else 1
                if seconds is None:
                    seconds = self.limits.default_timeout_seconds
                return self._timeout(ctx, login, seconds, " ".join(args[reason_from:]), now_ms)
            if name == "unban":
                return self._unban(ctx, login, now_ms)
            return self._untimeout(ctx, login, now_ms)
        if name == "delete":
            if not args:
                return self._answer(ctx, False, "usage_delete", USAGE["delete"])
            return self._delete(ctx, args[0], now_ms)
        if name == "clear":
            return self._clear(ctx, now_ms)
        if name == "slow":
            interval = DEFAULT_SLOW_SECONDS
            if args:
                interval = int(args[0]) if is_uint(args[0]) else 0
            return self._slow(ctx, interval, now_ms)
        return self._mode(ctx, name, now_ms)

    def _ban(self, ctx: _Ctx, login: str, reason: str, now_ms: int) -> Outcome:
        refusal = self._protects(ctx, login, "ban")
        if refusal is not None:
            return refusal
        current = self.restriction(login, now_ms)
        if current is not None and current.permanent:
            return self._answer(ctx, False, "already_banned", f"{login} is already banned in this channel.")
        outcome = self._restrict(login, 0, reason, now_ms)
        return self._confirm(ctx, outcome, "ban_success", f"{login} is now banned from this channel.")

    def _timeout(self, ctx: _Ctx, login: str, seconds: int, reason: str, now_ms: int) -> Outcome:
        refusal = self._protects(ctx, login, "timeout")
        if refusal is not None:
            return refusal
        if not 1 <= seconds <= self.limits.timeout_max_seconds:
            return self._answer(
                ctx,
                False,
                "bad_timeout_duration",
                f"You cannot time a user out for more than {self.limits.timeout_max_seconds} seconds.",
            )
        current = self.restriction(login, now_ms)
        if current is not None and current.permanent:
            return self._answer(ctx, False, "already_banned", f"{login} is already banned in this channel.")
        outcome = self._restrict(login, seconds, reason, now_ms)
        return self._confirm(
            ctx, outcome, "timeout_success", f"{login} has been timed out for {seconds} seconds."
        )

    def _unban(self, ctx: _Ctx, login: str, now_ms: int) -> Outcome:
        current = self.restriction(login, now_ms)
        if current is None:
            return self._answer(ctx, False, "bad_unban_no_ban", f"{login} is not banned from this channel.")
        outcome = self._lift(current, now_ms)
        if current.permanent:
            return self._confirm(
                ctx, outcome, "unban_success", f"{login} is no longer banned from this chat room."
            )
        return self._confirm(
            ctx, outcome, "untimeout_success", f"{login} is no longer timed out in this channel."
        )

    def _untimeout(self, ctx: _Ctx, login: str, now_ms: int) -> Outcome:
        current = self.restriction(login, now_ms)
        if current is None:
            return self._answer(
                ctx, False, "bad_untimeout_no_timeout", f"{login} is not timed out from this channel."
            )
        if current.permanent:
            return self._answer(
                ctx,
                False,
                "bad_untimeout_banned",
                f'{login} is permanently banned. Use "/unban" to remove a ban.',
            )
        outcome = self._lift(current, now_ms)
        return self._confirm(
            ctx, outcome, "untimeout_success", f"{login} is no longer timed out in this channel."
        )

    def _delete(self, ctx: _Ctx, msg_id: str, now_ms: int) -> Outcome:
        line = self._history.get(msg_id)
        if line is None or line.sent_ms < now_ms - int(self.limits.history_seconds * 1000):
            return self._answer(ctx, False, "bad_delete_message_error", "Failed to delete message.")
        author = line.chatter
        if not ctx.operator and author.login != ctx.login:
            if self._is_broadcaster_chatter(author):
                return self._answer(
                    ctx,
                    False,
                    "bad_delete_message_broadcaster",
                    "You cannot delete the broadcaster's messages.",
                )
            if author.is_moderator and not ctx.broadcaster:
                return self._answer(
                    ctx,
                    False,
                    "bad_delete_message_mod",
                    f"You cannot delete messages from another moderator {author.login}.",
                )
        event = RoomEvent(
            room=self.room, seq=0, kind=EventKind.CLEARMSG, time_ms=now_ms, room_id=self.room_id, line=line
        )
        self._apply(event)
        return self._confirm(
            ctx,
            Outcome(events=(event,)),
            "delete_message_success",
            f"The message from {author.login} is now deleted.",
        )

    def _clear(self, ctx: _Ctx, now_ms: int) -> Outcome:
        event = RoomEvent(
            room=self.room, seq=0, kind=EventKind.CLEARCHAT, time_ms=now_ms, room_id=self.room_id
        )
        self._apply(event)
        if ctx.operator:  # the RPC gets an answer; a chatter's client is answered by the CLEARCHAT, as on TMI
            return self._confirm(ctx, Outcome(events=(event,)), "clear_success", "Chat was cleared.")
        return Outcome(events=(event,))

    def _slow(self, ctx: _Ctx, seconds: int, now_ms: int) -> Outcome:
        if not 1 <= seconds <= MAX_SLOW_SECONDS:
            return self._answer(ctx, False, "usage_slow_on", USAGE["slow"])
        if self._modes.slow_seconds == seconds:
            return self._answer(
                ctx, False, "already_slow_on", f"This room is already in {seconds}-second slow mode."
            )
        return self._set_modes(
            ctx,
            dataclasses.replace(self._modes, slow_seconds=seconds),
            "slow_on",
            f"This room is now in slow mode. You may send messages every {seconds} seconds.",
            now_ms,
        )

    def _mode(self, ctx: _Ctx, name: str, now_ms: int) -> Outcome:
        spec = MODES[name]
        if getattr(self._modes, spec.field) == spec.value:
            return self._answer(ctx, False, spec.already_id, spec.already_text)
        changes: dict[str, Any] = {spec.field: spec.value}
        modes = dataclasses.replace(self._modes, **changes)
        return self._set_modes(ctx, modes, spec.success_id, spec.success_text, now_ms)

    def _set_modes(self, ctx: _Ctx, modes: RoomModes, notice: str, text: str, now_ms: int) -> Outcome:
        event = RoomEvent(
            room=self.room, seq=0, kind=EventKind.ROOMSTATE, time_ms=now_ms, room_id=self.room_id, modes=modes
        )
        self._apply(event)
        return self._confirm(ctx, Outcome(events=(event,)), notice, text)

    def _protects(self, ctx: _Ctx, login: str, verb: str) -> Outcome | None:
        """The refusal when `ctx` may not ban/time out `login`, else None."""
        if ctx.operator:
            return None
        if login == ctx.login:
            return self._answer(ctx, False, f"bad_{verb}_self", f"You cannot {verb} yourself.")
        if self._is_broadcaster_login(login):
            return self._answer(ctx, False, f"bad_{verb}_broadcaster", f"You cannot {verb} the broadcaster.")
        if login in self._privileged and not ctx.broadcaster:
            return self._answer(
                ctx,
                False,
                f"bad_{verb}_mod",
                f"You cannot {verb} moderator {login} unless you are the owner of this channel.",
            )
        return None

    def _restrict(self, login: str, seconds: int, reason: str, now_ms: int) -> Outcome:
        user_id = self._user_id_of(login)
        event = RoomEvent(
            room=self.room,
            seq=0,
            kind=EventKind.CLEARCHAT,
            time_ms=now_ms,
            room_id=self.room_id,
            target_login=login,
            target_user_id=user_id,
            duration_s=seconds,
        )
        self._apply(event)
        if reason:  # the reason is the orderer's record (snapshot, persistence); TMI no longer shows it
            r = self._restrictions[login]
            self._restrictions[login] = dataclasses.replace(r, reason=reason)
        return Outcome(events=(event,))

    def _lift(self, current: Restriction, now_ms: int) -> Outcome:
        event = RoomEvent(
            room=self.room,
            seq=0,
            kind=EventKind.UNBAN,
            time_ms=now_ms,
            room_id=self.room_id,
            target_login=current.login,
            target_user_id=current.user_id,
        )
        self._apply(event)
        return Outcome(events=(event,))

    # -- verdicts --------------------------------------------------------------------------------

    def _refuse(self, sub: Submission, notice: str, text: str) -> Outcome:
        return Outcome(
            verdict=Verdict(
                submission_id=sub.id,
                room=self.room,
                login=sub.chatter.login,
                ok=False,
                notice_id=str(notice),
                text=text,
            )
        )

    def _answer(self, ctx: _Ctx, ok: bool, notice: str, text: str) -> Outcome:
        return Outcome(
            verdict=Verdict(
                submission_id=ctx.submission_id,
                room=self.room,
                login=ctx.login,
                ok=ok,
                notice_id=notice,
                text=text,
            )
        )

    def _confirm(self, ctx: _Ctx, outcome: Outcome, notice: str, text: str) -> Outcome:
        return Outcome(events=outcome.events, verdict=self._answer(ctx, True, notice, text).verdict)

    # -- state -----------------------------------------------------------------------------------

    def _restricted(self, sub: Submission, now_ms: int) -> Outcome | None:
        r = self.restriction(sub.chatter.login, now_ms)
        if r is None:
            return None
        if r.permanent:
            return self._refuse(
                sub, NoticeId.BANNED, f"You are permanently banned from talking in {self.room}."
            )
        left = -(-(r.until_ms - now_ms) // 1000)
        return self._refuse(sub, NoticeId.TIMEDOUT, f"You are timed out for {left} more seconds.")

    def _rate_limited(self, user: _User, chatter: Chatter, now_ms: int) -> bool:
        window_ms = int(self.limits.window_seconds * 1000)
        sends = user.sends
        while sends and sends[0] <= now_ms - window_ms:
            sends.popleft()
        cap = (
            self.limits.moderator_messages_per_window
            if chatter.is_moderator
            else self.limits.messages_per_window
        )
        return len(sends) >= cap

    def _is_seen(self, sub: Submission, now_ms: int) -> bool:
        if f"i:{sub.id}" in self._seen:
            return True
        return bool(sub.client_nonce) and f"n:{sub.chatter.user_id}:{sub.client_nonce}" in self._seen

    def _remember_seen(self, sub_id: str, user_id: str, nonce: str, now_ms: int) -> None:
        keys = [f"i:{sub_id}"]
        if nonce:
            keys.append(f"n:{user_id}:{nonce}")
        for key in keys:
            self._seen.pop(key, None)
            self._seen[key] = now_ms
        while len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)

    def _user(self, user_id: str, now_ms: int) -> _User:
        user = self._users.pop(user_id, None)
        if user is None:
            cap = max(self.limits.messages_per_window, self.limits.moderator_messages_per_window)
            user = _User(sends=deque(maxlen=max(cap, 1)))
        user.active_ms = now_ms
        self._users[user_id] = user
        while len(self._users) > self._max_users:
            self._users.popitem(last=False)
        return user

    def _note_chatter(self, chatter: Chatter) -> None:
        """Remember who the broadcaster and moderators are (their roles come with their messages)."""
        if chatter.is_moderator:
            self._privileged.pop(chatter.login, None)
            self._privileged[chatter.login] = chatter
            while len(self._privileged) > self._max_privileged:
                self._privileged.popitem(last=False)
        else:
            self._privileged.pop(chatter.login, None)  # no longer a moderator

    def _is_broadcaster_login(self, login: str) -> bool:
        known = self._privileged.get(login)
        return login == self.room.lower() or (known is not None and "broadcaster" in known.roles)

    def _is_broadcaster_chatter(self, chatter: Chatter) -> bool:
        return chatter.login == self.room.lower() or "broadcaster" in chatter.roles

    def _user_id_of(self, login: str) -> str:
        known = self._privileged.get(login)
        if known is not None:
            return known.user_id
        for line in reversed(self._history.values()):
            if line.chatter.login == login:
                return line.chatter.user_id
        current = self._restrictions.get(login)
        return current.user_id if current is not None else ""

    def _housekeep(self, now_ms: int) -> None:
        self._expire(now_ms)
        seen_ms = int(self.limits.nonce_seconds * 1000)
        while self._seen:
            key, t = next(iter(self._seen.items()))
            if now_ms - t < seen_ms:
                break
            del self._seen[key]
        r9k_ms = int(self.limits.r9k_seconds * 1000)
        while self._r9k:
            key, t = next(iter(self._r9k.items()))
            if now_ms - t < r9k_ms:
                break
            del self._r9k[key]
        keep_ms = max(
            int(self.limits.window_seconds * 1000),
            int(self.limits.duplicate_seconds * 1000),
            self._modes.slow_seconds * 1000,
        )
        while self._users:
            uid, user = next(iter(self._users.items()))
            if now_ms - user.active_ms < keep_ms:
                break
            del self._users[uid]

    def _trim_history(self, now_ms: int) -> None:
        oldest = now_ms - int(self.limits.history_seconds * 1000)
        while self._history:
            line = next(iter(self._history.values()))
            if line.sent_ms >= oldest and len(self._history) <= self.limits.history_messages:
                break
            del self._history[line.id]

    def _expire(self, now_ms: int) -> None:
        """Timeouts lapse by time: no event, every replica computes the same from the same clock."""
        heap = self._expiries
        while heap and heap[0][0] <= now_ms:
            until, login = heapq.heappop(heap)
            current = self._restrictions.get(login)
            if current is not None and current.until_ms == until:
                del self._restrictions[login]

    def _schedule(self, r: Restriction) -> None:
        if r.permanent:
            return
        heapq.heappush(self._expiries, (r.until_ms, r.login))
        if len(self._expiries) > 2 * len(self._restrictions) + 64:  # replaced or lifted ones piled up
            self._expiries = [(x.until_ms, x.login) for x in self._restrictions.values() if not x.permanent]
            heapq.heapify(self._expiries)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Who is acting: a chatter's command (with its submission id) or an operator."""

    submission_id: str
    login: str
    operator: bool
    broadcaster: bool  # the broadcaster (or an operator): may act on moderators
