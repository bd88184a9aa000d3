"""One IRC message (RFC 1459/2812 with IRCv3 message tags): parse a line, serialize it back.

A line is ``[@tags SPACE] [:source SPACE] COMMAND [params] [SPACE :trailing]`` without its line ending
(framing strips CRLF or LF; see ``framing``). Tag values are escaped as IRCv3 message-tags says (``\\:`` for
``;``, ``\\s`` for space, ``\\\\``, ``\\r``, ``\\n``; any other escaped character stands for itself and a
lone trailing backslash is dropped); a tag without ``=`` and one with an empty value both read as "" (and are written ``key=``, since
tmi.js reads a key without '=' as having its own name for a value).

Parsing is lenient where real clients are (several spaces between parameters, lower-case commands, a
``:`` on a last parameter that needs none) and strict where sloppiness is dangerous: NUL, CR and LF are
never accepted inside a line, a command is letters or three digits, and at most 15 parameters. Every
refusal is an ``IrcError`` whose ``reason`` says why in a few words (it goes into the server's log).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from edged.errors import RemoteProtocolError

MAX_PARAMS = 15  # RFC 2812 section 2.3

_COMMAND_RE = re.compile(r"^(?:[A-Za-z]+|[0-9]{3})$")
# IRCv3: key = ['+'] [vendor '/'] name; name is letters, digits and '-'; vendor is a host name.
_TAG_KEY_RE = re.compile(r"^\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+$")
_FORBIDDEN = ("\x00", "\r", "\n")

_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


class IrcError(RemoteProtocolError):
    """A peer sent something that is not an IRC line we accept; ``reason`` says what, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def escape_tag_value(value: str) -> str:
    """IRCv3 message-tags escaping of one value."""
    return value.translate(_ESCAPE)


def unescape_tag_value(raw: str) -> str:
    """The inverse of ``escape_tag_value``, lenient as the spec asks (unknown escapes drop the '\\')."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 == n:  # a lone trailing backslash is dropped
            break
        nxt = raw[i + 1]
        out.append(_UNESCAPE.get(nxt, nxt))
        i += 2
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Message:
    """An IRC message. ``command`` is upper-case; ``source`` is the prefix without ':' ("" for none).

    ``trailing`` asks ``serialize`` to write the last parameter after ':' even when it needs none (TMI
    writes message texts that way and naive bots look for " :"); it does not take part in equality.
    """

    command: str
    params: tuple[str, ...] = ()
    source: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    trailing: bool = field(default=False, compare=False)

    def serialize(self) -> str:
        """The line, without a line ending. Raises IrcError for a message that cannot be written."""
        parts: list[str] = []
        if self.tags:
            items = []
            for key, value in self.tags.items():
                if not _TAG_KEY_RE.match(key):
                    raise IrcError(f"bad tag key {key!r}")
                if "\x00" in value:
                    raise IrcError("NUL in a tag value")
                items.append(f"{key}={escape_tag_value(value)}")
            parts.append("@" + ";".join(items))
        if self.source:
            if " " in self.source or _has_forbidden(self.source):
                raise IrcError("bad source")
            parts.append(":" + self.source)
        if not _COMMAND_RE.match(self.command):
            raise IrcError(f"bad command {self.command[:20]!r}")
        parts.append(self.command)
        if len(self.params) > MAX_PARAMS:
            raise IrcError("too many parameters")
        last = len(self.params) - 1
        for i, param in enumerate(self.params):
            if _has_forbidden(param):
                raise IrcError("CR, LF or NUL in a parameter")
            if i == last and (self.trailing or not param or " " in param or param[0] == ":"):
                parts.append(":" + param)
            elif not param or " " in param or param[0] == ":":
                raise IrcError("a middle parameter is empty, has a space or starts with ':'")
            else:
                parts.append(param)
        return " ".join(parts)

    def to_bytes(self) -> bytes:
        """The line as UTF-8 with CRLF, ready for the wire."""
        return (self.serialize() + "\r\n").encode("utf-8")


def _has_forbidden(text: str) -> bool:
    return any(ch in text for ch in _FORBIDDEN)


def parse_tags(raw: str) -> dict[str, str]:
    """Parse the tag section (between '@' and the first space). Later duplicates win."""
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue  # "@a=1;;b" and a trailing ';' are tolerated
        key, _, value = item.partition("=")
        if not _TAG_KEY_RE.match(key):
            raise IrcError("bad tag key")
        tags[key] = unescape_tag_value(value)
    return tags


def parse(line: str) -> Message:
    """Parse one line (no CR/LF). Raises IrcError naming what is wrong."""
    if _has_forbidden(line):
        raise IrcError("NUL" if "\x00" in line else "CR or LF inside a line")
    pos, n = 0, len(line)
    tags: dict[str, str] = {}
    if line.startswith("@"):
        end = line.find(" ")
        if end == -1:
            raise IrcError("tags without a command")
        tags = parse_tags(line[1:end])
        pos = end
    while pos < n and line[pos] == " ":
        pos += 1
    source = ""
    if pos < n and line[pos] == ":":
        end = line.find(" ", pos)
        if end == -1:
            raise IrcError("source without a command")
        source = line[pos + 1 : end]
        if not source:
            raise IrcError("empty source")
        pos = end
        while pos < n and line[pos] == " ":
            pos += 1
    end = line.find(" ", pos)
    if end == -1:
        end = n
    command = line[pos:end]
    if not command:
        raise IrcError("no command")
    if not _COMMAND_RE.match(command):
        raise IrcError("bad command")
    pos = end
    params: list[str] = []
    trailing = False
    while pos < n:
        while pos < n and line[pos] == " ":
            pos += 1
        if pos >= n:
            break
        if line[pos] == ":":
            params.append(line[pos + 1 :])
            trailing = True
            break
        end = line.find(" ", pos)
        if end == -1:
            end = n
        params.append(line[pos:end])
        pos = end
    if len(params) > MAX_PARAMS:
        raise IrcError("too many parameters")
    return Message(command.upper(), tuple(params), source, tags, trailing)
