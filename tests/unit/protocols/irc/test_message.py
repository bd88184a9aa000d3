"""IRC message parsing and serialization (RFC 1459/2812 grammar, IRCv3 message-tags escaping)."""

from __future__ import annotations

import pytest

from edged.errors import RemoteProtocolError
from edged.protocols.irc.message import (
    IrcError,
    Message,
    escape_tag_value,
    parse,
    parse_tags,
    unescape_tag_value,
)


def test_plain_command() -> None:
    assert parse("PING") == Message("PING")
    assert parse("ping") == Message("PING")  # commands are case-insensitive
    assert parse("001 bob :Welcome") == Message("001", ("bob", "Welcome"))


def test_source_params_and_trailing() -> None:
    msg = parse(":bob!bob@bob.tmi.twitch.tv PRIVMSG #demo :hello there :)")
    assert msg.source == "bob!bob@bob.tmi.twitch.tv"
    assert msg.command == "PRIVMSG"
    assert msg.params == ("#demo", "hello there :)")
    assert msg.trailing


def test_middle_params_and_a_last_param_without_colon() -> None:
    msg = parse("USER guest 0 * :Real Name")
    assert msg.params == ("guest", "0", "*", "Real Name")
    msg = parse("JOIN #a,#b")
    assert msg.params == ("#a,#b",) and not msg.trailing


def test_lenient_spacing() -> None:
    assert parse("PRIVMSG   #demo    :hi") == Message("PRIVMSG", ("#demo", "hi"))
    assert parse(":src   NOTICE  * :x") == Message("NOTICE", ("*", "x"), "src")
    assert parse("JOIN #a ") == Message("JOIN", ("#a",))  # a trailing space adds no parameter
    assert parse("   PING") == Message("PING")


def test_empty_trailing_is_a_parameter() -> None:
    assert parse("CLEARMSG #demo :").params == ("#demo", "")
    assert parse("PRIVMSG #demo ::)").params == ("#demo", ":)")


def test_tags_with_every_escape() -> None:
    msg = parse(r"@a=1;b=x\:y\sz\\w\r\n;c;d=;+vendor.example/e=v PING")
    assert msg.tags == {"a": "1", "b": "x;y z\\w\r\n", "c": "", "d": "", "+vendor.example/e": "v"}


def test_tag_unescaping_is_lenient() -> None:
    assert unescape_tag_value(r"a\bc") == "abc"  # unknown escape: the character itself
    assert unescape_tag_value("abc\\") == "abc"  # lone trailing backslash dropped
    assert unescape_tag_value(r"\\\\") == "\\\\"
    assert unescape_tag_value("plain") == "plain"


def test_duplicate_tag_last_wins_and_empty_items_skipped() -> None:
    assert parse_tags("a=1;;a=2;") == {"a": "2"}


def test_tag_value_with_equals_sign() -> None:
    assert parse("@k=a=b PING").tags == {"k": "a=b"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "no command"),
        ("   ", "no command"),
        ("@a=1", "tags without a command"),
        ("@a=1 ", "no command"),
        (":source", "source without a command"),
        (": PING", "empty source"),
        (":src ", "no command"),
        ("PRIV-MSG #a", "bad command"),
        ("12 x", "bad command"),
        ("1234 x", "bad command"),
        ("PING\x00x", "NUL"),
        ("PING\rx", "CR or LF inside a line"),
        ("PING\nx", "CR or LF inside a line"),
        ("@a b=1 PING", "bad command"),
        ("@=1 PING", "bad tag key"),
        ("@a!b=1 PING", "bad tag key"),
        ("CMD " + " ".join("p" * 16), "too many parameters"),
    ],
)
def test_refusals_name_the_reason(line: str, reason: str) -> None:
    with pytest.raises(IrcError) as info:
        parse(line)
    assert info.value.reason == reason
    assert isinstance(info.value, RemoteProtocolError)


def test_fifteen_params_are_fine() -> None:
    assert len(parse("CMD " + " ".join("p" * 14) + " :last one").params) == 15


def test_serialize_writes_trailing_only_when_needed_or_asked() -> None:
    assert Message("JOIN", ("#demo",), "bob!bob@h").serialize() == ":bob!bob@h JOIN #demo"
    assert Message("PRIVMSG", ("#demo", "hi there")).serialize() == "PRIVMSG #demo :hi there"
    assert Message("PRIVMSG", ("#demo", "hi"), trailing=True).serialize() == "PRIVMSG #demo :hi"
    assert Message("CLEARMSG", ("#demo", "")).serialize() == "CLEARMSG #demo :"
    assert Message("X", ("a", ":b")).serialize() == "X a ::b"


def test_serialize_tags_always_with_equals_and_escaped() -> None:
    msg = Message("PING", (), "", {"badge-info": "", "display-name": "a b;c\\d\r\n"})
    assert msg.serialize() == r"@badge-info=;display-name=a\sb\:c\\d\r\n PING"
    assert msg.to_bytes().endswith(b" PING\r\n")


def test_escape_is_inverse_of_unescape() -> None:
    value = "; \\\r\n:=x"
    assert unescape_tag_value(escape_tag_value(value)) == value


@pytest.mark.parametrize(
    "msg",
    [
        Message("PRIVMSG", ("#a b", "x")),
        Message("PRIVMSG", ("", "x")),
        Message("PRIVMSG", (":a", "x")),
        Message("PRIVMSG", ("#a", "x\r\ny")),
        Message("PRIVMSG", ("#a", "x\x00")),
        Message("PRIV MSG"),
        Message(""),
        Message("PING", source="a b"),
        Message("PING", source="a\nb"),
        Message("PING", tags={"a;b": "1"}),
        Message("PING", tags={"a": "\x00"}),
        Message("CMD", tuple("p" * 16)),
    ],
)
def test_serialize_refuses_what_cannot_be_written(msg: Message) -> None:
    with pytest.raises(IrcError):
        msg.serialize()


def test_trailing_flag_takes_no_part_in_equality() -> None:
    assert Message("X", ("a",), trailing=True) == Message("X", ("a",))


def test_utf8_text_round_trips() -> None:
    msg = Message("PRIVMSG", ("#demo", "héllo wörld 🎉"), "bob", {"display-name": "Bøb"})
    assert parse(msg.serialize()) == msg
    assert "🎉".encode() in msg.to_bytes()
