"""CMAF (fragmented MP4, ISO/IEC 23000-19 over ISO/IEC 14496-12/-15) writer for LL-HLS; sans-IO.

Turns the normal-form packets of ``edged.media.packet`` (Annex B H.264/HEVC with in-band
parameter sets, raw AAC access units) into an init segment and ``moof``+``mdat`` fragments that
can be cut at any sample boundary, on demand. Concatenating the init segment and the fragments
in order is a valid fragmented MP4.

API::

    tracks = [make_track(1, video_cfg, video_time_base), make_track(2, audio_cfg)]
    init = init_segment(tracks)            # ftyp (iso6, cmfc) + moov (mvhd, trak…, mvex/trex)
    frag = Fragmenter(tracks)
    frag.add(packet)                       # buffer one sample (routed by kind, or track_id=)
    part = frag.flush(seq, next_dts={1: next_video_packet.dts})   # Part: bytes + timing
    part.data                              # moof (mfhd, traf: tfhd, tfdt v1, trun v1) + mdat
    frag.flush_part(seq) -> bytes          # the same, bytes only

Timing. Video timescale is 90 kHz when the packet time base maps onto it exactly (RTMP's
1/1000 and MPEG-TS's 1/90000 do), else the time base's own denominator; audio timescale is
the sample rate. Sample durations come from the next sample's decode time; the last sample of
a flush uses ``next_dts`` (in that track's packet time base) if given, else the previous
duration (AAC: one frame, 1024 samples). AAC decode times run on a 1024-samples-per-frame counter anchored at the first
packet, so millisecond timestamps do not jitter the sample durations; the counter jumps to the
packet's own time only when the two differ by more than one frame (an ingest gap). Decode times
are kept strictly increasing (a repeated dts becomes previous + 1 tick). ``tfdt`` is the first
sample's decode time, so consecutive fragments are continuous; composition offsets are written
(trun version 1, signed) when any sample has pts != dts. Sync samples (keyframes, every AAC
frame) get flags 0x02000000, other video samples 0x01010000.

Sample data: video NAL units length-prefixed (4 bytes), AUD dropped, in-band SPS/PPS kept (so
a keyframe sample decodes alone, as in the normal form); AAC raw frames as they are.

Limits: the avcC record carries no High-profile chroma/bit-depth extension (decoders take these
from the SPS); hvcC's chroma_format_idc is 4:2:0 and bit depth 8 (10 for Main 10 profile), not
read from the SPS. No edit list: presentation starts at the first sample's pts. Decode times
must not be negative (rebase upstream). No encryption, no sidx/styp (HLS does not need them).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from edged.media.packet import CodecConfig, MediaPacket
from edged.protocols import h264
from edged.protocols.aac import SAMPLES_PER_FRAME
from edged.protocols.mp4box import UNITY_MATRIX, box, descriptor, full_box, u8, u16, u32, u64

VIDEO_TIMESCALE = 90000
FLAGS_SYNC = 0x02000000  # sample_depends_on = 2 (depends on no other sample)
FLAGS_NON_SYNC = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_MOOF_FIXED = 8 + 16  # moof header + mfhd
_TRAF_FIXED = 8 + 16 + 20 + 20  # traf header + tfhd + tfdt v1 + trun header with data offset


@dataclass(frozen=True, slots=True)
class Track:
    """One track of a CMAF stream: its ID in the file, codec config and media timescale."""

    track_id: int
    config: CodecConfig
    timescale: int


def make_track(track_id: int, config: CodecConfig, time_base: Fraction | None = None) -> Track:
    """A track with the timescale rules of the module docstring (``time_base``: video packets')."""
    if track_id < 1:
        raise ValueError("track IDs start at 1")
    if config.kind == "audio":
        if config.sample_rate <= 0:
            raise ValueError("audio config without a sample rate")
        return Track(track_id, config, config.sample_rate)
    if time_base is None or (time_base * VIDEO_TIMESCALE).denominator == 1:
        return Track(track_id, config, VIDEO_TIMESCALE)
    return Track(track_id, config, time_base.denominator)


# -- init segment ---------------------------------------------------------------------------


def init_segment(tracks: Sequence[Track]) -> bytes:
    """ftyp + moov (mvhd, one trak per track, mvex with one trex per track)."""
    if not tracks:
        raise ValueError("a CMAF init segment needs at least one track")
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate track IDs")
    ftyp = box(b"ftyp", b"iso6", u32(0), b"iso6", b"cmfc")
    mvhd = full_box(
        b"mvhd", 0, 0, u32(0), u32(0), u32(1000), u32(0), u32(0x00010000), u16(0x0100), bytes(10),
        UNITY_MATRIX, bytes(24), u32(max(ids) + 1),
    )
    traks = [_trak(t) for t in tracks]
    trexs = [full_box(b"trex", 0, 0, u32(t.track_id), u32(1), u32(0), u32(0), u32(0)) for t in tracks]
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _trak(t: Track) -> bytes:
    cfg = t.config
    video = cfg.kind == "video"
    tkhd = full_box(
        b"tkhd", 0, 0x000007, u32(0), u32(0), u32(t.track_id), u32(0), u32(0), bytes(8), u16(0), u16(0),
        u16(0 if video else 0x0100), u16(0), UNITY_MATRIX, u32(cfg.width << 16 if video else 0),
        u32(cfg.height << 16 if video else 0),
    )
    mdhd = full_box(b"mdhd", 0, 0, u32(0), u32(0), u32(t.timescale), u32(0), u16(0x55C4), u16(0))  # 'und'
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = full_box(b"hdlr", 0, 0, u32(0), handler, bytes(12), name)
    xmhd = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, u32(1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl", full_box(b"stsd", 0, 0, u32(1), _sample_entry(cfg)), full_box(b"stts", 0, 0, u32(0)),
        full_box(b"stsc", 0, 0, u32(0)), full_box(b"stsz", 0, 0, u32(0), u32(0)), full_box(b"stco", 0, 0, u32(0)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", xmhd, dinf, stbl)))


def _sample_entry(cfg: CodecConfig) -> bytes:
    if cfg.codec == "h264":
        return _visual_entry(b"avc1", cfg, box(b"avcC", avcc_record(cfg.extradata)))
    if cfg.codec == "hevc":
        return _visual_entry(b"hvc1", cfg, box(b"hvcC", hvcc_record(cfg.extradata)))
    if cfg.codec == "aac":
        return _mp4a_entry(cfg)
    raise ValueError(f"CMAF writer: codec {cfg.codec!r} is not supported (h264, hevc, aac)")


def _visual_entry(kind: bytes, cfg: CodecConfig, config_box: bytes) -> bytes:
    if not (0 < cfg.width < 65536 and 0 < cfg.height < 65536):
        raise ValueError(f"implausible picture size {cfg.width}x{cfg.height}")
    return box(
        kind, bytes(6), u16(1), bytes(16), u16(cfg.width), u16(cfg.height), u32(0x00480000), u32(0x00480000),
        u32(0), u16(1), bytes(32), u16(0x0018), u16(0xFFFF), config_box,
    )


def _mp4a_entry(cfg: CodecConfig) -> bytes:
    if not cfg.extradata:
        raise ValueError("AAC config without an AudioSpecificConfig")
    dec_config = descriptor(
        0x04, u8(0x40) + u8((0x05 << 2) | 1) + bytes(3) + u32(0) + u32(0) + descriptor(0x05, cfg.extradata)
    )
    es = descriptor(0x03, u16(0) + u8(0) + dec_config + descriptor(0x06, b"\x02"))
    rate = cfg.sample_rate if cfg.sample_rate < 65536 else 0
    return box(
        b"mp4a", bytes(6), u16(1), bytes(8), u16(cfg.channels or 2), u16(16), u16(0), u16(0), u32(rate << 16),
        full_box(b"esds", 0, 0, es),
    )


def avcc_record(extradata: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (14496-15 5.3.3.1) from Annex B SPS+PPS, 4-byte NAL lengths."""
    nals = h264.split_annexb(extradata)
    sps = [n for n in nals if h264.avc_nal_type(n) == h264.AVC_NAL_SPS]
    pps = [n for n in nals if h264.avc_nal_type(n) == h264.AVC_NAL_PPS]
    if not sps or not pps or len(sps[0]) < 4:
        raise ValueError("H.264 config without SPS and PPS")
    out = [bytes([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])]
    out += [u16(len(n)) + n for n in sps]
    out.append(u8(len(pps)))
    out += [u16(len(n)) + n for n in pps]
    return b"".join(out)


def hvcc_record(extradata: bytes) -> bytes:
    """HEVCDecoderConfigurationRecord (14496-15 8.3.3.1) from Annex B VPS+SPS+PPS."""
    nals = h264.split_annexb(extradata)
    arrays = []
    for nal_type in (h264.HEVC_NAL_VPS, h264.HEVC_NAL_SPS, h264.HEVC_NAL_PPS):
        group = [n for n in nals if h264.hevc_nal_type(n) == nal_type]
        if not group:
            raise ValueError("HEVC config without VPS, SPS and PPS")
        arrays.append(u8(0x80 | nal_type) + u16(len(group)) + b"".join(u16(len(n)) + n for n in group))
    sps = h264.parse_hevc_sps(next(n for n in nals if h264.hevc_nal_type(n) == h264.HEVC_NAL_SPS))
    depth = 2 if sps.profile_idc == 2 else 0  # bit_depth_minus8: Main 10 → 10 bits
    head = (
        u8(1) + u8((sps.profile_space << 6) | (sps.tier_flag << 5) | sps.profile_idc) + u32(sps.compat_flags)
        + sps.constraint_bytes + u8(sps.level_idc) + u16(0xF000) + u8(0xFC) + u8(0xFC | 1)
        + u8(0xF8 | depth) + u8(0xF8 | depth) + u16(0) + u8((1 << 3) | (1 << 2) | 3) + u8(len(arrays))
    )
    return head + b"".join(arrays)


# -- fragments ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackRun:
    """What one fragment holds of one track (times in the track's timescale)."""

    track_id: int
    base_decode_time: int
    duration: int
    samples: int
    first_sync: bool
    timescale: int

    @property
    def start_seconds(self) -> float:
        return self.base_decode_time / self.timescale

    @property
    def duration_seconds(self) -> float:
        return self.duration / self.timescale


@dataclass(frozen=True, slots=True)
class Part:
    """One moof+mdat fragment and its timing."""

    data: bytes
    sequence_number: int
    runs: tuple[TrackRun, ...]

    @property
    def independent(self) -> bool:
        """True when every video run starts with a sync sample (HLS ``INDEPENDENT=YES``)."""
        return all(r.first_sync for r in self.runs)

    @property
    def duration_seconds(self) -> float:
        return max((r.duration_seconds for r in self.runs), default=0.0)


@dataclass(slots=True)
class _TrackState:
    track: Track
    aac: bool
    video: bool
    times: list[int] = field(default_factory=list)  # decode times of the buffered samples
    ctos: list[int] = field(default_factory=list)
    syncs: list[bool] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    time_base: Fraction | None = None
    last_time: int | None = None  # decode time of the last sample added (kept across flushes)
    last_duration: int = 0


class Fragmenter:
    """Buffers samples of a track set and cuts them into fragments on demand."""

    def __init__(self, tracks: Sequence[Track]) -> None:
        if not tracks:
            raise ValueError("a Fragmenter needs at least one track")
        self._tracks = {
            t.track_id: _TrackState(t, t.config.codec == "aac", t.config.kind == "video") for t in tracks
        }
        if len(self._tracks) != len(tracks):
            raise ValueError("duplicate track IDs")
        self._by_kind: dict[str, int] = {}
        for t in tracks:
            self._by_kind.setdefault(t.config.kind, t.track_id)

    def add(self, packet: MediaPacket, track_id: int | None = None) -> None:
        """Buffer one sample (for the first track of the packet's kind unless ``track_id``)."""
        tid = self._by_kind.get(packet.kind) if track_id is None else track_id
        st = self._tracks.get(tid) if tid is not None else None
        if st is None:
            raise ValueError(f"no {packet.kind} track for this packet")
        st.time_base = packet.time_base
        t = self._decode_time(st, packet.dts, packet.time_base)
        if st.video:
            cto = _ticks(packet.pts, packet.time_base, st.track.timescale) - _ticks(
                packet.dts, packet.time_base, st.track.timescale
            )
            nals = h264.split_annexb(packet.data)
            aud = h264.HEVC_NAL_AUD if st.track.config.codec == "hevc" else h264.AVC_NAL_AUD
            typ = h264.hevc_nal_type if st.track.config.codec == "hevc" else h264.avc_nal_type
            data = b"".join(struct.pack(">I", len(n)) + n for n in nals if typ(n) != aud)
            sync = packet.keyframe
        else:
            cto, data, sync = 0, packet.data, True
        if st.last_time is not None:
            st.last_duration = t - st.last_time
        st.last_time = t
        st.times.append(t)
        st.ctos.append(cto)
        st.syncs.append(sync)
        st.data.append(data)

    def _decode_time(self, st: _TrackState, dts: int, time_base: Fraction) -> int:
        actual = _ticks(dts, time_base, st.track.timescale)
        if st.last_time is None:
            if actual < 0:
                raise ValueError("negative decode time: rebase the stream before writing CMAF")
            return actual
        t = actual
        if st.aac:
            expected = st.last_time + SAMPLES_PER_FRAME
            if abs(actual - expected) <= SAMPLES_PER_FRAME:
                t = expected
        return max(t, st.last_time + 1)

    def buffered(self, track_id: int) -> int:
        """Samples of ``track_id`` waiting for the next fragment."""
        return len(self._tracks[track_id].times)

    def buffered_seconds(self, track_id: int) -> float:
        """Decode time spanned from the first buffered sample to the last one's start."""
        st = self._tracks[track_id]
        return (st.times[-1] - st.times[0]) / st.track.timescale if st.times else 0.0

    def flush(self, sequence_number: int, next_dts: Mapping[int, int] | None = None) -> Part:
        """Everything buffered as one moof+mdat (empty ``data`` if nothing is buffered).

        ``next_dts`` maps a track ID to the dts (in that track's packet time base) of the sample
        that will follow, which fixes the duration of this fragment's last sample of that track.
        """
        if not 0 < sequence_number <= 0xFFFFFFFF:
            raise ValueError("mfhd sequence numbers are 1 … 2**32-1")
        states = [st for st in self._tracks.values() if st.times]
        if not states:
            return Part(b"", sequence_number, ())
        entries: list[tuple[_TrackState, list[int], bool]] = []
        moof_size = _MOOF_FIXED
        for st in states:
            durations = [b - a for a, b in zip(st.times, st.times[1:], strict=False)]
            nd = None if next_dts is None else next_dts.get(st.track.track_id)
            if nd is not None and st.time_base is not None:
                last = self._decode_time(st, nd, st.time_base) - st.times[-1]
            elif st.aac:
                last = SAMPLES_PER_FRAME
            elif st.last_duration > 0:
                last = st.last_duration
            else:
                last = st.track.timescale // 30
            durations.append(last)
            with_cto = any(st.ctos)
            entries.append((st, durations, with_cto))
            moof_size += _TRAF_FIXED + len(st.times) * (16 if with_cto else 12)
        trafs = []
        runs = []
        offset = moof_size + 8
        payload: list[bytes] = []
        for st, durations, with_cto in entries:
            tid = st.track.track_id
            n = len(st.times)
            flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS
            if with_cto:
                flags |= _TRUN_CTO
                table = b"".join(
                    struct.pack(">IIIi", d, len(s), FLAGS_SYNC if k else FLAGS_NON_SYNC, c)
                    for d, s, k, c in zip(durations, st.data, st.syncs, st.ctos, strict=True)
                )
            else:
                table = b"".join(
                    struct.pack(">III", d, len(s), FLAGS_SYNC if k else FLAGS_NON_SYNC)
                    for d, s, k in zip(durations, st.data, st.syncs, strict=True)
                )
            trun = full_box(b"trun", 1 if with_cto else 0, flags, u32(n), struct.pack(">i", offset), table)
            tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, u32(tid))
            tfdt = full_box(b"tfdt", 1, 0, u64(st.times[0]))
            trafs.append(box(b"traf", tfhd, tfdt, trun))
            size = sum(len(s) for s in st.data)
            offset += size
            payload.extend(st.data)
            runs.append(TrackRun(tid, st.times[0], sum(durations), n, st.syncs[0] or not st.video, st.track.timescale))
            st.times, st.ctos, st.syncs, st.data = [], [], [], []
        moof = box(b"moof", full_box(b"mfhd", 0, 0, u32(sequence_number)), *trafs)
        assert len(moof) == moof_size
        return Part(moof + box(b"mdat", *payload), sequence_number, tuple(runs))

    def flush_part(self, sequence_number: int, next_dts: Mapping[int, int] | None = None) -> bytes:
        """``flush(...).data``: one complete moof+mdat."""
        return self.flush(sequence_number, next_dts).data


def _ticks(value: int, time_base: Fraction, timescale: int) -> int:
    return (value * time_base.numerator * timescale) // time_base.denominator
