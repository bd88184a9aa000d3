"""Channel → live Stream, with exactly one publisher per channel."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable

from edged import metrics
from edged.errors import PublisherBusy
from edged.media.stream import Stream

log = logging.getLogger(__name__)

StreamListener = Callable[[Stream], None]


class StreamHub:
    """Owns the live streams; all methods run on the event loop."""

    def __init__(self) -> None:
        self._streams: dict[str, Stream] = {}
        self._on_start: list[StreamListener] = []
        self._on_end: list[StreamListener] = []
        self._ids = itertools.count(1)

    def add_listener(self, on_start: StreamListener, on_end: StreamListener | None = None) -> None:
        """Called synchronously when a publisher claims a channel (and when it releases it)."""
        self._on_start.append(on_start)
        if on_end is not None:
            self._on_end.append(on_end)

    def get(self, channel: str) -> Stream | None:
        return self._streams.get(channel)

    def live_channels(self) -> list[str]:
        return sorted(self._streams)

    def async_claim(self, channel: str, source: str) -> Stream:
        if channel in self._streams:
            raise PublisherBusy(f"channel {channel!r} already has a publisher")
        stream = Stream(channel, source, next(self._ids))
        self._streams[channel] = stream
        metrics.STREAMS_LIVE.labels(source=source).inc()
        log.info("channel=%s publisher claimed (source=%s)", channel, source)
        for cb in self._on_start:
            cb(stream)
        return stream

    def async_release(self, stream: Stream, deliberate: bool = False) -> None:
        """The publisher is gone: `deliberate` when it unpublished (its playlist may end at once),
        not when its connection was lost (the playlist waits hls.reconnect_grace_seconds for it)."""
        if self._streams.get(stream.channel) is not stream:
            return
        del self._streams[stream.channel]
        stream.end(deliberate)
        metrics.STREAMS_LIVE.labels(source=stream.source).dec()
        log.info("channel=%s publisher released (%s)", stream.channel, "unpublished" if deliberate else "lost")
        for cb in self._on_end:
            cb(stream)

    def async_kick(self, channel: str, reason: str) -> bool:
        """End the live publisher of `channel` (its connection closes with `reason`)."""
        stream = self._streams.get(channel)
        if stream is None:
            return False
        log.warning("channel=%s disconnecting the publisher: %s", channel, reason)
        return stream.kick(reason)

    @contextlib.asynccontextmanager
    async def claim_publisher(self, channel: str, source: str) -> AsyncIterator[Stream]:
        """Claim `channel` for one publisher; released on every exit path. Raises PublisherBusy."""
        stream = self.async_claim(channel, source)
        try:
            yield stream
        finally:
            self.async_release(stream)
