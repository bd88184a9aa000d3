"""H.264/HEVC bitstream helpers: Annex B ↔ length-prefixed NAL units, decoder config records,
SPS fields for RFC 6381 codec strings (ISO/IEC 14496-15, ITU-T H.264 7.3.2.1, H.265 7.3.3)."""

from __future__ import annotations

from dataclasses import dataclass

from edged.errors import RemoteProtocolError

START_CODE = b"\x00\x00\x00\x01"

# H.264 NAL unit types (H.264 table 7-1)
AVC_NAL_IDR = 5
AVC_NAL_SEI = 6
AVC_NAL_SPS = 7
AVC_NAL_PPS = 8
AVC_NAL_AUD = 9
# HEVC NAL unit types (H.265 table 7-1)
HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_AUD = 35

MAX_SPS_BYTES = 1024  # real SPS are < 100 bytes; a cap keeps the bit reader cheap


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        return [data] if data else []
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end]
        if j >= 0 and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # the zero of a following 4-byte start code (trailing_zero_8bits)
        if nal:
            nals.append(nal)
        i = j
    return nals


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of an ISO BMFF / FLV sample (each prefixed by a big-endian length)."""
    nals: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        if pos + length_size > n:
            raise RemoteProtocolError("truncated NAL length prefix")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            raise RemoteProtocolError(f"NAL unit length {size} overruns the sample")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def join_annexb(nals: list[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


def avc_nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else -1


def hevc_nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F if nal else -1


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    """Parameter sets and NAL length size from an avcC/hvcC record."""

    length_size: int
    parameter_sets: tuple[bytes, ...]  # in decoding order: (VPS,) SPS, PPS


def parse_avcc(record: bytes) -> DecoderConfig:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)."""
    try:
        if len(record) < 7 or record[0] != 1:
            raise RemoteProtocolError("invalid AVCDecoderConfigurationRecord")
        length_size = (record[4] & 0x03) + 1
        num_sps = record[5] & 0x1F
        pos = 6
        sets: list[bytes] = []
        for _ in range(num_sps):
            n = int.from_bytes(record[pos : pos + 2], "big")
            sets.append(record[pos + 2 : pos + 2 + n])
            pos += 2 + n
        num_pps = record[pos]
        pos += 1
        for _ in range(num_pps):
            n = int.from_bytes(record[pos : pos + 2], "big")
            sets.append(record[pos + 2 : pos + 2 + n])
            pos += 2 + n
    except IndexError:
        raise RemoteProtocolError("truncated AVCDecoderConfigurationRecord") from None
    if pos > len(record) or not sets or any(not s for s in sets):
        raise RemoteProtocolError("truncated AVCDecoderConfigurationRecord")
    return DecoderConfig(length_size, tuple(sets))


