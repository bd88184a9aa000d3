"""Events the RTMP session cores emit: frozen, slotted dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Event:
    """Base class of every RTMP session event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The peer's connect succeeded (section 7.2.1.1); server: already answered."""

    app: str
    tc_url: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequested(Event):
    """The client asked to publish; the server must call accept_publish or reject_publish."""

    stream_id: int
    app: str
    stream_key: str  # publishing name up to the first '?'
    publish_type: str  # "live", "record" or "append" (section 7.2.2.6)
    query: str = ""  # what followed '?' in the publishing name, without the '?'


@dataclass(frozen=True, slots=True)
class Metadata(Event):
    """onMetaData, sent directly or through @setDataFrame."""

    stream_id: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioData(Event):
    """One audio message (type 8): an FLV audio tag body."""

    stream_id: int
    timestamp: int  # ms, unwrapped past 2**32
    data: bytes


@dataclass(frozen=True, slots=True)
class VideoData(Event):
    """One video message (type 9): an FLV video tag body."""

    stream_id: int
    timestamp: int  # ms, unwrapped past 2**32
    data: bytes


@dataclass(frozen=True, slots=True)
class Unpublished(Event):
    """The publisher stopped (FCUnpublish, closeStream or deleteStream)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed the connection (EOF was fed)."""


@dataclass(frozen=True, slots=True)
class PublishAccepted(Event):
    """Client: the server answered NetStream.Publish.Start; media may flow."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRejected(Event):
    """Client: the server refused the connection or the publish."""

    code: str
    description: str
