"""MPEG-TS from Debian's ffmpeg → TsDemuxer/TsNormalizer → the normal form, without SRT in between."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import pytest

from edged.ingest.ts_demux import BytePipe, TsDemuxer, TsNormalizer
from edged.media.packet import MPEGTS_TIME_BASE, MediaPacket
from edged.protocols import h264
from tests.conftest import make_media


@pytest.fixture(scope="module")
def sample_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x240 25 fps H.264 (GOP 1 s) + 48 kHz AAC in MPEG-TS, several AAC frames per PES."""
    return make_media(tmp_path_factory.mktemp("ts") / "sample.ts", size="320x240", rate=25, seconds=3, fmt="mpegts")


def demux_all(data: bytes, chunk: int = 1316, pace: float = 0.0) -> tuple[list[MediaPacket], TsDemuxer, str | None]:
    pipe = BytePipe()
    got: list[MediaPacket] = []
    done = threading.Event()
    reason: list[str | None] = []
    demux = TsDemuxer(pipe, got.extend, lambda r: (reason.append(r), done.set()))
    demux.start()
    for i in range(0, len(data), chunk):
        assert pipe.write(data[i:i + chunk], time.monotonic())
        if pace:
            time.sleep(pace)
    pipe.close()
    assert done.wait(10), "demuxer did not finish"
    assert demux.join(5)
    return got, demux, reason[0]


def decode_all(packets: list[MediaPacket], codec: str) -> int:
    ctx = av.CodecContext.create(codec, "r")
    frames = 0
    for p in packets:
        frames += len(ctx.decode(av.Packet(p.data)))
    frames += len(ctx.decode(None))
    return frames


def test_ffmpeg_ts_becomes_normal_form(sample_ts: Path) -> None:
    packets, demux, reason = demux_all(sample_ts.read_bytes(), pace=0.0005)
    assert reason is None
    video = [p for p in packets if p.kind == "video"]
    audio = [p for p in packets if p.kind == "audio"]
    assert len(video) == 75
    assert len(audio) == pytest.approx(3 * 48000 / 1024, abs=3)
    assert demux.normalizer.dropped == 0
    for p in video:
        assert p.time_base == MPEGTS_TIME_BASE and p.data.startswith(h264.START_CODE)
        types = [h264.avc_nal_type(n) for n in h264.split_annexb(p.data)]
        assert h264.AVC_NAL_AUD not in types
        if p.keyframe:
            assert types[:2] == [h264.AVC_NAL_SPS, h264.AVC_NAL_PPS] and h264.AVC_NAL_IDR in types
    assert sum(p.keyframe for p in video) == 3 and video[0].keyframe
    cfg = video[0].config
    assert (cfg.codec, cfg.codec_string.lower(), cfg.width, cfg.height) == ("h264", "avc1.42c00d", 320, 240)
    assert [p.dts for p in video] == [video[0].dts + 3600 * i for i in range(75)]
    acfg = audio[0].config
    assert (acfg.codec_string, acfg.sample_rate, acfg.channels, acfg.extradata) == ("mp4a.40.2", 48000, 1, b"\x11\x88")
    assert not any(p.data[:2] == b"\xff\xf1" for p in audio)
    assert [b.pts - a.pts for a, b in zip(audio, audio[1:], strict=False)] == [1920] * (len(audio) - 1)
    assert decode_all(video, "h264") == 75


def test_parameter_sets_inserted_and_auds_removed() -> None:
    norm = TsNormalizer()
    sps = bytes.fromhex("6742c00dda0507ec0440000003004000000c83c50aa8")  # x264 ultrafast 320x240
    pps = bytes.fromhex("68ce0fc8")
    aud = b"\x09\xf0"
    idr = b"\x65\x88\x84\x00\x33\xff"
    non_idr = b"\x41\x9a\x02\x03"
    sc = h264.join_annexb

    assert norm.push("h264", 0, 0, False, sc([aud, non_idr])) == []  # nothing before parameter sets
    first = norm.push("h264", 3600, 3600, True, sc([aud, sps, pps, idr]))[0]
    assert first.config.codec_string.lower() == "avc1.42c00d" and first.config.width == 320
    assert h264.split_annexb(first.data) == [sps, pps, idr]
    later = norm.push("h264", 7200, 7200, True, sc([aud, idr]))[0]  # keyframe without in-band SPS/PPS
    assert h264.split_annexb(later.data) == [sps, pps, idr] and later.keyframe
    inter = norm.push("h264", 10800, 10800, False, sc([non_idr]))[0]
    assert h264.split_annexb(inter.data) == [non_idr] and not inter.keyframe
    flagged = norm.push("h264", 14400, 14400, False, sc([idr]))[0]  # IDR found even if unflagged
    assert flagged.keyframe and h264.split_annexb(flagged.data)[:2] == [sps, pps]


def test_adts_split_and_missing_pts_interpolated() -> None:
    def adts(payload: bytes) -> bytes:  # AAC-LC 48 kHz stereo, no CRC
        n = len(payload) + 7
        return bytes([0xFF, 0xF1, 0x4C, 0x80 | (n >> 11), (n >> 3) & 0xFF, ((n & 7) << 5) | 0x1F, 0xFC]) + payload

    norm = TsNormalizer()
    out = norm.push("aac", 90000, None, True, adts(b"\x21\x00") + adts(b"\x21\x01") + adts(b"\x21\x02"))
    assert [p.pts for p in out] == [90000, 91920, 93840]
    assert [p.data for p in out] == [b"\x21\x00", b"\x21\x01", b"\x21\x02"]
    assert out[0].config.extradata == b"\x11\x90" and out[0].config.channels == 2
    nxt = norm.push("aac", None, None, True, adts(b"\x21\x03"))  # PES continuation without PTS
    assert [p.pts for p in nxt] == [95760]
    assert norm.push("aac", 0, 0, True, b"\x00garbage") == [] and norm.dropped == 1
    assert norm.push("mp2", 0, 0, True, b"\x00") == []


def test_byte_pipe_bounds_and_eof() -> None:
    pipe = BytePipe(max_bytes=10)
    assert pipe.write(b"abcdef", 1.0) and not pipe.write(b"ghijkl", 2.0) and pipe.write(b"ghij", 2.0)
    assert pipe.read(4) == b"abcd" and pipe.last_arrival == 1.0
    assert pipe.read(100) == b"efghij" and pipe.last_arrival == 2.0
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(5)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # blocks while empty
    pipe.write(b"xy", 3.0)
    reader.join(2)
    assert got == [b"xy"]
    pipe.write(b"tail", 4.0)
    pipe.close()
    assert pipe.read(10) == b"tail" and pipe.read(10) == b"" and not pipe.write(b"late", 5.0)


def test_garbage_ends_without_packets() -> None:
    import random

    rng = random.Random(7)
    packets, demux, _reason = demux_all(bytes(rng.getrandbits(8) for _ in range(200_000)))
    assert packets == [] and demux.packets == 0
