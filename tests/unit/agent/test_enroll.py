"""The edge identity on disk, its key and CSR, and the token format."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from edged.agent import enroll
from edged.agent.errors import EnrollmentError


def test_identity_round_trip_and_modes(tmp_path: Path) -> None:
    assert enroll.load_identity(tmp_path) is None
    key, csr = enroll.new_key_and_csr("edge-1")
    ident = enroll.Identity(node_id="nd-1", key_pem=key, cert_pem=b"CERT", ca_pem=b"CA", origin="127.0.0.1:1",
                            edge_port=2, site="ams")
    enroll.save_identity(tmp_path, ident)
    d = enroll.identity_dir(tmp_path)
    assert stat.S_IMODE((d / "node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    loaded = enroll.load_identity(tmp_path)
    assert loaded is not None and loaded.enrolled_unix > 0
    assert (loaded.node_id, loaded.key_pem, loaded.cert_pem, loaded.ca_pem, loaded.origin, loaded.edge_port,
            loaded.site) == ("nd-1", key, b"CERT", b"CA", "127.0.0.1:1", 2, "ams")


def test_damaged_identity_says_what_to_do(tmp_path: Path) -> None:
    enroll.save_identity(tmp_path, enroll.Identity("nd-1", b"k", b"c", b"a", "h:1", 2))
    (enroll.identity_dir(tmp_path) / "node.crt").unlink()
    with pytest.raises(EnrollmentError, match="damaged.*enroll again"):
        enroll.load_identity(tmp_path)


def test_csr_is_valid_and_self_signed() -> None:
    _, csr_pem = enroll.new_key_and_csr("x" * 100)
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid


@pytest.mark.parametrize("bad", ["", "abc", "x.y", "s." + "G" * 32])
def test_malformed_tokens_are_permanent_errors(bad: str) -> None:
    with pytest.raises(EnrollmentError, match="malformed"):
        enroll.split_token(bad)


def test_token_split() -> None:
    assert enroll.split_token(" sec.ret." + "0f" * 16 + "\n") == ("sec.ret", "0f" * 16)
