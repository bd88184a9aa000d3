"""LineBuffer: CRLF and LF endings, split reads, the 512-byte line and 8191-byte tag limits."""

from __future__ import annotations

import pytest

from edged.protocols.irc.framing import MAX_LINE_BYTES, MAX_TAGS_BYTES, MAX_TEXT_BYTES, LineBuffer
from edged.protocols.irc.message import IrcError, Message


def lines_of(*chunks: bytes) -> list[str]:
    buf = LineBuffer()
    out: list[str] = []
    for chunk in chunks:
        buf.feed(chunk)
        while (line := buf.next_line()) is not None:
            out.append(line)
    return out


def test_crlf_and_bare_lf() -> None:
    assert lines_of(b"PING a\r\nPING b\nPING c\r\n") == ["PING a", "PING b", "PING c"]


def test_empty_lines_are_skipped() -> None:
    assert lines_of(b"\r\n\n\r\nPING\r\n\r\n") == ["PING"]


def test_partial_line_waits() -> None:
    buf = LineBuffer()
    buf.feed(b"PRIVMSG #demo :hel")
    assert buf.next_line() is None
    assert buf.buffered == len(b"PRIVMSG #demo :hel")
    buf.feed(b"lo\r")
    assert buf.next_line() is None
    buf.feed(b"\nPING")
    assert buf.next_line() == "PRIVMSG #demo :hello"
    assert buf.next_line() is None
    assert buf.buffered == 4


def test_one_byte_at_a_time() -> None:
    data = "@a=1 PRIVMSG #d :héllo\r\nPING\n".encode()
    assert lines_of(*[data[i : i + 1] for i in range(len(data))]) == ["@a=1 PRIVMSG #d :héllo", "PING"]


def test_utf8_split_across_reads() -> None:
    data = "PRIVMSG #d :🎉\r\n".encode()
    cut = data.index(b"\xf0") + 2
    assert lines_of(data[:cut], data[cut:]) == ["PRIVMSG #d :🎉"]


def test_messages_parses() -> None:
    buf = LineBuffer()
    buf.feed(b"PING\r\nJOIN #a\r\nPRIV")
    assert buf.messages() == [Message("PING"), Message("JOIN", ("#a",))]


def test_line_at_the_limit_passes_and_one_more_byte_fails() -> None:
    body = b"NOTICE #d :" + b"x" * (MAX_LINE_BYTES - 2 - len(b"NOTICE #d :"))
    assert len(body + b"\r\n") == MAX_LINE_BYTES
    assert lines_of(body + b"\r\n") == [body.decode()]
    assert lines_of(body + b"\n") == [body.decode()]  # a bare LF counts as the CRLF it stands for
    with pytest.raises(IrcError, match="line too long"):
        lines_of(body + b"x\r\n")


def test_oversized_partial_line_fails_before_its_end() -> None:
    buf = LineBuffer()
    buf.feed(b"PRIVMSG #d :" + b"x" * (MAX_LINE_BYTES + MAX_TEXT_BYTES))
    with pytest.raises(IrcError, match="line too long"):
        buf.next_line()


def test_a_privmsg_text_may_pass_512_bytes() -> None:
    """500 characters (the chat body limit; tmi.js splits there) fit whatever the script."""
    for text in ("x" * 500, "ж" * 500, "🎉" * 500):
        line = f"PRIVMSG #{'c' * 64} :{text}"
        assert lines_of(line.encode() + b"\r\n") == [line]
    with_source = f":bob!bob@host PRIVMSG #demo :{'x' * 600}"
    assert lines_of(with_source.encode() + b"\n") == [with_source]
    assert lines_of(b"privmsg #demo :" + b"x" * 600 + b"\r\n")  # commands are case-insensitive


def test_the_privmsg_allowance_is_for_the_text_only() -> None:
    with pytest.raises(IrcError, match="line too long"):  # text over the allowance
        lines_of(b"PRIVMSG #d :" + b"x" * (MAX_LINE_BYTES + MAX_TEXT_BYTES) + b"\r\n")
    with pytest.raises(IrcError, match="line too long"):  # what precedes the text over 512
        lines_of(b"PRIVMSG " + b"#d," * 200 + b" :hi\r\n")
    with pytest.raises(IrcError, match="line too long"):  # no trailing text
        lines_of(b"PRIVMSG #d " + b"x" * 600 + b"\r\n")
    with pytest.raises(IrcError, match="line too long"):  # not a PRIVMSG
        lines_of(b"NOTICE #d :" + b"x" * 600 + b"\r\n")
    with pytest.raises(IrcError, match="line too long"):
        lines_of(b":" + b"s" * 600 + b" PRIVMSG #d :x\r\n")


