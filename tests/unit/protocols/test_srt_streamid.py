"""SRT stream ID parsing: plain keys, the access-control form, refusals with reject codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import ProtocolError, RemoteProtocolError
from edged.protocols import srt_streamid as sid
from edged.protocols.srt_streamid import Mode, StreamIdError, parse_streamid, publish_key


@pytest.mark.parametrize("raw", ["demo-key", "A.b_c~d-9", "k" * 128, b"bytes-key"])
def test_plain_key(raw: str | bytes) -> None:
    parsed = parse_streamid(raw)
    assert parsed.mode is Mode.PUBLISH
    assert parsed.key == (raw.decode() if isinstance(raw, bytes) else raw)
    assert parsed.fields == ()
    assert publish_key(raw) == parsed.key


def test_access_control_form() -> None:
    parsed = parse_streamid("#!::u=alice,r=demo-key,m=publish,s=abc==,h=edge1.example,x_note=hi there")
    assert parsed.key == "demo-key"
    assert parsed.mode is Mode.PUBLISH
    assert (parsed.user, parsed.host, parsed.session) == ("alice", "edge1.example", "abc==")
    assert ("x_note", "hi there") in parsed.fields
    assert publish_key("#!::r=demo-key,m=publish") == "demo-key"


def test_percent_encoded_stream_id_is_decoded_once() -> None:
    assert publish_key("%23%21%3A%3Ar%3Ddemo-key%2Cm%3Dpublish") == "demo-key"
    assert publish_key(b"demo%2Dkey") == "demo-key"
    with pytest.raises(StreamIdError):
        parse_streamid("%ff%fe")  # not UTF-8 once decoded
    with pytest.raises(StreamIdError):
        parse_streamid("demo%25key")  # decodes to 'demo%key': still not a key


def test_missing_mode_means_publish() -> None:
    # The spec's default is `request`; an ingest-only listener reads a missing m as publish.
    assert publish_key("#!::r=demo-key") == "demo-key"


@pytest.mark.parametrize("mode", ["request", "bidirectional"])
def test_non_publish_modes_refused(mode: str) -> None:
    assert parse_streamid(f"#!::r=k1,m={mode}").mode is Mode(mode)
    with pytest.raises(StreamIdError) as info:
        publish_key(f"#!::r=k1,m={mode}")
    assert info.value.reject_code == sid.REJ_BAD_MODE


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", sid.REJ_UNAUTHORIZED),
        ("#!::", sid.REJ_BAD_REQUEST),
        ("#!::m=publish", sid.REJ_UNAUTHORIZED),
        ("#!::r=", sid.REJ_UNAUTHORIZED),
        ("#!::r=a,r=b", sid.REJ_BAD_REQUEST),
        ("#!::r=a,,m=publish", sid.REJ_BAD_REQUEST),
        ("#!::r=a,m", sid.REJ_BAD_REQUEST),
        ("#!::r=a,m=push", sid.REJ_BAD_MODE),
        ("#!::r=a,t=file", sid.REJ_BAD_MODE),
        ("#!::r=a b", sid.REJ_FORBIDDEN),
        ("#!::1r=a", sid.REJ_BAD_REQUEST),
        ("#!:{r=a}", sid.REJ_BAD_REQUEST),
        ("live/demo", sid.REJ_FORBIDDEN),
        ("k" * 129, sid.REJ_FORBIDDEN),
        ("x" * 513, sid.REJ_BAD_REQUEST),
        (b"\xff\xfe", sid.REJ_BAD_REQUEST),
        ("#!::" + ",".join(f"x{i}=1" for i in range(sid.MAX_FIELDS)) + ",r=a", sid.REJ_BAD_REQUEST),
    ],
)
def test_malformed_refused_with_code(raw: str | bytes, code: int) -> None:
    with pytest.raises(StreamIdError) as info:
        parse_streamid(raw)
    assert info.value.reject_code == code
    assert info.value.reply_hint == str(code)
    assert isinstance(info.value, RemoteProtocolError)


def test_not_str_or_bytes() -> None:
    with pytest.raises(StreamIdError):
        parse_streamid(42)  # type: ignore[arg-type]


_names = st.sampled_from(["r", "m", "u", "s", "h", "t", "x"])
_values = st.text(alphabet=st.characters(blacklist_characters=","), max_size=20)
_ac = st.lists(st.tuples(_names, _values), max_size=6).map(
    lambda kv: "#!::" + ",".join(f"{k}={v}" for k, v in kv))


@given(st.one_of(st.text(max_size=600), st.binary(max_size=600), _ac))
def test_arbitrary_input_raises_only_protocol_error(raw: str | bytes) -> None:
    try:
        parsed = parse_streamid(raw)
    except ProtocolError:
        return
    assert 1 <= len(parsed.key) <= 128
    try:
        assert publish_key(raw) == parsed.key
    except StreamIdError as exc:
        assert exc.reject_code == sid.REJ_BAD_MODE


@given(st.from_regex(r"[A-Za-z0-9_.~-]{1,128}", fullmatch=True), st.sampled_from(["", ",m=publish"]))
def test_valid_keys_roundtrip(key: str, mode: str) -> None:
    assert publish_key(key) == key
    assert publish_key(f"#!::r={key}{mode}") == key
