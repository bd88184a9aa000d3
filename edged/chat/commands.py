"""A chatter's '/command' text and the TMI NOTICE catalogue for commands: parsing and wording. Pure.

The rules that decide what a command does live in `edged.chat.room`; this module says what a command's text
means (`is_command`, `normalize_login`, `parse_duration`, `emotes_cover` for emote-only mode) and the
msg-ids and texts TMI answers with (`MODES`, `USAGE`), as tmi.js's client maps them to its promises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SLOW_SECONDS = 30  # `/slow` without an argument, as TMI
MAX_SLOW_SECONDS = 1_800

_LOGIN = re.compile(r"[a-z0-9_]{1,25}")
_DURATION = re.compile(r"([0-9]{1,9})([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
ACTION_PREFIX = "\x01ACTION "

MOD_COMMANDS = frozenset(
    {
        "ban",
        "unban",
        "timeout",
        "untimeout",
        "delete",
        "clear",
        "slow",
        "slowoff",
        "subscribers",
        "subscribersoff",
        "emoteonly",
        "emoteonlyoff",
        "r9kbeta",
        "r9kbetaoff",
        "uniquechat",
        "uniquechatoff",
    }
)
ALIASES = {"uniquechat": "r9kbeta", "uniquechatoff": "r9kbetaoff"}


def normalize_login(raw: str) -> str:
    """A command's USER argument as a login: '@' or '#' stripped, lower-cased ("" when not a valid login)."""
    login = raw.lstrip("@#").lower()
    return login if _LOGIN.fullmatch(login) else ""


def parse_duration(raw: str) -> int | None:
    """'600', '30s', '10m', '1h', '2d', '1w' as seconds; None when it is not a duration."""
    m = _DURATION.fullmatch(raw.lower())
    if m is None:
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def emotes_cover(text: str, emotes: str) -> bool:
    """Whether every non-blank character of `text` lies inside a range of the TMI `emotes` tag value.

    Ranges are inclusive code-point indices ("25:0-4,12-16/1902:6-10"). A malformed tag covers nothing."""
    starts = [0] * (len(text) + 1)  # +1 where a range starts, -1 past where it ends
    if emotes:
        for group in emotes.split("/"):
            _, sep, ranges = group.partition(":")
            if not sep:
                return False
            for r in ranges.split(","):
                start_s, sep, end_s = r.partition("-")
                if not sep or not is_uint(start_s) or not is_uint(end_s):
                    return False
                start, end = int(start_s), int(end_s)
                if start > end or end >= len(text):
                    return False
                starts[start] += 1
                starts[end + 1] -= 1
    depth, blank = 0, True
    for i, c in enumerate(text):
        depth += starts[i]
        if not c.isspace():
            if depth == 0:
                return False
            blank = False
    return not blank


def is_uint(s: str) -> bool:
    return 0 < len(s) <= 9 and s.isascii() and s.isdigit()


def is_command(text: str) -> bool:
    """'/name ...' is a command; '.name ...' only when `name` is one (so '.net rocks' stays a message)."""
    if len(text) < 2 or text[0] not in "/." or not (text[1].isascii() and text[1].isalpha()):
        return False
    return text[0] == "/" or text[1:].split(maxsplit=1)[0].lower() in MOD_COMMANDS


@dataclass(frozen=True, slots=True)
class ModeSpec:
    field: str
    value: int | bool
    success_id: str
    success_text: str
    already_id: str
    already_text: str


MODES: dict[str, ModeSpec] = {
    "slowoff": ModeSpec(
        "slow_seconds",
        0,
        "slow_off",
        "This room is no longer in slow mode.",
        "already_slow_off",
        "This room is not in slow mode.",
    ),
    "subscribers": ModeSpec(
        "subscribers_only",
        True,
        "subs_on",
        "This room is now in subscribers-only mode.",
        "already_subs_on",
        "This room is already in subscribers-only mode.",
    ),
    "subscribersoff": ModeSpec(
        "subscribers_only",
        False,
        "subs_off",
        "This room is no longer in subscribers-only mode.",
        "already_subs_off",
        "This room is not in subscribers-only mode.",
    ),
    "emoteonly": ModeSpec(
        "emote_only",
        True,
        "emote_only_on",
        "This room is now in emote-only mode.",
        "already_emote_only_on",
        "This room is already in emote-only mode.",
    ),
    "emoteonlyoff": ModeSpec(
        "emote_only",
        False,
        "emote_only_off",
        "This room is no longer in emote-only mode.",
        "already_emote_only_off",
        "This room is not in emote-only mode.",
    ),
    "r9kbeta": ModeSpec(
        "r9k",
        True,
        "r9k_on",
        "This room is now in unique-chat mode.",
        "already_r9k_on",
        "This room is already in unique-chat mode.",
    ),
    "r9kbetaoff": ModeSpec(
        "r9k",
        False,
        "r9k_off",
        "This room is no longer in unique-chat mode.",
        "already_r9k_off",
        "This room is not in unique-chat mode.",
    ),
}

USAGE = {
    "me": 'Usage: "/me <message>" - Express an action in the third-person.',
    "ban": 'Usage: "/ban <username> [reason]" - Permanently prevent a user from chatting.',
    "unban": 'Usage: "/unban <username>" - Removes a ban on a user.',
    "timeout": 'Usage: "/timeout <username> [duration][time unit] [reason]" - Temporarily prevent a user from chatting.',
    "untimeout": 'Usage: "/untimeout <username>" - Removes a timeout on a user.',
    "delete": 'Usage: "/delete <msg id>" - Deletes the specified message.',
    "slow": f'Usage: "/slow [duration]" - Enables slow mode (1 to {MAX_SLOW_SECONDS} seconds).',
}
