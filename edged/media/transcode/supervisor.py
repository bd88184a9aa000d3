"""Runs one pipeline worker process per live channel, keeps it fed, and admits its transcode.

The pump reads the channel's Stream through its own bounded reader and writes framed packets to
the worker's stdin. A worker that is slow makes `drain()` wait, the reader's queue fills and drops
to the next keyframe: the publisher never waits. A worker that dies while the stream is live is
restarted with exponential backoff (its next segment is marked as a discontinuity); a worker that
had run for HEALTHY_RUN seconds before it died starts the backoff over, so rare crashes over a long
stream cost half a second each while a crash loop still backs off. When the stream ends, the END
frame tells the worker whether the publisher left deliberately (the playlist may end at once) or
was lost (it stays open for hls.reconnect_grace_seconds).

Transcoding: at start the encoder is detected in a child process (NVML and a trial NVENC open can
stall or crash in a broken driver; never in the daemon, never on the loop). Each new stream is
admitted to the ABR ladder while the node has capacity (transcode.max_transcodes, or the estimate
for the detected encoder); a stream that finds the node at capacity is served as passthrough only.
`transcode.enabled = "auto"` (the default) turns the ladder on where the node can take it, that is
where NVENC does the encoding; on CPU-only nodes libx264 ladders would compete with ingest and
serving for the same cores, so there they are opt-in (`--transcode`, `transcode.enabled = true`).
Under an origin controller (`placement`), the controller's decision for the stream comes first: a
passthrough placement is obeyed as it is; a transcode placement still needs the local capacity (the
node's own guard against a decision made on a report a heartbeat old). The controller's answer also
carries the channel's fleet-wide numbering (`numbering`), which the worker continues from; each commit
that raises a channel's numbers goes to `on_numbering` (the agent tells the controller).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edged import metrics
from edged.config import Config
from edged.media.hub import StreamHub
from edged.media.stream import Reader, Stream
from edged.media.transcode import encoders
from edged.media.transcode import metrics as tmetrics
from edged.media.transcode.encoders import EncoderChoice
from edged.media.transcode.wire import WireEncoder
from edged.media.transcode.worker import WorkerSpec

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5  # s
BACKOFF_MAX = 10.0  # s
HEALTHY_RUN = 30.0  # s: a worker that ran this long before it died restarts after BACKOFF_INITIAL again
STOP_GRACE = 5.0  # s a worker gets to flush its last segment
PROBE_TIMEOUT = 30.0  # s for the encoder probe (NVML + one NVENC frame)


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a stream got the ladder, and why."""

    transcode: bool
    reason: str
    by_controller: bool = False


class RestartBackoff:
    """Delay before restarting a failed worker: doubles per consecutive failure up to `maximum`,
    and starts over at `initial` after a run of at least `healthy` seconds."""

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX,
                 healthy: float = HEALTHY_RUN) -> None:
        self.initial = initial
        self.maximum = maximum
        self.healthy = healthy
        self._next = initial

    def after_failure(self, ran_for: float) -> float:
        """Seconds to wait before restarting a worker that failed after running `ran_for` seconds."""
        if ran_for >= self.healthy:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


# channel → (mode "transcode" | "passthrough", reason) decided by the controller, or None
PlacementSource = Callable[[str], "tuple[str, str] | None"]
# channel → (next sequence number, discontinuity count) fleet-wide, as the controller answered the publish, or None
NumberingSource = Callable[[str], "tuple[int, int] | None"]


