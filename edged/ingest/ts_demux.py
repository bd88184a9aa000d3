"""MPEG-TS bytes (as an SRT publisher sends them) → normalized MediaPackets.

Three parts:
- `BytePipe`: a bounded, thread-safe byte FIFO. The SRT epoll thread writes; PyAV reads it as a
  file-like object (`read(n)` blocks until data or EOF).
- `TsNormalizer`: pure; turns demuxed access units into the normal form of edged.media.packet
  (Annex B with in-band parameter sets before every keyframe, AUDs removed; raw AAC without
  ADTS headers, AudioSpecificConfig in CodecConfig.extradata), time base 1/90000.
- `TsDemuxer`: one thread per publisher running `av.open(pipe, format="mpegts")` and handing
  batches of packets to a callback (the server forwards them to the loop with
  call_soon_threadsafe). PyAV's demux blocks on `read`, so it can never run on the event loop.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction

from edged.errors import RemoteProtocolError
from edged.media.packet import MPEGTS_TIME_BASE, CodecConfig, MediaPacket
from edged.protocols import aac, h264

log = logging.getLogger(__name__)

DEFAULT_PIPE_BYTES = 16 * 1024 * 1024  # ~20 s of a 6 Mb/s stream: only a stalled demuxer fills it
_HEVC_IRAP = range(16, 24)  # BLA/IDR/CRA NAL unit types, H.265 table 7-1
# FFmpeg demuxer options: probe little, since we parse SPS/ADTS ourselves and want packets at once.
_AV_OPTIONS = {"probesize": "65536", "analyzeduration": "500000"}
SUPPORTED_CODECS = ("h264", "hevc", "aac")


class BytePipe:
    """Bounded byte FIFO between one writer thread and one reader thread."""

    def __init__(self, max_bytes: int = DEFAULT_PIPE_BYTES) -> None:
        self._chunks: collections.deque[tuple[bytes, float]] = collections.deque()
        self._size = 0
        self._max = max_bytes
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self.last_arrival = 0.0  # monotonic arrival time of the newest chunk handed to the reader

    def write(self, data: bytes, arrival: float) -> bool:
        """Queue `data`; False (nothing queued) when the reader is too far behind or closed."""
        with self._cond:
            if self._closed or self._size + len(data) > self._max:
                return False
            self._chunks.append((data, arrival))
            self._size += len(data)
            self._cond.notify()
            return True

    def close(self) -> None:
        """End of stream: the reader gets what is queued, then b''."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Drop what is queued and end the stream now."""
        with self._cond:
            self._chunks.clear()
            self._size = 0
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes; blocks until some are queued; b'' once closed and drained."""
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                return b""
            limit = n if n > 0 else self._size
            out: list[bytes] = []
            got = 0
            while self._chunks and got < limit:
                data, arrival = self._chunks[0]
                take = limit - got
                if len(data) > take:
                    out.append(data[:take])
                    self._chunks[0] = (data[take:], arrival)
                    got += take
                else:
                    out.append(data)
                    self._chunks.popleft()
                    got += len(data)
                self.last_arrival = arrival
            self._size -= got
            return b"".join(out)


class TsNormalizer:
    """Per-publisher codec state; `push` turns one demuxed access unit into normal-form packets."""

    def __init__(self) -> None:
        self.video_config: CodecConfig | None = None
        self.audio_config: CodecConfig | None = None
        self._param_sets: dict[int, list[bytes]] = {}  # NAL type → latest sets of that type
        self._video_codec = ""
        self._next_audio_pts: int | None = None
        self.dropped = 0  # access units we could not normalize (bad data or no config yet)

    def push(self, codec: str, pts: int | None, dts: int | None, keyframe: bool, data: bytes,
             arrival: float = 0.0) -> list[MediaPacket]:
        """Normal-form packets for one access unit (timestamps in 1/90000); [] if not usable."""
        if dts is None:
            dts = pts
        if pts is None:
            pts = dts
        if pts is None and codec == "aac":
            pts = dts = self._next_audio_pts  # a PES holding several ADTS frames stamps only the first
        if pts is None or dts is None or not data:
            self.dropped += 1
            return []
        try:
            if codec in ("h264", "hevc"):
                pkt = self._video(codec, pts, dts, keyframe, data, arrival)
                return [pkt] if pkt is not None else []
            if codec == "aac":
                return self._audio(pts, data, arrival)
        except RemoteProtocolError as exc:
            self.dropped += 1
            log.debug("dropping malformed %s access unit: %s", codec, exc)
            return []
        self.dropped += 1
        return []

    # -- video ----------------------------------------------------------------------------------
    def _video(self, codec: str, pts: int, dts: int, key: bool, data: bytes, arrival: float) -> MediaPacket | None:
        hevc = codec == "hevc"
        if codec != self._video_codec:
            self._video_codec = codec
            self._param_sets = {}
            self.video_config = None
        ps_types: tuple[int, ...]
        if hevc:
            nal_type, aud, ps_types = h264.hevc_nal_type, h264.HEVC_NAL_AUD, (
                h264.HEVC_NAL_VPS, h264.HEVC_NAL_SPS, h264.HEVC_NAL_PPS)
        else:
            nal_type, aud, ps_types = h264.avc_nal_type, h264.AVC_NAL_AUD, (h264.AVC_NAL_SPS, h264.AVC_NAL_PPS)
        nals: list[bytes] = []
        fresh: dict[int, list[bytes]] = {}
        idr = False
        for nal in h264.split_annexb(data):
            t = nal_type(nal)
            if t == aud:
                continue
            if t in ps_types:
                fresh.setdefault(t, []).append(nal)
            elif (t in _HEVC_IRAP) if hevc else (t == h264.AVC_NAL_IDR):
                idr = True
            nals.append(nal)
        if not nals:
            return None
        key = key or idr
        if fresh:
            merged = dict(self._param_sets)
            merged.update(fresh)
            if merged != self._param_sets or self.video_config is None:
                self._configure(hevc, merged, ps_types)
        if self.video_config is None:
            self.dropped += 1
            return None  # nothing decodes before the first parameter sets
        if key:  # normal form: every keyframe carries its parameter sets in-band
            missing = [ps for t in ps_types if t not in fresh for ps in self._param_sets.get(t, ())]
            if missing:
                nals = missing + nals
        return MediaPacket(kind="video", pts=pts, dts=dts, time_base=MPEGTS_TIME_BASE, keyframe=key,
                           data=h264.join_annexb(nals), config=self.video_config, arrival=arrival)

    def _configure(self, hevc: bool, sets: dict[int, list[bytes]], ps_types: tuple[int, ...]) -> None:
        if hevc:
            sps = sets.get(h264.HEVC_NAL_SPS)
            if not sps or not sets.get(h264.HEVC_NAL_PPS) or not sets.get(h264.HEVC_NAL_VPS):
                self._param_sets = sets  # wait for the full set (VPS, SPS, PPS)
                return
            hinfo = h264.parse_hevc_sps(sps[-1])
            codec, codec_string, w, h = "hevc", h264.hevc_codec_string(hinfo), hinfo.width, hinfo.height
        else:
            sps = sets.get(h264.AVC_NAL_SPS)
            if not sps or not sets.get(h264.AVC_NAL_PPS):
                self._param_sets = sets
                return
            info = h264.parse_avc_sps(sps[-1])
            codec, codec_string, w, h = "h264", h264.avc_codec_string(info), info.width, info.height
        self._param_sets = sets
        ordered = [ps for t in ps_types for ps in sets.get(t, ())]
        self.video_config = CodecConfig(kind="video", codec=codec, codec_string=codec_string,
                                        extradata=h264.join_annexb(ordered), width=w, height=h)

    # -- audio ----------------------------------------------------------------------------------
    def _audio(self, pts: int, data: bytes, arrival: float) -> list[MediaPacket]:
        out: list[MediaPacket] = []
        for i, frame in enumerate(aac.parse_adts(data)):
            cfg = frame.config
            cur = self.audio_config
            if cur is None or (cur.sample_rate, cur.channels) != (cfg.sample_rate, cfg.channels) \
                    or cur.codec_string != cfg.codec_string:
                self.audio_config = cur = CodecConfig(
                    kind="audio", codec="aac", codec_string=cfg.codec_string,
                    extradata=aac.make_asc(cfg.object_type, cfg.sample_rate, cfg.channels),
                    sample_rate=cfg.sample_rate, channels=cfg.channels)
            # several ADTS frames in one PES: each lasts 1024 samples (ISO/IEC 13818-7)
            t = pts + (i * aac.SAMPLES_PER_FRAME * 90000) // cfg.sample_rate
            out.append(MediaPacket(kind="audio", pts=t, dts=t, time_base=MPEGTS_TIME_BASE, keyframe=True,
                                   data=frame.payload, config=cur, arrival=arrival))
            self._next_audio_pts = t + (aac.SAMPLES_PER_FRAME * 90000 + cfg.sample_rate // 2) // cfg.sample_rate
        return out


Deliver = Callable[[list[MediaPacket]], None]
OnEnd = Callable[[str | None], None]


class TsDemuxer:
    """Runs PyAV's MPEG-TS demuxer over a BytePipe in its own thread."""

    def __init__(self, pipe: BytePipe, deliver: Deliver, on_end: OnEnd, name: str = "ts-demux") -> None:
        self._pipe = pipe
        self._deliver = deliver
        self._on_end = on_end
        self.normalizer = TsNormalizer()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.packets = 0
        self.first_packet_at = 0.0  # monotonic time of the first delivered packet

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """True once the thread has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        import av  # PyAV pulls in FFmpeg: imported on first use, off the loop

        reason: str | None = None
        container = None
        warned: set[str] = set()
        try:
            container = av.open(self._pipe, mode="r", format="mpegts", options=_AV_OPTIONS)
            for packet in container.demux():
                if packet.size == 0:
                    continue  # flush packets at EOF carry no data
                stream = packet.stream
                codec = stream.codec_context.name
                if codec not in SUPPORTED_CODECS:
                    if codec not in warned:
                        warned.add(codec)
                        log.warning("ignoring unsupported %s stream (codec %s) in MPEG-TS", stream.type, codec)
                    continue
                pts, dts = packet.pts, packet.dts
                tb = packet.time_base
                if tb is not None and tb != MPEGTS_TIME_BASE:
                    pts = _rescale(pts, tb)
                    dts = _rescale(dts, tb)
                out = self.normalizer.push(codec, pts, dts, bool(packet.is_keyframe), bytes(packet),
                                           self._pipe.last_arrival or time.monotonic())
                if out:
                    if not self.packets:
                        self.first_packet_at = time.monotonic()
                    self.packets += len(out)
                    self._deliver(out)
        except av.FFmpegError as exc:
            reason = f"MPEG-TS demux failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - report any demux bug as this stream's end reason
            log.exception("MPEG-TS demuxer crashed")
            reason = f"demuxer error: {exc!r}"
        finally:
            self._pipe.abort()
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001 - closing a half-open container must not mask the reason
                    pass
            self._on_end(reason)


def _rescale(v: int | None, tb: Fraction) -> int | None:
    return None if v is None else int(v * tb / MPEGTS_TIME_BASE)
