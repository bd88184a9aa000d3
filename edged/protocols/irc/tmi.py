"""Builders for every line a TMI (Twitch chat) server sends, from the chat model's types.

Each builder returns a ``Message`` with the full TMI tag set, in the order TMI writes it (alphabetical);
``session.ServerSession`` drops tags, or the whole line, when the client did not negotiate the capability
that carries them. Shapes follow dev.twitch.tv/docs/irc and what tmi.js 1.8.5 (lib/client.js) waits for:

- every server line has the source ``tmi.twitch.tv`` (the ``server`` argument; tmi.js compares it
  literally), except PING and PONG, which have none (tmi.js handles them only without a source), and the
  user-sourced JOIN/PART/PRIVMSG (``login!login@login.tmi.twitch.tv``) and 353/366
  (``login.tmi.twitch.tv``);
- tags are always written ``key=value`` (tmi.js reads a key without '=' as its own value);
- CLEARMSG always carries the deleted text as a trailing parameter (tmi.js ignores it otherwise), a
  ROOMSTATE after a change carries only ``room-id`` and what changed (tmi.js reports slow mode only from a
  ROOMSTATE without ``subs-only``), a ban is a CLEARCHAT without ``ban-duration``.
Texts from chatters or operators are made safe for one line (CR, LF and NUL become spaces).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from edged.chat.model import ChatLine, Chatter, RoomEvent, RoomModes, Verdict
from edged.protocols.irc.message import Message

SERVER = "tmi.twitch.tv"


class Cap(enum.Flag):
    """The capabilities a client may negotiate (``CAP REQ``)."""

    NONE = 0
    TAGS = enum.auto()  # twitch.tv/tags: IRCv3 tags on every line
    COMMANDS = enum.auto()  # twitch.tv/commands: USERSTATE, ROOMSTATE, CLEARCHAT, CLEARMSG, ...
    MEMBERSHIP = enum.auto()  # twitch.tv/membership: JOIN/PART of other chatters


CAP_NAMES: dict[str, Cap] = {
    "twitch.tv/tags": Cap.TAGS,
    "twitch.tv/commands": Cap.COMMANDS,
    "twitch.tv/membership": Cap.MEMBERSHIP,
}

# NOTICE msg-ids this server uses beyond model.NoticeId (not TMI's own: TMI has no such refusal).
NOTICE_NOT_JOINED = "msg_not_joined"  # PRIVMSG to a room the connection has not joined
NOTICE_JOIN_RATELIMIT = "msg_ratelimit"  # JOINs over the per-connection rate (tmi.js: a 'notice' event)
NOTICE_TOO_MANY_ROOMS = "msg_too_many_rooms"
NOTICE_ROOM_NOT_FOUND = "msg_room_not_found"  # an invalid channel name (TMI's id; tmi.js fails the join)
NOTICE_GAP = "msg_gap"  # some of the room's events were lost for this edge

_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})


def safe_text(text: str) -> str:
    """``text`` made fit for one IRC parameter (CR, LF and NUL become spaces)."""
    return text.translate(_UNSAFE)


def channel(room: str) -> str:
    return "#" + room


def user_source(login: str, server: str = SERVER) -> str:
    return f"{login}!{login}@{login}.{server}"


def badges(chatter: Chatter) -> str:
    """The ``badges`` tag: TMI lists broadcaster, moderator, vip, subscriber in that order."""
    out = []
    if "broadcaster" in chatter.roles:
        out.append("broadcaster/1")
    if "moderator" in chatter.roles:
        out.append("moderator/1")
    if "vip" in chatter.roles:
        out.append("vip/1")
    if "subscriber" in chatter.roles:
        out.append("subscriber/0")
    return ",".join(out)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _user_type(chatter: Chatter) -> str:
    return "mod" if "moderator" in chatter.roles else ""


def _display_name(chatter: Chatter) -> str:
    return safe_text(chatter.display_name or chatter.login)


def _server_line(
    command: str, *params: str, server: str, tags: dict[str, str] | None = None, trailing: bool = False
) -> Message:
    return Message(command, params, server, tags or {}, trailing)


# --- registration -------------------------------------------------------------------------------------


def welcome(nick: str, server: str = SERVER) -> list[Message]:
    """001-004 and the MOTD (375/372/376) that TMI sends after a login; tmi.js is connected on 376."""
    return [
        _server_line("001", nick, "Welcome, GLHF!", server=server, trailing=True),
        _server_line("002", nick, f"Your host is {server}", server=server, trailing=True),
        _server_line("003", nick, "This server is rather new", server=server, trailing=True),
        _server_line("004", nick, "-", server=server, trailing=True),
        _server_line("375", nick, "-", server=server, trailing=True),
        _server_line(
            "372", nick, "You are in a maze of twisty passages, all alike.", server=server, trailing=True
        ),
        _server_line("376", nick, ">", server=server, trailing=True),
    ]


def cap(subcommand: str, caps: str, server: str = SERVER) -> Message:
    """``:tmi.twitch.tv CAP * ACK|NAK|LS|LIST :caps``."""
    return _server_line("CAP", "*", subcommand, caps, server=server, trailing=True)


def globaluserstate(chatter: Chatter, server: str = SERVER) -> Message:
    tags = {
        "badge-info": "",
        "badges": badges(chatter),
        "color": chatter.color,
        "display-name": _display_name(chatter),
        "emote-sets": "0",
        "user-id": chatter.user_id,
        "user-type": _user_type(chatter),
    }
    return _server_line("GLOBALUSERSTATE", server=server, tags=tags)


def login_failed(text: str = "Login authentication failed", server: str = SERVER) -> Message:
    """What TMI sends for a refused PASS; tmi.js then closes and does not reconnect."""
    return _server_line("NOTICE", "*", safe_text(text), server=server, trailing=True)


def unknown_command(nick: str, command: str, server: str = SERVER) -> Message:
    return _server_line("421", nick or "*", command, "Unknown command", server=server, trailing=True)


def not_registered(command: str, server: str = SERVER) -> Message:
    return _server_line("451", "*", command, "You have not registered", server=server, trailing=True)


def invalid_cap(subcommand: str, server: str = SERVER) -> Message:
    return _server_line("410", "*", subcommand or "*", "Invalid CAP command", server=server, trailing=True)


# --- rooms -------------------------------------------------------------------------------------------


def join(room: str, login: str, server: str = SERVER) -> Message:
    return Message("JOIN", (channel(room),), user_source(login, server))


def part(room: str, login: str, server: str = SERVER) -> Message:
    return Message("PART", (channel(room),), user_source(login, server))


def names(
    room: str, nick: str, members: Iterable[str] = (), server: str = SERVER, max_bytes: int = 510
) -> list[Message]:
    """353 lines (as many as the names need to stay within ``max_bytes`` each) and the closing 366."""
    source = f"{nick}.{server}"
    listed = [nick] + [m for m in members if m != nick]
    head = len(f":{source} 353 {nick} = {channel(room)} :")
    out: list[Message] = []
    chunk: list[str] = []
    size = head
    for name in listed:
        extra = len(name) + (1 if chunk else 0)
        if chunk and size + extra > max_bytes:
            out.append(Message("353", (nick, "=", channel(room), " ".join(chunk)), source, trailing=True))
            chunk, size = [], head
            extra = len(name)
        chunk.append(name)
        size += extra
    out.append(Message("353", (nick, "=", channel(room), " ".join(chunk)), source, trailing=True))
    out.append(Message("366", (nick, channel(room), "End of /NAMES list"), source, trailing=True))
    return out


def userstate(room: str, chatter: Chatter, server: str = SERVER) -> Message:
    tags = {
        "badge-info": "",
        "badges": badges(chatter),
        "color": chatter.color,
        "display-name": _display_name(chatter),
        "emote-sets": "0",
        "mod": _flag("moderator" in chatter.roles),
        "subscriber": _flag("subscriber" in chatter.roles),
        "user-type": _user_type(chatter),
    }
    return _server_line("USERSTATE", channel(room), server=server, tags=tags)


def _mode_tags(modes: RoomModes) -> dict[str, str]:
    return {
        "emote-only": _flag(modes.emote_only),
        "followers-only": "-1",
        "r9k": _flag(modes.r9k),
        "slow": str(modes.slow_seconds),
        "subs-only": _flag(modes.subscribers_only),
    }


def roomstate(
    room: str, room_id: str, modes: RoomModes, previous: RoomModes | None = None, server: str = SERVER
) -> Message | None:
    """The full ROOMSTATE (on join, ``previous`` None), or one with only what changed; None if nothing did."""
    now = _mode_tags(modes)
    if previous is None:
        tags = dict(now)
    else:
        before = _mode_tags(previous)
        tags = {k: v for k, v in now.items() if before[k] != v}
        if not tags:
            return None
    tags["room-id"] = room_id
    return _server_line("ROOMSTATE", channel(room), server=server, tags=dict(sorted(tags.items())))


# --- messages and moderation --------------------------------------------------------------------------


def privmsg(
    room: str, room_id: str, line: ChatLine, server: str = SERVER, historical: bool = False
) -> Message:
    """A chatter's message as every other member of the room receives it."""
    chatter = line.chatter
    tags = {
        "badge-info": "",
        "badges": badges(chatter),
    }
    if line.client_nonce:
        tags["client-nonce"] = line.client_nonce
    tags.update(
        {
            "color": chatter.color,
            "display-name": _display_name(chatter),
            "emotes": line.emotes,
            "first-msg": "0",
            "flags": "",
        }
    )
    if historical:
        tags["historical"] = "1"
    tags.update(
        {
            "id": line.id,
            "mod": _flag("moderator" in chatter.roles),
            "returning-chatter": "0",
            "room-id": room_id,
            "subscriber": _flag("subscriber" in chatter.roles),
            "tmi-sent-ts": str(line.sent_ms),
            "turbo": "0",
            "user-id": chatter.user_id,
            "user-type": _user_type(chatter),
        }
    )
    if "vip" in chatter.roles:
        tags["vip"] = "1"
    text = safe_text(line.text)
    if line.action:
        text = f"\x01ACTION {text}\x01"
    return Message("PRIVMSG", (channel(room), text), user_source(chatter.login, server), tags, trailing=True)