class PipelineSupervisor:
    """Owns the worker processes; start()/stop() from the app."""

    def __init__(self, cfg: Config, hub: StreamHub, store_path: str,
                 on_report: Callable[[str, dict[str, Any]], None] | None = None, *,
                 placement: PlacementSource | None = None,
                 on_admit: Callable[[Stream, Admission], None] | None = None,
                 numbering: NumberingSource | None = None,
                 on_numbering: Callable[[str, int, int], None] | None = None) -> None:
        self.cfg = cfg
        self.hub = hub
        self.store_path = store_path
        self.on_report = on_report
        self.placement = placement
        self.on_admit = on_admit
        self.numbering = numbering  # the fleet's numbering for a stream now starting (with a controller)
        self.on_numbering = on_numbering  # (channel, next seq, disc seq) after each commit that raised them
        self._fleet: dict[str, tuple[int, int]] = {}  # channel → the fleet numbering its current session starts at
        self._committed: dict[str, tuple[int, int]] = {}  # channel → (next seq, disc seq) after its last commit
        self.admissions: dict[str, Admission] = {}  # the last decision per channel
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self.encoder: EncoderChoice | None = None
        self.transcode_on = False
        self.capacity = 0
        self._detecting: asyncio.Task[None] | None = None
        self._transcoding: set[str] = set()

    async def start(self) -> None:
        self.hub.add_listener(self._on_stream_start)
        if self.cfg.transcode.enabled is False:
            tmetrics.set_encoder("none", encoders.R_DISABLED)
            tmetrics.CAPACITY.set(0)
            log.info("transcoding disabled by configuration: passthrough only")
        else:
            self._detecting = asyncio.get_running_loop().create_task(self._detect(), name="encoder-probe")

    async def _probe(self) -> EncoderChoice:
        pref = self.cfg.transcode.encoder
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edged.media.transcode.encoders", "--encoder", pref,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return EncoderChoice(encoders.X264, f"libx264: the encoder probe hung for {PROBE_TIMEOUT:g}s",
                                 encoders.R_OPEN_FAILED)
        except asyncio.CancelledError:  # the daemon stops while probing: leave no child behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        try:
            return EncoderChoice.from_json(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError, TypeError, KeyError):
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return EncoderChoice(encoders.X264, f"libx264: the encoder probe failed ({tail[0]})",
                                 encoders.R_OPEN_FAILED)

    async def _detect(self) -> None:
        tc = self.cfg.transcode
        choice = await self._probe()
        self.encoder = choice
        tmetrics.set_encoder(choice.codec, choice.reason_code)
        log.info("transcode encoder: %s (%s)", choice.codec, choice.reason)
        capacity, how = encoders.estimate_capacity(choice)
        if tc.max_transcodes > 0:
            capacity, how = tc.max_transcodes, "transcode.max_transcodes"
        on = True
        if tc.encoder == "nvenc" and choice.codec != encoders.NVENC:
            log.error("transcode.encoder = nvenc but NVENC is not usable here (%s): passthrough only", choice.reason)
            on = False
        elif tc.enabled == "auto" and choice.codec != encoders.NVENC:
            log.info("transcoding off by default without NVENC: libx264 ladders would take the cores ingest and "
                     "serving need (%s: about %d ladder(s) here); turn it on with --transcode or "
                     "transcode.enabled = true", how, capacity)
            on = False
        self.transcode_on = on
        self.capacity = capacity if on else 0
        tmetrics.CAPACITY.set(self.capacity)
        if on:
            log.info("transcoding on: up to %d concurrent ladder(s) (%s)", capacity, how)

    def transcodes(self) -> int:
        """Channels whose ABR ladder runs now."""
        return len(self._transcoding)

    def ladder_names(self) -> tuple[str, ...]:
        """The configured rungs (each stream drops those at or above its source)."""
        return tuple(r.name for r in self.cfg.transcode.ladder)

    async def _admit(self, channel: str) -> bool:
        """Whether this stream gets the ladder; holds one unit of capacity until `_release`."""
        if self._detecting is not None and not self._detecting.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._detecting)
        order = self.placement(channel) if self.placement is not None else None
        if order is not None and order[0] != "transcode":
            log.info("channel=%s passthrough only, as the controller placed it: %s", channel, order[1])
            self.admissions[channel] = Admission(False, order[1], by_controller=True)
            return False
        if not self.transcode_on or self.encoder is None:
            why = self.encoder.reason if self.encoder is not None else "no encoder detected"
            self.admissions[channel] = Admission(False, f"transcoding is off on this node ({why})")
            return False
        if len(self._transcoding) >= self.capacity:
            tmetrics.REFUSED.inc()
            log.warning("channel=%s transcode refused: node at capacity (%d of %d ladders); serving passthrough only",
                        channel, len(self._transcoding), self.capacity)
            self.admissions[channel] = Admission(
                False, f"node at capacity ({len(self._transcoding)} of {self.capacity} ladders)")
            return False
        self._transcoding.add(channel)
        tmetrics.ACTIVE.set(len(self._transcoding))
        if order is not None:
            self.admissions[channel] = Admission(True, order[1], by_controller=True)
        else:
            self.admissions[channel] = Admission(True, f"{self.encoder.kind}: ladder {len(self._transcoding)} of "
                                                       f"{self.capacity} on this node")
        return True

    def _release(self, channel: str) -> None:
        self._transcoding.discard(channel)
        tmetrics.ACTIVE.set(len(self._transcoding))
        tmetrics.channel_ended(channel)

    async def stop(self) -> None:
        self._stopping = True
        if self._detecting is not None and not self._detecting.done():
            self._detecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._detecting
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
        channel = stream.channel

        def forget(t: asyncio.Task[None]) -> None:
            if self._tasks.get(channel) is t:
                self._tasks.pop(channel, None)

        task.add_done_callback(forget)

    def _spec(self, stream: Stream, transcode: bool = False) -> WorkerSpec:
        ladder = tuple(asdict(r) for r in self.cfg.transcode.ladder) if transcode and self.encoder else ()
        return WorkerSpec(
            channel=stream.channel, store_path=self.store_path, store_max_bytes=self.cfg.store.max_bytes,
            segment_seconds=self.cfg.hls.segment_seconds,
            max_segment_seconds=self.cfg.hls.effective_max_segment_seconds,
            keep_segments=self.cfg.hls.window + self.cfg.store.retention_segments, session=stream.session_id,
            ladder=ladder, encoder=self.encoder.codec if ladder and self.encoder else "",
            hw_decode=bool(ladder and self.encoder and self.encoder.gpus),
            fleet_next_seq=self._fleet.get(stream.channel, (0, 0))[0],
            fleet_disc_seq=self._fleet.get(stream.channel, (0, 0))[1],
            window=self.cfg.hls.window, reconnect_grace=self.cfg.hls.reconnect_grace_seconds,
            fmt=self.cfg.hls.format, part_seconds=self.cfg.hls.part_seconds,
        )

    async def _run(self, stream: Stream, reader: Reader, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:  # the previous session's worker must finish its last segment first
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(prev), STOP_GRACE * 2)
        backoff = RestartBackoff()
        transcode = await self._admit(stream.channel)
        fleet = self.numbering(stream.channel) if self.numbering is not None else None
        if fleet is not None:
            self._fleet[stream.channel] = fleet
        else:
            self._fleet.pop(stream.channel, None)
        if self.on_admit is not None and not stream.ended:
            try:
                self.on_admit(stream, self.admissions.get(stream.channel, Admission(transcode, "")))
            except Exception:  # reporting must not stop the pipeline
                log.exception("channel=%s admission callback failed", stream.channel)
        try:
            while True:
                started = time.monotonic()
                ended_cleanly = await self._run_worker(stream, reader, transcode)
                if ended_cleanly or stream.ended:
                    return
                ran_for = time.monotonic() - started
                delay = backoff.after_failure(ran_for)
                metrics.WORKER_FAILURES.inc()
                log.warning("channel=%s pipeline worker failed after %.1fs; restarting in %.1fs", stream.channel,
                            ran_for, delay)
                await asyncio.sleep(delay)
                metrics.WORKER_RESTARTS.inc()
                reader.resync()
        finally:
            reader.close()
            if transcode:
                self._release(stream.channel)
            if self._tasks.get(stream.channel) is asyncio.current_task():
                self._committed.pop(stream.channel, None)

    async def _run_worker(self, stream: Stream, reader: Reader, transcode: bool = False) -> bool:
        """Run one worker process until the stream ends (True) or the worker dies (False)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edged.media.transcode.worker", self._spec(stream, transcode).to_arg(),
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
                    proc.stdin.write(encoder.end(deliberate=stream.ended_deliberately))
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
        if self.on_report is not None:  # the worker's last channel-record write (the stream's end) is in now
            try:
                self.on_report(stream.channel, {"event": "exited", "rc": rc})
            except Exception:
                log.exception("channel=%s report callback failed", stream.channel)
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
                if rep.get("forced"):
                    metrics.HLS_FORCED_CUTS.labels(rendition=rendition).inc()
                if rep.get("over_target"):
                    metrics.HLS_OVER_TARGET.labels(rendition=rendition).inc()
                self._numbered(channel, rep)
            elif rep.get("event") == "part":
                metrics.PARTS_WRITTEN.labels(rendition=rep["rendition"]).inc()
                if rep.get("latency") is not None and rep["rendition"] == "source":
                    metrics.INGEST_TO_PART.observe(rep["latency"])
                # a part listed of segment N consumes N fleet-wide: an ingest that moves mid-segment goes on
                # from N + 1 (edges may hold N's parts already)
                self._numbered(channel, rep)
            else:
                self._transcode_report(channel, rep)
            if self.on_report is not None:
                self.on_report(channel, rep)

    def _numbered(self, channel: str, rep: dict[str, Any]) -> None:
        """A segment commit: tell `on_numbering` when the channel's next sequence or discontinuity count rose."""
        try:
            now = (int(rep["seq"]) + 1, int(rep.get("disc_seq", 0)))
        except (KeyError, TypeError, ValueError):
            return
        old = self._committed.get(channel, (0, 0))
        new = (max(old[0], now[0]), max(old[1], now[1]))
        if new == old:
            return
        self._committed[channel] = new
        if self.on_numbering is not None:
            try:
                self.on_numbering(channel, *new)
            except Exception:  # reporting must not stop the pipeline
                log.exception("channel=%s numbering callback failed", channel)

    def _transcode_report(self, channel: str, rep: dict[str, Any]) -> None:
        event = rep.get("event")
        if event == "shed":
            tmetrics.SHED.labels(rendition=rep["rendition"]).inc()
            tmetrics.RUNGS_SHED.labels(channel=channel).set(rep.get("shed", 0))
        elif event == "restore":
            tmetrics.RESTORED.labels(rendition=rep["rendition"]).inc()
            tmetrics.RUNGS_SHED.labels(channel=channel).set(rep.get("shed", 0))
        elif event == "backlog":
            tmetrics.BACKLOG.labels(channel=channel).set(rep.get("seconds", 0))
            tmetrics.RUNGS_SHED.labels(channel=channel).set(rep.get("shed", 0))
        elif event == "rendition_error":
            tmetrics.RENDITION_ERRORS.labels(rendition=rep["rendition"]).inc()