def parse_hvcc(record: bytes) -> DecoderConfig:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1)."""
    try:
        if len(record) < 23 or record[0] != 1:
            raise RemoteProtocolError("invalid HEVCDecoderConfigurationRecord")
        length_size = (record[21] & 0x03) + 1
        num_arrays = record[22]
        pos = 23
        sets: list[bytes] = []
        for _ in range(num_arrays):
            num_nalus = int.from_bytes(record[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(num_nalus):
                n = int.from_bytes(record[pos : pos + 2], "big")
                sets.append(record[pos + 2 : pos + 2 + n])
                pos += 2 + n
    except IndexError:
        raise RemoteProtocolError("truncated HEVCDecoderConfigurationRecord") from None
    if pos > len(record) or not sets or any(not s for s in sets):
        raise RemoteProtocolError("truncated HEVCDecoderConfigurationRecord")
    return DecoderConfig(length_size, tuple(sets))


class _BitReader:
    """Reads bits and Exp-Golomb codes from an RBSP (emulation prevention already removed)."""

    __slots__ = ("_data", "_pos", "_len")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._len = len(data) * 8

    def u(self, n: int) -> int:
        if self._pos + n > self._len:
            raise RemoteProtocolError("SPS truncated")
        v = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise RemoteProtocolError("Exp-Golomb code too long in SPS")
        return (1 << zeros) - 1 + (self.u(zeros) if zeros else 0)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def unescape_rbsp(nal_payload: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00), H.264 7.4.1."""
    return nal_payload.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    width: int
    height: int


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_avc_sps(nal: bytes) -> SpsInfo:
    """Profile, level and display size from an H.264 SPS NAL unit (H.264 7.3.2.1.1)."""
    if len(nal) < 4 or avc_nal_type(nal) != AVC_NAL_SPS:
        raise RemoteProtocolError("not an H.264 SPS")
    r = _BitReader(unescape_rbsp(nal[1:MAX_SPS_BYTES]))
    profile_idc = r.u(8)
    constraint = r.u(8)
    level_idc = r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        n = r.ue()
        if n > 255:
            raise RemoteProtocolError("SPS num_ref_frames_in_pic_order_cnt_cycle too large")
        for _ in range(n):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    mbs_w = r.ue() + 1
    map_units_h = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width = mbs_w * 16
    height = (2 - frame_mbs_only) * map_units_h * 16
    if r.u(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if chroma_format_idc == 0 or separate_colour_plane:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise RemoteProtocolError(f"implausible SPS picture size {width}x{height}")
    return SpsInfo(profile_idc, constraint, level_idc, width, height)


def avc_codec_string(sps: SpsInfo) -> str:
    """RFC 6381 'avc1.PPCCLL'."""
    return f"avc1.{sps.profile_idc:02X}{sps.constraint_flags:02X}{sps.level_idc:02X}"


@dataclass(frozen=True, slots=True)
class HevcSpsInfo:
    profile_space: int
    tier_flag: int
    profile_idc: int
    compat_flags: int
    constraint_bytes: bytes
    level_idc: int
    width: int
    height: int


def parse_hevc_sps(nal: bytes) -> HevcSpsInfo:
    """profile_tier_level and picture size from an HEVC SPS (H.265 7.3.2.2, 7.3.3)."""
    if len(nal) < 16 or hevc_nal_type(nal) != HEVC_NAL_SPS:
        raise RemoteProtocolError("not an HEVC SPS")
    r = _BitReader(unescape_rbsp(nal[2:MAX_SPS_BYTES]))
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.u(1)  # temporal_id_nesting
    profile_space = r.u(2)
    tier = r.u(1)
    profile_idc = r.u(5)
    compat = r.u(32)
    constraint = bytes(r.u(8) for _ in range(6))
    level_idc = r.u(8)
    sub_profile = []
    sub_level = []
    for _ in range(max_sub_layers_minus1):
        sub_profile.append(r.u(1))
        sub_level.append(r.u(1))
    if max_sub_layers_minus1 > 0:
        for _ in range(max_sub_layers_minus1, 8):
            r.u(2)
    for i in range(max_sub_layers_minus1):
        if sub_profile[i]:
            r.u(32)
            r.u(32)
            r.u(24)
        if sub_level[i]:
            r.u(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc == 3:
        r.u(1)
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma_format_idc in (1, 2) else 1
        sub_h = 2 if chroma_format_idc == 1 else 1
        width -= (left + right) * sub_w
        height -= (top + bottom) * sub_h
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise RemoteProtocolError(f"implausible HEVC picture size {width}x{height}")
    return HevcSpsInfo(profile_space, tier, profile_idc, compat, constraint, level_idc, width, height)


def hevc_codec_string(sps: HevcSpsInfo) -> str:
    """RFC 6381 / ISO 14496-15 E.3 'hvc1.P.C.TL.B..' string."""
    space = ("", "A", "B", "C")[sps.profile_space]
    # general_profile_compatibility_flags in reverse bit order, as hex without leading zeros
    rev = int(f"{sps.compat_flags:032b}"[::-1], 2)
    tier = "H" if sps.tier_flag else "L"
    cons = list(sps.constraint_bytes)
    while cons and cons[-1] == 0:
        cons.pop()
    parts = [f"hvc1.{space}{sps.profile_idc}", f"{rev:X}", f"{tier}{sps.level_idc}"]
    parts += [f"{b:X}" for b in cons]
    return ".".join(parts)
