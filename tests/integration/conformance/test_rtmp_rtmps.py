"""RTMPS ingest: Debian's ffmpeg publishes to rtmps:// on a real edged, verifying the certificate against
its CA; a certificate from another CA is refused by the client."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, need
from tests.integration.procs import EdgeProcess, ffmpeg_publish, http_get, wait_for
from tests.unit.protocols.rtmp.certs import TlsFiles, make_tls_files

KEY = "tls-key"


def _rtmps_edge(tmp_path: Path, served: TlsFiles) -> tuple[EdgeProcess, int]:
    conf = tmp_path / "edged.toml"
    conf.write_text(f'[rtmp]\ntls_cert_file = "{served.cert}"\ntls_key_file = "{served.key}"\n')
    port = free_port()
    edge = EdgeProcess(tmp_path / "edge", {"secure": KEY},
                       extra=["--no-srt", "--no-transcode", "--config", str(conf), "--rtmps", f"127.0.0.1:{port}"], hls_format="ts")
    return edge, port


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def _verified(ca: Path) -> list[str]:
    """ffmpeg's tls protocol options, given as output options: verify the server against ``ca``."""
    return ["-tls_verify", "1", "-ca_file", str(ca)]


def test_ffmpeg_publishes_over_rtmps(tmp_path: Path, tls: TlsFiles, stop_later: list[EdgeProcess]) -> None:
    edge, port = _rtmps_edge(tmp_path, tls)
    stop_later.append(edge.start())
    assert f"RTMPS listening on 127.0.0.1:{port}" in edge.log()
    _, _, health = http_get(f"{edge.http}/healthz")
    assert json.loads(health)["rtmps_port"] == port
    enc = ffmpeg_publish(f"rtmps://127.0.0.1:{port}/live/{KEY}", 4, size="320x240", extra=_verified(tls.ca))
    _, err = enc.communicate(timeout=60)
    assert enc.returncode == 0, err.decode(errors="replace")
    # ffmpeg unpublishes, then drops the socket after its TLS close_notify (edged logs a close or a reset)
    wait_for(lambda: "channel=secure closed:" in edge.log(), 10, "the connection to end")
    log = edge.log()
    assert "channel=secure publishing" in log and "channel=secure unpublished" in log
    assert "protocol error" not in log and "over budget" not in log

    status, _, body = http_get(f"{edge.http}/live/secure/source/index.m3u8")
    assert status == 200
    first = next(line for line in body.decode().splitlines() if line.endswith(".ts"))
    probe = subprocess.run(
        [need("ffprobe"), "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
         f"{edge.http}/live/secure/source/{first}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert probe.returncode == 0 and "h264" in probe.stdout, probe.stderr
    # plain RTMP keeps working next to it
    plain = ffmpeg_publish(edge.rtmp_url(KEY), 1, size="160x120")
    _, err = plain.communicate(timeout=60)
    assert plain.returncode == 0, err.decode(errors="replace")


def test_untrusted_certificate_is_refused_by_the_client(tmp_path: Path, tls: TlsFiles,
                                                        stop_later: list[EdgeProcess]) -> None:
    impostor = make_tls_files(tmp_path / "impostor", "impostor")  # another CA signed what the edge serves
    edge, port = _rtmps_edge(tmp_path, impostor)
    stop_later.append(edge.start())
    enc = ffmpeg_publish(f"rtmps://127.0.0.1:{port}/live/{KEY}", 2, size="320x240", extra=_verified(tls.ca))
    _, err = enc.communicate(timeout=60)
    assert enc.returncode != 0
    text = err.decode(errors="replace").lower()
    assert "certificate" in text or "verif" in text, text
    # ffmpeg (GnuTLS) checks the certificate once the handshake is done, then hangs up without a word
    wait_for(lambda: "channel=- closed:" in edge.log(), 10, "edged to log the connection's end")
    log = edge.log()
    assert "channel=secure publishing" not in log
    assert "eof_received" not in log  # no asyncio warning per refused connection (a stranger could repeat it)

    # a plain RTMP handshake sent to the RTMPS port ends that connection with the reason
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x03" + bytes(1536))
        raw.recv(4096)  # wait for the server to answer (a TLS alert) or hang up
    wait_for(lambda: "TLS handshake failed" in edge.log(), 10, "the failed TLS handshake in the log")
