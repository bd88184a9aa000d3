"""Typed config: TOML + flag overlay; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.config import Config, load
from edged.errors import ConfigError


def test_defaults() -> None:
    cfg = load(None)
    assert cfg == Config()
    assert (cfg.rtmp.listen, cfg.http.listen, cfg.data_dir) == ("0.0.0.0:1935", "0.0.0.0:8080", "./var/edged")
    assert cfg.hls.segment_seconds == 2.0
    assert (cfg.hls.format, cfg.hls.part_seconds, cfg.hls.max_blocking_requests) == ("cmaf", 0.5, 4096)


def test_hls_low_latency_keys(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text('[hls]\nformat = "ts"\npart_seconds = 0.2\nmax_blocking_requests = 10\n')
    cfg = load(f)
    assert (cfg.hls.format, cfg.hls.part_seconds, cfg.hls.max_blocking_requests) == ("ts", 0.2, 10)
    with pytest.raises(ConfigError, match="hls.part_seconds: expected between 0.2 and 1.0"):
        load(None, {"hls": {"part_seconds": 0.19}})


def test_file_then_flags_win(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text('data_dir = "/srv/x"\n[rtmp]\nlisten = "127.0.0.1:1936"\n[hls]\nwindow = 8\n'
                 '[channels]\nkey1 = "news"\n')
    cfg = load(f, {"rtmp": {"listen": "127.0.0.1:2000"}})
    assert cfg.rtmp.listen == "127.0.0.1:2000"
    assert cfg.data_dir == "/srv/x" and cfg.hls.window == 8 and cfg.channels == {"key1": "news"}


@pytest.mark.parametrize(("toml", "key"), [
    ('[rtmp]\nlisten = "nope"\n', "rtmp.listen"),
    ('[rtmp]\nlisten = "1.2.3.4:99999"\n', "rtmp.listen"),
    ('[hls]\nsegment_seconds = "two"\n', "hls.segment_seconds"),
    ('[hls]\nwindow = 1\n', "hls.window"),
    ('[hls]\nbogus = 1\n', "hls.bogus"),
    ('[hls]\nformat = "mp4"\n', "hls.format"),
    ('[hls]\npart_seconds = 0.1\n', "hls.part_seconds"),
    ('[hls]\npart_seconds = 1.5\n', "hls.part_seconds"),
    ('[hls]\npart_seconds = nan\n', "hls.part_seconds"),
    ('[hls]\nmax_blocking_requests = 0\n', "hls.max_blocking_requests"),
    ('[hls]\nmax_blocking_requests = 100001\n', "hls.max_blocking_requests"),
    ("rtmp = 3\n", "rtmp"),
    ('[channels]\n"bad key!" = "x"\n', "channels.bad key!"),
    ('[channels]\nk = "../etc"\n', "channels.k"),
    ('[srt]\npassphrase = "short"\n', "srt.passphrase"),
    ('[store]\nmax_bytes = 10\n', "store.max_bytes"),
    ("[rtmp]\nenabled = 1\n", "rtmp.enabled"),
    ('[node]\nprefixes = ["10.0.0.0/8", "10.1.2.300/24"]\n', "node.prefixes[1]"),
    ("[node]\nlatitude = 91\nlongitude = 0\n", "node.latitude"),
    ("[node]\nlatitude = 48.8\n", "node.longitude"),
    ("[origin]\nauth_cache_seconds = -1\n", "origin.auth_cache_seconds"),
])
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    f = tmp_path / "e.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(f)
    assert exc.value.key == key
    assert str(exc.value).startswith(f"config: {key}:")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rtmp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