def clearchat(event: RoomEvent, server: str = SERVER) -> Message:
    """A ban (no ``ban-duration``), a timeout (``ban-duration`` seconds) or, without a target, /clear."""
    tags: dict[str, str] = {}
    if event.target_login and event.duration_s:
        tags["ban-duration"] = str(event.duration_s)
    tags["room-id"] = event.room_id
    if event.target_login:
        tags["target-user-id"] = event.target_user_id
    tags["tmi-sent-ts"] = str(event.time_ms)
    if event.target_login:
        return _server_line(
            "CLEARCHAT", channel(event.room), event.target_login, server=server, tags=tags, trailing=True
        )
    return _server_line("CLEARCHAT", channel(event.room), server=server, tags=tags)


def clearmsg(event: RoomEvent, server: str = SERVER) -> Message:
    """One deleted message; ``event.line`` is the deleted line (its id, sender and text)."""
    line = event.line
    login = line.chatter.login if line else event.target_login
    tags = {
        "login": login,
        "room-id": event.room_id,
        "target-msg-id": line.id if line else "",
        "tmi-sent-ts": str(event.time_ms),
    }
    text = safe_text(line.text) if line else ""
    return _server_line("CLEARMSG", channel(event.room), text, server=server, tags=tags, trailing=True)


def notice(target: str, text: str, msg_id: str = "", server: str = SERVER) -> Message:
    """``@msg-id=ID :tmi.twitch.tv NOTICE #room :text``; ``target`` is '#room' or '*'."""
    tags = {"msg-id": msg_id} if msg_id else {}
    return _server_line("NOTICE", target, safe_text(text), server=server, tags=tags, trailing=True)


def verdict_notice(verdict: Verdict, server: str = SERVER) -> Message:
    return notice(channel(verdict.room), verdict.text, verdict.notice_id, server)


def gap_notice(room: str, server: str = SERVER) -> Message:
    return notice(
        channel(room), "Some messages in this room could not be delivered to you.", NOTICE_GAP, server
    )


# --- connection ---------------------------------------------------------------------------------------


def ping(server: str = SERVER) -> Message:
    return Message("PING", (server,), trailing=True)


def pong(token: str) -> Message:
    """Prefix-less ``PONG :token`` (tmi.js handles PONG only without a source)."""
    return Message("PONG", (token,), trailing=True)


def reconnect(server: str = SERVER) -> Message:
    return _server_line("RECONNECT", server=server)


def lines_to_bytes(messages: Sequence[Message]) -> bytes:
    return b"".join(m.to_bytes() for m in messages)
