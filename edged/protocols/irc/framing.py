"""Split a byte stream into IRC lines, with the limits that keep a connection's memory bounded.

A line ends at LF; a CR just before it is dropped (CRLF and bare LF both work; a CR anywhere else is an
error). Empty lines are skipped, as RFC 1459 says. Limits (IRCv3 message-tags): the tag section, from '@'
to the space after it, is at most ``max_tags_bytes`` (8191) bytes; the rest of the line, with its CRLF,
at most ``max_line_bytes`` (512). One allowance: a PRIVMSG's text (its trailing parameter) may take the
line past 512 bytes by up to ``max_text_bytes`` (2000) as long as everything before the text fits in 512.
Chat bodies are limited to 500 characters, not bytes (the room refuses longer ones with a NOTICE), and
tmi.js sends up to 500 characters per PRIVMSG: ``PRIVMSG #channel :`` plus 500 ASCII characters is already
over 512 bytes, and 500 characters of UTF-8 may be 2000. The same allowance covers a PASS's password (a JWT
signed with RS256 is over 512 bytes on its own). ``max_text_bytes=0`` is the strict RFC limit.
The buffer never holds more than one line over those limits: a partial line that can no longer fit
raises at once instead of waiting for its end.

Every refusal is an ``IrcError`` naming why (``line too long``, ``tags too long``, ``invalid UTF-8``,
``NUL``, ``CR inside a line``, or a parse error from ``message.parse``); after one the buffer is unusable
and the connection should be closed.
"""

from __future__ import annotations

from edged.protocols.irc.message import IrcError, Message, parse

MAX_LINE_BYTES = 512  # RFC 1459: a message including its CRLF, tags excluded
MAX_TAGS_BYTES = 8191  # IRCv3 message-tags: '@', the tags and the space that ends them
MAX_TEXT_BYTES = 2000  # a PRIVMSG text past the 512: 500 characters of up to 4 bytes in UTF-8

# Dead bytes at the front are dropped once this many accumulate (one copy per ~64 KiB read).
_COMPACT = 64 * 1024


class LineBuffer:
    """Bytes in, ``Message``s out. Pull-based, so a caller can stop reading (e.g. while a login waits)."""

    __slots__ = (
        "_data",
        "_start",
        "_scanned",
        "max_line_bytes",
        "max_tags_bytes",
        "max_text_bytes",
        "_failed",
    )

    def __init__(
        self,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_tags_bytes: int = MAX_TAGS_BYTES,
        max_text_bytes: int = MAX_TEXT_BYTES,
    ) -> None:
        self._data = bytearray()
        self._start = 0  # first byte of the current (incomplete) line
        self._scanned = 0  # bytes from _start already known to hold no LF
        self.max_line_bytes = max_line_bytes
        self.max_tags_bytes = max_tags_bytes
        self.max_text_bytes = max_text_bytes
        self._failed: IrcError | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes (no parsing happens here)."""
        if self._start >= _COMPACT:
            del self._data[: self._start]
            self._start = 0
        self._data += data

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet returned as lines."""
        return len(self._data) - self._start

    def next_line(self) -> str | None:
        """The next complete non-empty line as text (no line ending), or None until more bytes come."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_line()
        except IrcError as exc:
            self._failed = exc
            raise

    def next_message(self) -> Message | None:
        """The next complete line parsed, or None until more bytes come."""
        line = self.next_line()
        if line is None:
            return None
        try:
            return parse(line)
        except IrcError as exc:
            self._failed = exc
            raise

    def messages(self) -> list[Message]:
        """Every complete message held now."""
        out: list[Message] = []
        while (msg := self.next_message()) is not None:
            out.append(msg)
        return out

    def _next_line(self) -> str | None:
        data = self._data
        while True:
            start = self._start
            lf = data.find(b"\n", start + self._scanned)
            if lf == -1:
                self._scanned = len(data) - start
                self._check_partial()
                return None
            end = lf - 1 if lf > start and data[lf - 1] == 0x0D else lf
            raw = bytes(data[start:end])
            self._start = lf + 1
            self._scanned = 0
            if not raw:
                continue
            self._check_complete(raw)
            return self._decode(raw)

    @staticmethod
    def _tags_length(raw: bytes | bytearray, start: int, end: int) -> int:
        """Length of the tag section of the line at ``raw[start:]`` (0 without tags); -1 when no space ends
        it before ``end``."""
        if start >= len(raw) or raw[start] != 0x40:  # '@'
            return 0
        space = raw.find(b" ", start, end)
        return -1 if space == -1 else space + 1 - start

    def _check_partial(self) -> None:
        size = len(self._data) - self._start
        longest = self.max_line_bytes - 2 + self.max_text_bytes  # without tags and the CRLF still to come
        if size <= longest:
            return
        tags = self._tags_length(self._data, self._start, self._start + self.max_tags_bytes)
        if tags == -1:
            if size >= self.max_tags_bytes:
                raise IrcError("tags too long")
            return  # the tag section may still end within its limit
        if size - tags > longest:
            raise IrcError("line too long")

    def _check_complete(self, raw: bytes) -> None:
        tags = self._tags_length(raw, 0, self.max_tags_bytes)
        if tags == -1:
            # Either the tag section is too long or the line is all tags (no command): both refused.
            raise IrcError("tags too long" if len(raw) >= self.max_tags_bytes else "tags without a command")
        # A bare LF ending counts as a CRLF: the limit is about what a server may relay.
        if len(raw) - tags + 2 <= self.max_line_bytes:
            return
        text = _privmsg_text_start(raw, tags) if self.max_text_bytes else -1
        if text == -1 or text - tags + 2 > self.max_line_bytes or len(raw) - text > self.max_text_bytes:
            raise IrcError("line too long")

    @staticmethod
    def _decode(raw: bytes) -> str:
        if 0 in raw:
            raise IrcError("NUL")
        if 0x0D in raw:
            raise IrcError("CR inside a line")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise IrcError("invalid UTF-8") from None


def _privmsg_text_start(raw: bytes, start: int) -> int:
    """Where the text of the PRIVMSG at ``raw[start:]`` begins (after " :"), or the password of a PASS; -1 if
    the line is neither."""
    pos = start
    if raw.startswith(b":", pos):
        pos = raw.find(b" ", pos)
        if pos == -1:
            return -1
        pos += 1
    end = raw.find(b" ", pos)
    if end == -1:
        return -1
    command = raw[pos:end].upper()
    if command == b"PASS":  # a token: an RS256 JWT alone is over 512 bytes, its case-safe form more
        return end + 1
    if command != b"PRIVMSG":
        return -1
    colon = raw.find(b" :", end)
    return -1 if colon == -1 else colon + 2
