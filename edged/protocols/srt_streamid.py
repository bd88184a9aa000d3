"""SRT stream IDs (SRTO_STREAMID) → the publisher's stream key. Sans-IO: no sockets, no clocks.

Two forms are accepted:
- plain: the whole stream ID is the key (`srt://host:9000?streamid=KEY`);
- SRT Access Control (Haivision SRT docs, features/access-control.md): `#!::r=KEY,m=publish,...`,
  comma-separated `name=value` pairs. `r` (resource) carries the key; `m` is the mode.

The access-control spec makes `m` default to `request`; this listener only ingests, and callers
that write `#!::r=KEY` without a mode exist in the wild, so a missing `m` is read as `publish`.
An explicit `m=request` or `m=bidirectional` is refused (we never send media to a caller).
Rejections carry an SRT reject code (access-control.md "Standard Reject Codes", 1000 + HTTP-like
status) that the server hands to `srt_setrejectreason`, so the caller sees why.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from dataclasses import dataclass

from edged.errors import RemoteProtocolError

MAX_STREAMID_BYTES = 512  # SRTO_STREAMID is limited to 512 bytes by libsrt (srt.h, API docs)
ACCESS_CONTROL_PREFIX = "#!::"
_NESTED_PREFIX = "#!:"  # `#!:{...}` nesting is reserved by the spec; we do not support it

# Stream keys: the same alphabet as edged.config (`channels` keys), kept here so the core imports
# nothing but errors.
_KEY_RE = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")  # access-control key names: u, r, m, x_custom...
MAX_FIELDS = 16  # more name=value pairs than any real caller sends; a cap keeps parsing cheap

# SRT access-control reject codes (SRT_REJC_PREDEFINED + HTTP-like status), access-control.md.
REJ_BAD_REQUEST = 1400  # malformed stream ID
REJ_UNAUTHORIZED = 1401  # credentials missing
REJ_FORBIDDEN = 1403  # key unknown or refused
REJ_NOT_FOUND = 1404  # resource does not exist
REJ_BAD_MODE = 1405  # mode not supported (m=request on an ingest-only listener)
REJ_CONFLICT = 1409  # the channel already has a publisher
REJ_OVERLOAD = 1503  # server cannot take more publishers (SRT_REJX_OVERLOAD)


class Mode(enum.Enum):
    """The `m=` field of an access-control stream ID."""

    REQUEST = "request"
    PUBLISH = "publish"
    BIDIRECTIONAL = "bidirectional"


class StreamIdError(RemoteProtocolError):
    """A stream ID we refuse; `reject_code` is the SRT reject reason to send back."""

    def __init__(self, message: str, reject_code: int = REJ_BAD_REQUEST) -> None:
        super().__init__(message, reply_hint=str(reject_code))
        self.reject_code = reject_code


@dataclass(frozen=True, slots=True)
class StreamId:
    """A parsed stream ID. `fields` holds every access-control pair (empty for the plain form)."""

    key: str
    mode: Mode
    user: str = ""
    host: str = ""
    session: str = ""
    fields: tuple[tuple[str, str], ...] = ()


def parse_streamid(raw: str | bytes) -> StreamId:
    """Parse either form; raises StreamIdError (a RemoteProtocolError) for anything malformed."""
    if isinstance(raw, bytes | bytearray):
        if len(raw) > MAX_STREAMID_BYTES:
            raise StreamIdError("stream ID longer than 512 bytes")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise StreamIdError("stream ID is not UTF-8") from None
    elif isinstance(raw, str):
        text = raw
        if len(text.encode("utf-8", "surrogatepass")) > MAX_STREAMID_BYTES:
            raise StreamIdError("stream ID longer than 512 bytes")
    else:
        raise StreamIdError(f"stream ID must be str or bytes, not {type(raw).__name__}")
    if "%" in text:
        # Some callers percent-encode the stream ID (`streamid=%23%21%3A%3Ar%3D...`) and some tools
        # (ffmpeg 5.1, srt-live-transmit) pass it on verbatim. '%' is in no valid key, so decode once.
        try:
            text = urllib.parse.unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise StreamIdError("percent-encoded stream ID is not UTF-8") from None
    if not text:
        raise StreamIdError("empty stream ID: set streamid=KEY", REJ_UNAUTHORIZED)
    if text.startswith(ACCESS_CONTROL_PREFIX):
        return _parse_access_control(text[len(ACCESS_CONTROL_PREFIX) :])
    if text.startswith(_NESTED_PREFIX):
        raise StreamIdError("nested access-control stream IDs (#!:{...}) are not supported")
    if not _KEY_RE.fullmatch(text):
        raise StreamIdError(
            "stream ID is not a valid stream key (1-128 of A-Z a-z 0-9 _ . ~ -)", REJ_FORBIDDEN
        )
    return StreamId(key=text, mode=Mode.PUBLISH)


def _parse_access_control(body: str) -> StreamId:
    if not body:
        raise StreamIdError("access-control stream ID has no fields")
    items = body.split(",")
    if len(items) > MAX_FIELDS:
        raise StreamIdError(f"access-control stream ID has more than {MAX_FIELDS} fields")
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise StreamIdError(f"access-control field without '=': {item[:32]!r}")
        if not _NAME_RE.fullmatch(name):
            raise StreamIdError(f"invalid access-control field name {name[:32]!r}")
        if name in seen:
            raise StreamIdError(f"access-control field {name!r} given twice")
        seen.add(name)
        fields.append((name, value))
    values = dict(fields)
    mode_s = values.get("m", Mode.PUBLISH.value)
    try:
        mode = Mode(mode_s)
    except ValueError:
        raise StreamIdError(f"unknown access-control mode m={mode_s[:32]!r}", REJ_BAD_MODE) from None
    ctype = values.get("t", "stream")
    if ctype != "stream":
        raise StreamIdError(
            f"connection type t={ctype[:32]!r} is not supported (only t=stream)", REJ_BAD_MODE
        )
    key = values.get("r", "")
    if not key:
        raise StreamIdError("access-control stream ID has no r= (the stream key)", REJ_UNAUTHORIZED)
    if not _KEY_RE.fullmatch(key):
        raise StreamIdError("r= is not a valid stream key (1-128 of A-Z a-z 0-9 _ . ~ -)", REJ_FORBIDDEN)
    return StreamId(
        key=key,
        mode=mode,
        user=values.get("u", ""),
        host=values.get("h", ""),
        session=values.get("s", ""),
        fields=tuple(fields),
    )


def publish_key(raw: str | bytes) -> str:
    """The stream key of a caller that wants to publish; refuses any other mode (REJ_BAD_MODE)."""
    sid = parse_streamid(raw)
    if sid.mode is not Mode.PUBLISH:
        raise StreamIdError(
            f"mode m={sid.mode.value} refused: this listener only accepts publishers", REJ_BAD_MODE
        )
    return sid.key
