"""Runs one pipeline worker process per live channel and keeps it fed.

The pump reads the channel's Stream through its own bounded reader and writes framed packets to
the worker's stdin. A worker that is slow makes `drain()` wait, the reader's queue fills and drops
to the next keyframe: the publisher never waits. A worker that dies while the stream is live is
restarted with exponential backoff (its next segment is marked as a discontinuity).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from edged import metrics
from edged.config import Config
from edged.media.hub import StreamHub
from edged.media.stream import Reader, Stream
from edged.media.transcode.wire import WireEncoder
from edged.media.transcode.worker import WorkerSpec

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5  # s
BACKOFF_MAX = 10.0  # s
STOP_GRACE = 5.0  # s a worker gets to flush its last segment


class PipelineSupervisor:
    """Owns the worker processes; start()/stop() from the app."""

    def __init__(self, cfg: Config, hub: StreamHub, store_path: str,
                 on_report: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.hub = hub
        self.store_path = store_path
        self.on_report = on_report
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def start(self) -> None:
        self.hub.add_listener(self._on_stream_start)

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _on_stream_start(self, stream: Stream) -> None:
        if self._stopping:
            return
        reader = stream.add_reader("pipeline")
        prev = self._tasks.get(stream.channel)
        task = asyncio.get_running_loop().create_task(self._run(stream, reader, prev), name=f"pipeline:{stream.channel}")
        self._tasks[stream.channel] = task
        task.add_done_callback(lambda t, ch=stream.channel: self._tasks.pop(ch, None) if self._tasks.get(ch) is t else None)

    def _spec(self, stream: Stream) -> WorkerSpec:
        return WorkerSpec(
            channel=stream.channel, store_path=self.store_path, store_max_bytes=self.cfg.store.max_bytes,
            segment_seconds=self.cfg.hls.segment_seconds, max_segment_seconds=self.cfg.hls.max_segment_seconds,
            keep_segments=self.cfg.hls.window + self.cfg.store.retention_segments, session=stream.session_id,
        )

    async def _run(self, stream: Stream, reader: Reader, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:  # the previous session's worker must finish its last segment first
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(prev), STOP_GRACE * 2)
        backoff = BACKOFF_INITIAL
        try:
            while True:
                ended_cleanly = await self._run_worker(stream, reader)
                if ended_cleanly or stream.ended:
                    return
                metrics.WORKER_FAILURES.inc()
                log.warning("channel=%s pipeline worker failed; restarting in %.1fs", stream.channel, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                metrics.WORKER_RESTARTS.inc()
                reader.resync()
        finally:
            reader.close()

    async def _run_worker(self, stream: Stream, reader: Reader) -> bool:
        """Run one worker process until the stream ends (True) or the worker dies (False)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edged.media.transcode.worker", self._spec(stream).to_arg(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        metrics.WORKERS.inc()
        assert proc.stdin is not None and proc.stdout is not None
        reports = asyncio.get_running_loop().create_task(self._read_reports(stream.channel, proc.stdout))
        encoder = WireEncoder()
        clean = False
        try:
            while True:
                get = asyncio.ensure_future(reader.get())
                done, _ = await asyncio.wait({get, reports}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:  # the worker closed stdout: it died
                    get.cancel()
                    break
                pkt = get.result()
                if pkt is None:
                    proc.stdin.write(encoder.end())
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
                    proc.stdin.close()
                    clean = True
                    break
                proc.stdin.write(encoder.packet(pkt))
                await proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            clean = False
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                proc.stdin.write(encoder.end())
                proc.stdin.close()
            await self._reap(proc)
            raise
        finally:
            metrics.WORKERS.dec()
        rc = await self._reap(proc)
        reports.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reports
        if rc != 0:
            log.error("channel=%s pipeline worker exited with status %s", stream.channel, rc)
            return False
        return clean

    async def _reap(self, proc: asyncio.subprocess.Process) -> int:
        try:
            return await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            proc.kill()
            return await proc.wait()

    async def _read_reports(self, channel: str, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            try:
                rep = json.loads(line)
            except ValueError:
                continue
            if rep.get("event") == "segment":
                rendition = rep["rendition"]
                metrics.SEGMENTS_WRITTEN.labels(rendition=rendition).inc()
                metrics.SEGMENT_BYTES.labels(rendition=rendition).inc(rep["bytes"])
                if rep.get("latency") is not None and rendition == "source":
                    metrics.INGEST_TO_PLAYLIST.observe(rep["latency"])
                if rep.get("evicted"):
                    metrics.STORE_EVICTED.inc(rep["evicted"])
            if self.on_report is not None:
                self.on_report(channel, rep)
