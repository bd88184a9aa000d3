"""[rtmp] connection limits, budgets and RTMPS files: defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.cli import main
from edged.config import load
from edged.errors import ConfigError
from tests.unit.protocols.rtmp.certs import make_tls_files


def test_defaults_keep_room_for_publishers() -> None:
    rtmp = load(None).rtmp
    assert rtmp.max_unauthenticated_per_address < rtmp.max_unauthenticated < rtmp.max_connections
    assert rtmp.pre_publish_bytes <= 64 * 1024 and rtmp.pre_publish_messages >= 16
    assert (rtmp.tls_cert_file, rtmp.tls_key_file) == ("", "")  # RTMPS is off by default


@pytest.mark.parametrize(("rtmp", "key"), [
    ({"max_connections": 1}, "rtmp.max_connections"),
    ({"max_connections": 10, "max_unauthenticated": 10}, "rtmp.max_unauthenticated"),
    ({"max_unauthenticated": 0}, "rtmp.max_unauthenticated"),
    ({"max_unauthenticated": 5, "max_unauthenticated_per_address": 6}, "rtmp.max_unauthenticated_per_address"),
    ({"max_unauthenticated_per_address": 0}, "rtmp.max_unauthenticated_per_address"),
    ({"pre_publish_bytes": 100}, "rtmp.pre_publish_bytes"),
    ({"pre_publish_bytes": 2 * 1024 * 1024}, "rtmp.pre_publish_bytes"),
    ({"pre_publish_messages": 3}, "rtmp.pre_publish_messages"),
    ({"control_messages_per_second": 0}, "rtmp.control_messages_per_second"),
    ({"tls_listen": "nope"}, "rtmp.tls_listen"),
    ({"tls_cert_file": "/x.pem"}, "rtmp.tls_key_file"),
    ({"tls_key_file": "/x.pem"}, "rtmp.tls_cert_file"),
])
def test_limit_errors_name_the_key(rtmp: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {"rtmp": rtmp})
    assert info.value.key == key


def test_rtmps_files_are_checked(tmp_path: Path) -> None:
    good = make_tls_files(tmp_path / "good")
    other = make_tls_files(tmp_path / "other", "other")
    cfg = load(None, {"rtmp": {"tls_cert_file": str(good.cert), "tls_key_file": str(good.key)}})
    assert cfg.rtmp.tls_cert_file == str(good.cert)

    def key_of(cert: Path | str, key: Path | str) -> str:
        with pytest.raises(ConfigError) as info:
            load(None, {"rtmp": {"tls_cert_file": str(cert), "tls_key_file": str(key)}})
        return info.value.key

    assert key_of(tmp_path / "missing.pem", good.key) == "rtmp.tls_cert_file"
    assert key_of(good.cert, tmp_path / "missing.pem") == "rtmp.tls_key_file"
    assert key_of(tmp_path, good.key) == "rtmp.tls_cert_file"  # a directory cannot be read as a file
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    assert key_of(not_pem, good.key) == "rtmp.tls_cert_file"
    assert key_of(good.cert, not_pem) == "rtmp.tls_key_file"
    assert key_of(good.cert, other.key) == "rtmp.tls_key_file"  # not the key of that certificate


def test_rtmps_flag_without_files_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--rtmps", "127.0.0.1:1936"]) == 2
    assert "rtmp.tls_cert_file" in capsys.readouterr().err
