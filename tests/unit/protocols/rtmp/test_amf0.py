"""AMF0: known encodings, round trips, malformed input and caps."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp.amf0 import UNDEFINED, Date, EcmaArray, Limits, TypedObject


def s16(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (1.5, b"\x00" + struct.pack(">d", 1.5)),
        (3, b"\x00" + struct.pack(">d", 3.0)),
        (True, b"\x01\x01"),
        (False, b"\x01\x00"),
        ("connect", b"\x02" + s16("connect")),
        (None, b"\x05"),
        (UNDEFINED, b"\x06"),
        ({"a": None}, b"\x03" + s16("a") + b"\x05\x00\x00\x09"),
        (
            EcmaArray(w=1.0),
            b"\x08\x00\x00\x00\x01" + s16("w") + b"\x00" + struct.pack(">d", 1.0) + b"\x00\x00\x09",
        ),
        ([None, True], b"\x0a\x00\x00\x00\x02\x05\x01\x01"),
        (Date(1e12, 0), b"\x0b" + struct.pack(">d", 1e12) + b"\x00\x00"),
        (TypedObject("C", {}), b"\x10" + s16("C") + b"\x00\x00\x09"),
    ],
)
def test_known_encodings(value: Any, encoded: bytes) -> None:
    assert amf0.encode(value) == encoded
    decoded = amf0.decode(encoded)
    assert decoded == [float(value) if type(value) is int else value]


def test_long_string_round_trip() -> None:
    text = "é" * 40000  # 80000 UTF-8 bytes: past the 16-bit length of a plain string
    encoded = amf0.encode(text)
    assert encoded[0] == 0x0C and struct.unpack(">I", encoded[1:5])[0] == 80000
    assert amf0.decode(encoded) == [text]


def test_xml_document_decodes_as_text() -> None:
    assert amf0.decode(b"\x0f" + struct.pack(">I", 3) + b"<a>") == ["<a>"]


def test_ecma_array_count_is_advisory() -> None:
    data = b"\x08\x00\x00\x00\x00" + s16("k") + b"\x05\x00\x00\x09"  # says 0 items, has 1
    (value,) = amf0.decode(data)
    assert isinstance(value, EcmaArray) and value == {"k": None}


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert amf0.decode(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


def test_empty_key_with_a_value_is_kept() -> None:
    data = b"\x03" + s16("") + b"\x05" + b"\x00\x00\x09"
    assert amf0.decode(data) == [{"": None}]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02",  # truncated number
        b"\x01",  # truncated boolean
        b"\x02\x00\x05ab",  # truncated string
        b"\x03" + s16("a") + b"\x05",  # object without end marker
        b"\x03\x00",  # truncated key length
        b"\x07\x00\x01",  # reference
        b"\x04",  # movie clip
        b"\x0d",  # unsupported
        b"\x0e",  # record set
        b"\x11\x01",  # AVM+ switch
        b"\x12",  # beyond the table
        b"\x09",  # object end out of place
        b"\x0a\xff\xff\xff\xff\x05",  # strict array claiming 4 billion values
        b"\x0b\x00",  # truncated date
        b"\x0c\xff\xff\xff\xff",  # long string longer than the data
        b"\x10\x00\x01",  # truncated typed object
    ],
)
def test_malformed_input_raises_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        amf0.decode(data)


def test_depth_cap() -> None:
    ok = b"\x0a\x00\x00\x00\x01" * 31 + b"\x03\x00\x00\x09"
    assert amf0.decode(ok, Limits(max_depth=32))
    too_deep = b"\x0a\x00\x00\x00\x01" * 32 + b"\x03\x00\x00\x09"
    with pytest.raises(RemoteProtocolError, match="nesting"):
        amf0.decode(too_deep, Limits(max_depth=32))


def test_deep_input_never_hits_recursion_limit() -> None:
    with pytest.raises(RemoteProtocolError):
        amf0.decode(b"\x0a\x00\x00\x00\x01" * 100_000)
    with pytest.raises(RemoteProtocolError):
        amf0.decode(b"\x03\x00\x01a" * 100_000)


def test_item_cap() -> None:
    many = b"\x0a" + struct.pack(">I", 2000) + b"\x05" * 2000
    with pytest.raises(RemoteProtocolError, match="values"):
        amf0.decode(many, Limits(max_items=1024))
    assert len(amf0.decode(many, Limits(max_items=2001))[0]) == 2000
    flat = b"\x05" * 1025
    with pytest.raises(RemoteProtocolError):
        amf0.decode(flat, Limits(max_items=1024))


def test_string_cap() -> None:
    with pytest.raises(RemoteProtocolError, match="string"):
        amf0.decode(amf0.encode("x" * 101), Limits(max_string=100))
    with pytest.raises(RemoteProtocolError):
        amf0.decode(amf0.encode({"k" * 101: None}), Limits(max_string=100))


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        Limits(max_depth=0)
    with pytest.raises(ValueError):
        Limits(max_depth=10_000)
    with pytest.raises(ValueError):
        Limits(max_items=0)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        b"bytes",
        {1: "non-str key"},
        10**400,
        "\ud800",
        {"\ud800": 1},
        Date(0.0, 40000),
        {"k" * 70000: 1},
    ],
)
def test_unencodable_values_raise_local_error(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        amf0.encode(value)


def test_self_referencing_value_raises_local_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LocalProtocolError):
        amf0.encode(loop)


def test_undefined_is_a_singleton() -> None:
    assert amf0.Undefined() is UNDEFINED and repr(UNDEFINED) == "UNDEFINED"


keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.builds(Date, st.floats(allow_nan=False), st.integers(-32768, 32767)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5).map(EcmaArray),
        st.builds(TypedObject, keys, st.dictionaries(keys, inner, max_size=4)),
    ),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks the container kinds survive."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, TypedObject):
        return a.class_name == b.class_name and same(a.values, b.values)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=300)
@given(st.lists(values, max_size=4))
def test_round_trip(vals: list[Any]) -> None:
    encoded = amf0.encode(*vals)
    decoded = amf0.decode(encoded, Limits(max_items=10_000))
    assert same(decoded, vals)
    assert amf0.encode(*decoded) == encoded


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        decoded = amf0.decode(data)
    except ProtocolError:
        return
    amf0.encode(*decoded)  # whatever decodes can be encoded again
