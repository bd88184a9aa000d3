"""FLV normalization, pipe framing and segmenting on real encoder output."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from edged.errors import RemoteProtocolError
from edged.media.packet import MediaPacket
from edged.media.segmenter import Segmenter
from edged.media.transcode.wire import EndOfStream, WireDecoder, WireEncoder
from edged.protocols.flv import FlvNormalizer, Unsupported
from tests.unit.media.flvsource import flv_tags


def _packets(path: Path) -> list[MediaPacket]:
    norm = FlvNormalizer()
    out = []
    for kind, ts, body in flv_tags(path):
        pkt = norm.video(ts, body) if kind == "video" else norm.audio(ts, body)
        if isinstance(pkt, MediaPacket):
            out.append(pkt)
    return out


def test_normal_form(sample_flv: Path) -> None:
    pkts = _packets(sample_flv)
    video = [p for p in pkts if p.kind == "video"]
    audio = [p for p in pkts if p.kind == "audio"]
    assert len(video) == 180 and len(audio) > 250
    assert video[0].keyframe and video[0].data.startswith(b"\x00\x00\x00\x01\x67")  # SPS first
    assert all(p.data.startswith(b"\x00\x00\x00\x01") for p in video)
    assert all(not (p.data[0] == 0xFF and p.data[1] & 0xF0 == 0xF0) for p in audio)  # no ADTS sync
    assert video[0].config.codec_string.startswith("avc1.42")  # ultrafast: constrained baseline
    assert (video[0].config.width, video[0].config.height) == (640, 360)
    assert audio[0].config.codec_string == "mp4a.40.2" and audio[0].config.sample_rate == 48000
    assert sum(p.keyframe for p in video) == 6


def test_flv_edge_cases() -> None:
    norm = FlvNormalizer()
    assert norm.video(0, bytes([0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41])) is None  # before the sequence header
    assert isinstance(norm.video(0, bytes([0x22, 0, 0])), Unsupported)  # Sorenson H.263
    assert isinstance(norm.audio(0, bytes([0x2F, 0])), Unsupported)  # MP3
    with pytest.raises(RemoteProtocolError):
        norm.video(0, bytes([0x17, 0, 0, 0, 0, 1, 2]))  # truncated avcC
    with pytest.raises(RemoteProtocolError):
        norm.audio(0, bytes([0xAF, 0, 0xF8]))  # AudioSpecificConfig too short


def test_wire_round_trip_in_small_pieces(sample_flv: Path) -> None:
    pkts = _packets(sample_flv)[:50]
    enc = WireEncoder()
    blob = b"".join(enc.packet(p) for p in pkts) + enc.end(deliberate=True)
    dec = WireDecoder()
    got: list[object] = []
    for i in range(0, len(blob), 7):
        dec.receive_data(blob[i : i + 7])
        while (item := dec.next_item()) is not None:
            got.append(item)
    assert got[-1] == EndOfStream(deliberate=True)
    assert got[:-1] == pkts


def test_wire_rejects_garbage() -> None:
    dec = WireDecoder()
    dec.receive_data(b"\x09\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        dec.next_item()
    dec = WireDecoder()
    dec.receive_data(b"\x02\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError):
        dec.next_item()


def test_segments_cut_at_keyframes_and_decode(sample_flv: Path) -> None:
    seg = Segmenter("source", segment_seconds=2.0, max_segment_seconds=12, next_seq=5, disc_seq=0,
                    discontinuity=True)
    out = []
    for p in _packets(sample_flv):
        out += seg.push(p)
    out += seg.flush()
    assert [s.seq for s in out] == [5, 6, 7]
    assert out[0].discontinuity and out[0].disc_seq == 1 and not out[1].discontinuity
    assert [round(s.duration, 3) for s in out[:2]] == [2.0, 2.0]
    assert abs(sum(s.duration for s in out) - 6.0) < 0.05
    for s in out:
        with av.open(io.BytesIO(s.payload), format="mpegts") as c:
            assert {st.type for st in c.streams} == {"video", "audio"}
            frames = list(c.decode(video=0))
            assert len(frames) == s.video_frames == 60
            assert frames[0].key_frame
    assert out[0].codecs[1] == "mp4a.40.2"


def test_force_cut_without_keyframes(sample_flv: Path) -> None:
    seg = Segmenter("source", segment_seconds=0.5, max_segment_seconds=1.5, next_seq=0, disc_seq=0,
                    discontinuity=False)
    out = []
    for p in _packets(sample_flv):
        out += seg.push(p)
    # keyframes every 1 s: 0.5 s target cuts at every keyframe, never longer than the cap
    assert all(s.duration <= 1.5 + 1e-6 for s in out)
    assert len(out) == 5
