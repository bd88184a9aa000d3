"""AMF0 encoding and decoding (Adobe AMF0 specification, section 2), with caps.

Python mapping: number ↔ float (int and bool-free ints encode as numbers), boolean ↔
bool, string/long string ↔ str, object ↔ dict, ECMA array ↔ EcmaArray (a dict),
strict array ↔ list, null ↔ None, undefined ↔ UNDEFINED, date ↔ Date, typed object ↔
TypedObject. XML documents decode to str. References, movie clips, record sets,
"unsupported" and the AVM+ switch are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from edged.errors import LocalProtocolError, RemoteProtocolError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10

# Commands nest two levels and onMetaData one; 32 levels leaves room while keeping the
# recursive decoder far from Python's recursion limit.
DEFAULT_MAX_DEPTH = 32
# connect carries ~15 values and onMetaData ~30; 1024 values per message is generous.
DEFAULT_MAX_ITEMS = 1024
# Strings in commands are names and URLs; metadata strings are short. 1 MiB (bytes)
# leaves room for odd encoders without letting one string dominate a message.
DEFAULT_MAX_STRING = 1024 * 1024
_HARD_MAX_DEPTH = 200  # caps the cap: deeper would risk RecursionError

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TZ = struct.Struct(">h")


class Undefined:
    """The AMF0 undefined value (a singleton: ``UNDEFINED``)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


class EcmaArray(dict[str, Any]):
    """A dict that encodes as an AMF0 ECMA array (what onMetaData carries)."""


@dataclass(frozen=True, slots=True)
class Date:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and a time-zone field (ignored)."""

    milliseconds: float
    timezone: int = 0


@dataclass(frozen=True, slots=True)
class TypedObject:
    """An AMF0 typed object: a class name and its properties."""

    class_name: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps applied while decoding one message."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_items: int = DEFAULT_MAX_ITEMS
    max_string: int = DEFAULT_MAX_STRING

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= _HARD_MAX_DEPTH:
            raise ValueError(f"max_depth must be within 1..{_HARD_MAX_DEPTH}")
        if self.max_items < 1 or self.max_string < 0:
            raise ValueError("max_items must be positive and max_string non-negative")


DEFAULT_LIMITS = Limits()


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Decode every AMF0 value in ``data``; raise RemoteProtocolError on malformed or oversized input."""
    decoder = _Decoder(data, limits)
    values = []
    while decoder.pos < len(data):
        values.append(decoder.value(0))
    return values


class _Decoder:
    __slots__ = ("data", "pos", "limits", "items")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.items = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError("truncated AMF0 value")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def string(self, length: int) -> str:
        if length > self.limits.max_string:
            raise RemoteProtocolError(f"AMF0 string of {length} bytes exceeds the cap")
        # Invalid UTF-8 from odd encoders should not end a publish; mark it, don't fail.
        return self.take(length).decode("utf-8", "replace")

    def count(self, n: int = 1) -> None:
        self.items += n
        if self.items > self.limits.max_items:
            raise RemoteProtocolError(f"AMF0 message has more than {self.limits.max_items} values")

    def value(self, depth: int) -> Any:
        self.count()
        marker = self.take(1)[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.string(self.u16())
        if marker in (LONG_STRING, XML_DOCUMENT):
            return self.string(self.u32())
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == DATE:
            ms = _DOUBLE.unpack(self.take(8))[0]
            return Date(ms, _DATE_TZ.unpack(self.take(2))[0])
        if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY, TYPED_OBJECT):
            if depth + 1 > self.limits.max_depth:
                raise RemoteProtocolError(f"AMF0 nesting deeper than {self.limits.max_depth}")
            if marker == OBJECT:
                return self.properties(dict(), depth + 1)
            if marker == ECMA_ARRAY:
                self.u32()  # section 2.10: an advisory count many encoders get wrong; the end marker rules
                return self.properties(EcmaArray(), depth + 1)
            if marker == TYPED_OBJECT:
                name = self.string(self.u16())
                return TypedObject(name, self.properties(dict(), depth + 1))
            n = self.u32()
            # Each value takes at least one byte, so the count can be checked before looping.
            if n > len(self.data) - self.pos:
                raise RemoteProtocolError("AMF0 strict array count exceeds the bytes left")
            return [self.value(depth + 1) for _ in range(n)]
        if marker == OBJECT_END:
            raise RemoteProtocolError("AMF0 object end outside an object")
        raise RemoteProtocolError(f"unsupported AMF0 marker 0x{marker:02x}")

    def properties(self, out: dict[str, Any], depth: int) -> dict[str, Any]:
        # Section 2.5: key/value pairs up to an empty key followed by the object-end marker.
        while True:
            key = self.string(self.u16())
            if key == "" and self.data[self.pos : self.pos + 1] == bytes((OBJECT_END,)):
                self.pos += 1
                return out
            out[key] = self.value(depth)


def encode(*values: Any) -> bytes:
    """Encode values in order; raise LocalProtocolError for a value AMF0 cannot carry."""
    out = bytearray()
    for value in values:
        _encode_into(out, value, 0)
    return bytes(out)


def _encode_str_body(out: bytearray, text: str) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"string is not encodable as UTF-8: {exc}") from exc
    if len(raw) > 0xFFFF:
        raise LocalProtocolError("object key longer than 65535 bytes")
    out += _U16.pack(len(raw)) + raw


def _encode_properties(out: bytearray, values: dict[Any, Any], depth: int) -> None:
    for key, item in values.items():
        if not isinstance(key, str):
            raise LocalProtocolError(f"AMF0 object keys must be str, not {type(key).__name__}")
        _encode_str_body(out, key)
        _encode_into(out, item, depth)
    out += b"\x00\x00" + bytes((OBJECT_END,))


def _encode_into(out: bytearray, value: Any, depth: int) -> None:
    if depth > _HARD_MAX_DEPTH:
        raise LocalProtocolError("value nests too deeply for AMF0")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError as exc:
            raise LocalProtocolError(f"integer {value} does not fit an AMF0 number") from exc
        out.append(NUMBER)
        out += _DOUBLE.pack(number)
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"string is not encodable as UTF-8: {exc}") from exc
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value, depth + 1)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value, depth + 1)
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _encode_str_body(out, value.class_name)
        _encode_properties(out, value.values, depth + 1)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    elif isinstance(value, Date):
        if not -32768 <= value.timezone <= 32767:
            raise LocalProtocolError("AMF0 date time zone must fit 16 bits")
        out.append(DATE)
        out += _DOUBLE.pack(value.milliseconds) + _DATE_TZ.pack(value.timezone)
    else:
        raise LocalProtocolError(f"cannot encode {type(value).__name__} as AMF0")
