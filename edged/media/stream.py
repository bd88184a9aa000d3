"""One live stream: the publisher writes, readers each get a bounded queue.

`publish()` never waits for a reader. A reader whose queue is full loses packets until the next
video keyframe (it resumes at a decodable point), and the loss is counted (MediaMTX
`stream/reader.go` does the same for slow readers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edged import metrics
from edged.media.packet import CodecConfig, MediaPacket

log = logging.getLogger(__name__)

DEFAULT_READER_QUEUE = 2048  # packets: ~30 s of 30 fps video plus audio
_DROP_LOG_INTERVAL = 10.0  # seconds between "reader too slow" warnings


class Reader:
    """A consumer's view of a Stream; loop-only."""

    __slots__ = ("name", "_queue", "_stream", "_waiting_key", "dropped", "_last_log", "_closed")

    def __init__(self, stream: Stream, name: str, maxsize: int) -> None:
        self.name = name
        self._stream = stream
        self._queue: asyncio.Queue[MediaPacket | None] = asyncio.Queue(maxsize)
        self._waiting_key = True  # a reader starts at a keyframe
        self.dropped = 0
        self._last_log = 0.0
        self._closed = False

    def _offer(self, packet: MediaPacket) -> None:
        if self._waiting_key:
            if not (packet.kind == "video" and packet.keyframe) and self._stream.has_video:
                return
            self._waiting_key = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self._waiting_key = True
            self._drop(1)

    def _drop(self, n: int) -> None:
        self.dropped += n
        metrics.STREAM_DROPPED.labels(reader=self.name).inc(n)
        now = time.monotonic()
        if now - self._last_log > _DROP_LOG_INTERVAL:
            self._last_log = now
            log.warning("channel=%s reader=%s is too slow, dropped %d packets so far; resuming at next keyframe",
                        self._stream.channel, self.name, self.dropped)

    def _end(self) -> None:
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # make room for the end marker

    async def get(self) -> MediaPacket | None:
        """Next packet, or None once the stream has ended."""
        return await self._queue.get()

    def get_nowait(self) -> MediaPacket | None:
        return self._queue.get_nowait()

    def resync(self) -> None:
        """Discard what is queued and resume at the next keyframe (a new consumer took over)."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # keep the end marker
                self._queue.put_nowait(None)
                return
        self._waiting_key = True

    def qsize(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._stream.remove_reader(self)


class Stream:
    """Fan-out of one publisher's packets to any number of readers."""

    def __init__(self, channel: str, source: str, session_id: int) -> None:
        self.channel = channel
        self.source = source  # "rtmp" or "srt": for logs and metrics only
        self.session_id = session_id
        self.has_video = True  # until the publisher proves it sends no video
        self.video_config: CodecConfig | None = None
        self.audio_config: CodecConfig | None = None
        self.ended = False
        # How it ended: True for a deliberate unpublish (RTMP FCUnpublish/deleteStream, an SRT
        # close); False for a lost publisher (its link dropped, it was killed, the daemon stops),
        # whose playlist stays open for hls.reconnect_grace_seconds.
        self.ended_deliberately = False
        self.started = time.monotonic()
        self.bytes_in = 0
        self._readers: list[Reader] = []
        # Set by the ingest connection that publishes: ends that connection (e.g. key revoked).
        self.on_kick: Callable[[str], None] | None = None

    def add_reader(self, name: str, maxsize: int = DEFAULT_READER_QUEUE) -> Reader:
        reader = Reader(self, name, maxsize)
        if self.ended:
            reader._end()
        self._readers.append(reader)
        return reader

    def remove_reader(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)

    def publish(self, packet: MediaPacket) -> None:
        """Hand a packet to every reader; never blocks."""
        if self.ended:
            return
        if packet.kind == "video":
            self.video_config = packet.config
        else:
            self.audio_config = packet.config
        self.bytes_in += len(packet.data)
        for reader in self._readers:
            reader._offer(packet)

    def set_audio_only(self) -> None:
        """The publisher declared no video track: readers need not wait for a video keyframe."""
        self.has_video = False

    def kick(self, reason: str) -> bool:
        """Ask the publisher's connection to end; False if no connection is attached."""
        if self.on_kick is None or self.ended:
            return False
        self.on_kick(reason)
        return True

    def end(self, deliberate: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        self.ended_deliberately = deliberate
        for reader in self._readers:
            reader._end()