def test_strict_rfc_limit() -> None:
    buf = LineBuffer(max_text_bytes=0)
    buf.feed(b"PRIVMSG #demo :" + b"x" * 500 + b"\r\n")
    with pytest.raises(IrcError, match="line too long"):
        buf.next_line()


def test_tags_do_not_count_against_the_line_limit() -> None:
    tags = b"@k=" + b"v" * (MAX_TAGS_BYTES - 4) + b" "
    assert len(tags) == MAX_TAGS_BYTES
    body = b"NOTICE #d :" + b"x" * (MAX_LINE_BYTES - 2 - len(b"NOTICE #d :"))
    [line] = lines_of(tags + body + b"\r\n")
    assert line.endswith("xxx") and line.startswith("@k=vvv")


def test_tags_over_the_limit_fail() -> None:
    tags = b"@k=" + b"v" * (MAX_TAGS_BYTES - 3) + b" "
    with pytest.raises(IrcError, match="tags too long"):
        lines_of(tags + b"PING\r\n")


def test_oversized_partial_tags_fail_before_the_space() -> None:
    buf = LineBuffer()
    buf.feed(b"@k=" + b"v" * MAX_TAGS_BYTES)
    with pytest.raises(IrcError, match="tags too long"):
        buf.next_line()


def test_long_partial_tags_within_limit_wait() -> None:
    buf = LineBuffer()
    buf.feed(b"@k=" + b"v" * 4000)
    assert buf.next_line() is None


def test_body_after_long_tags_is_still_limited() -> None:
    buf = LineBuffer()
    buf.feed(b"@k=v NOTICE #d :" + b"x" * (MAX_LINE_BYTES + MAX_TEXT_BYTES))
    with pytest.raises(IrcError, match="line too long"):
        buf.next_line()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PRIVMSG #d :\xff\xfe\r\n", "invalid UTF-8"),
        (b"PRIVMSG #d :\xc3\r\n", "invalid UTF-8"),
        (b"PRIVMSG #d :a\x00b\r\n", "NUL"),
        (b"PRIVMSG #d :a\rb\r\n", "CR inside a line"),
        (b"PING\r\r\n", "CR inside a line"),
    ],
)
def test_bad_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(IrcError) as info:
        lines_of(data)
    assert info.value.reason == reason


def test_parse_errors_surface_from_next_message() -> None:
    buf = LineBuffer()
    buf.feed(b"PRIV-MSG x\r\n")
    with pytest.raises(IrcError, match="bad command"):
        buf.next_message()


def test_after_an_error_the_buffer_stays_failed() -> None:
    buf = LineBuffer()
    buf.feed(b"\xff\r\nPING\r\n")
    with pytest.raises(IrcError):
        buf.next_line()
    with pytest.raises(IrcError, match="invalid UTF-8"):
        buf.next_line()


def test_memory_is_bounded_over_many_lines() -> None:
    buf = LineBuffer()
    for _ in range(2000):
        buf.feed(b"PRIVMSG #demo :" + b"x" * 100 + b"\r\n")
        assert buf.next_line() is not None
    assert buf.buffered == 0
    assert len(buf._data) < 70 * 1024  # dead bytes are compacted away


def test_custom_limits() -> None:
    buf = LineBuffer(max_line_bytes=16, max_tags_bytes=16)
    buf.feed(b"NOTICE #d :12345\r\n")  # 18 bytes with CRLF
    with pytest.raises(IrcError, match="line too long"):
        buf.next_line()


def test_a_pass_may_carry_a_long_token() -> None:
    """An RS256 JWT is over 512 bytes on its own; its lower-case-safe (base32) form more than 1,000."""
    for size in (700, 1200, MAX_TEXT_BYTES):
        line = f"PASS oauth:{'A' * (size - 6)}"
        assert lines_of(line.encode() + b"\r\n") == [line]
    with pytest.raises(IrcError, match="line too long"):
        lines_of(b"PASS oauth:" + b"A" * (MAX_TEXT_BYTES + 10) + b"\r\n")
