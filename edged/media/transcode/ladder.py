"""Which rungs of the configured ladder a given source gets, and at what size and frame rate.

Pure: source size and frame rate in, renditions out. The rules (issue 3):
- never upscale: a rung whose box is larger than the source in either dimension is dropped;
- never raise the frame rate: a rung's rate is the source rate divided by a whole number (60 → 30,
  50 → 25, 59.94 → 29.97), so motion stays even; a 60 fps rung on a 30 fps source runs at 30;
- a rung that ends up the same size and rate as the source is dropped: the source passthrough,
  always present, already serves it;
- two rungs that end up identical keep one (the one configured at that rate).

A rung is a bounding box: the output keeps the source's aspect ratio and fits inside the box, so a
4:3 source in a 1280x720 box comes out 960x720. Portrait sources use the box turned on its side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edged.config import DEFAULT_LADDER, Rung

SOURCE = "source"  # the passthrough rendition's name
COMMON_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)
_RATE_SLACK = 0.01  # 30 / 29.97 = 1.001 must not halve the rate
_RUNG_RE = re.compile(
    r"^(?:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})=)?(?P<w>\d{2,5})x(?P<h>\d{2,5})"
    r"(?:@(?P<fps>\d+(?:\.\d+)?))?:(?P<kbps>\d+)k?$"
)


@dataclass(frozen=True, slots=True)
class Rendition:
    """One encoded rung for one source."""

    name: str
    width: int
    height: int
    fps: float  # effective rate: source rate / decimation
    bitrate_kbps: int
    decimation: int = 1  # encode every n-th source frame

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def pixel_rate(self) -> float:
        """Pixels per second this rung encodes."""
        return self.pixels * self.fps


def snap_fps(fps: float) -> float:
    """A measured rate snapped to the nearest common one when within 2 %, else rounded."""
    if fps <= 0:
        return 0.0
    common = min(COMMON_RATES, key=lambda c: abs(fps - c))
    return common if abs(fps - common) < 0.02 * common else round(fps, 3)


def _even(x: float) -> int:
    """Nearest even integer, at least 2 (4:2:0 chroma needs even sizes)."""
    return max(2, int(round(x / 2)) * 2)


def fit(src_w: int, src_h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The source's aspect ratio inside the box (turned for portrait sources), even sizes."""
    if src_h > src_w and box_w > box_h:
        box_w, box_h = box_h, box_w
    scale = min(box_w / src_w, box_h / src_h)
    return _even(src_w * scale), _even(src_h * scale)


def decimation(src_fps: float, rung_fps: float) -> int:
    """Whole-number divisor of the source rate that does not exceed the rung's rate."""
    if src_fps <= 0 or rung_fps <= 0:
        return 1
    return max(1, math.ceil(src_fps / rung_fps - _RATE_SLACK))


def select(ladder: Iterable[Rung], src_w: int, src_h: int, src_fps: float) -> list[Rendition]:
    """The renditions to encode for this source, highest first (the source itself not included)."""
    src_fps = src_fps if src_fps > 0 else 30.0
    chosen: dict[tuple[int, int, float], tuple[bool, Rendition]] = {}
    for rung in ladder:
        w, h = fit(src_w, src_h, rung.width, rung.height)
        if w > src_w or h > src_h:
            continue  # never upscale
        k = decimation(src_fps, rung.fps)
        fps = math.floor(src_fps / k * 1000 + 1e-6) / 1000  # rounded down: never above the source
        if (w, h) == (src_w, src_h) and k == 1:
            continue  # the same as the source passthrough
        native = abs(fps - rung.fps) <= _RATE_SLACK * rung.fps
        name = rung.name if native or round(fps) == round(rung.fps) else f"{h}p{round(fps)}"
        r = Rendition(name=name, width=w, height=h, fps=fps, bitrate_kbps=rung.bitrate_kbps, decimation=k)
        key = (w, h, fps)
        if key not in chosen or (native and not chosen[key][0]):
            chosen[key] = (native, r)
    out: list[Rendition] = []
    names: set[str] = set()
    for _, r in sorted(chosen.values(), key=lambda nr: (-nr[1].pixels, -nr[1].fps, -nr[1].bitrate_kbps)):
        if r.name in names or r.name == SOURCE:  # a renamed rung that collides keeps a unique name
            r = Rendition(f"{r.height}p{round(r.fps)}-{r.bitrate_kbps}k", r.width, r.height, r.fps,
                          r.bitrate_kbps, r.decimation)
        names.add(r.name)
        out.append(r)
    return out


def parse_rung(text: str) -> Rung:
    """`[NAME=]WIDTHxHEIGHT[@FPS]:KBPS[k]`, e.g. `480p30=854x480@30:1500` or `640x360:800k`."""
    m = _RUNG_RE.match(text.strip())
    if m is None:
        raise ValueError(f"expected [NAME=]WIDTHxHEIGHT[@FPS]:KBPS, got {text!r}")
    w, h, kbps = int(m["w"]), int(m["h"]), int(m["kbps"])
    fps = float(m["fps"]) if m["fps"] else 30.0
    name = m["name"] or f"{h}p{round(fps)}"
    return Rung(name=name, width=w, height=h, fps=fps, bitrate_kbps=kbps)


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """Comma-separated rungs; `default` is the built-in ladder, `none` an empty one."""
    text = text.strip()
    if text == "default":
        return DEFAULT_LADDER
    if text in ("none", ""):
        return ()
    return tuple(parse_rung(part) for part in text.split(","))


def format_ladder(rungs: Sequence[Rung]) -> str:
    return ",".join(f"{r.name}={r.width}x{r.height}@{r.fps:g}:{r.bitrate_kbps}" for r in rungs)
