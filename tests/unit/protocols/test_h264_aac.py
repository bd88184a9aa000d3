"""Bitstream helpers: Annex B, decoder config records, SPS fields, AAC configs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import ProtocolError, RemoteProtocolError
from edged.protocols import aac, h264

# x264 baseline-ish SPS for 640x360 (profile 100, level 30), as ffmpeg writes it
SPS_640x360 = bytes.fromhex("6764001eacd940a02ff9701100000300010000030032 0f162d96".replace(" ", ""))
PPS = bytes.fromhex("68ebe3cb22c0")


def test_sps_fields_and_codec_string() -> None:
    info = h264.parse_avc_sps(SPS_640x360)
    assert (info.width, info.height) == (640, 360)
    assert h264.avc_codec_string(info) == "avc1.64001E"


def test_annexb_round_trip() -> None:
    nals = [SPS_640x360, PPS, b"\x65\x88\x84\x00\x00\x03\x00\x10"]
    data = h264.join_annexb(nals)
    assert h264.split_annexb(data) == nals
    assert h264.split_annexb(b"\x00\x00\x01\x09\x10\x00\x00\x00\x01\x67\x42") == [b"\x09\x10", b"\x67\x42"]


def test_avcc_record() -> None:
    rec = (bytes([1, 0x64, 0, 0x1E, 0xFF, 0xE1]) + len(SPS_640x360).to_bytes(2, "big") + SPS_640x360
           + bytes([1]) + len(PPS).to_bytes(2, "big") + PPS)
    dc = h264.parse_avcc(rec)
    assert dc.length_size == 4
    assert dc.parameter_sets == (SPS_640x360, PPS)
    with pytest.raises(RemoteProtocolError):
        h264.parse_avcc(rec[:-3])


def test_length_prefixed() -> None:
    data = (3).to_bytes(4, "big") + b"abc" + (1).to_bytes(4, "big") + b"d"
    assert h264.split_length_prefixed(data) == [b"abc", b"d"]
    with pytest.raises(RemoteProtocolError):
        h264.split_length_prefixed(data[:-1])


@given(st.binary(max_size=200))
def test_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for fn in (h264.parse_avcc, h264.parse_hvcc, h264.parse_avc_sps, h264.parse_hevc_sps,
               h264.split_length_prefixed, aac.parse_asc, aac.parse_adts):
        try:
            fn(data)
        except ProtocolError:
            pass


def test_aac_asc_and_adts() -> None:
    asc = aac.make_asc(2, 48000, 2)
    cfg = aac.parse_asc(asc)
    assert (cfg.object_type, cfg.sample_rate, cfg.channels, cfg.codec_string) == (2, 48000, 2, "mp4a.40.2")
    payload = b"\x21\x10\x05"
    length = 7 + len(payload)
    header = bytes([0xFF, 0xF1, (1 << 6) | (3 << 2) | 0, (2 << 6) | (length >> 11), (length >> 3) & 0xFF,
                    ((length & 7) << 5) | 0x1F, 0xFC])
    frames = aac.parse_adts(header + payload + header + payload)
    assert [f.payload for f in frames] == [payload, payload]
    assert frames[0].config == aac.AacConfig(2, 48000, 2)
