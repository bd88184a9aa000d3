"""CA fingerprints and SECRET.FINGERPRINT tokens, as both the edge and the controller check them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from edged.common.fingerprint import ca_matching, fingerprint_der, fingerprint_pem, parse_token
from originctl.server.enrollment import CertificateAuthority


def test_parse_token() -> None:
    fp = "0f" * 16
    assert parse_token(f" sec.ret.{fp}\n") == ("sec.ret", fp)
    for bad in ("", fp, f".{fp}", "secret." + "0F" * 16, "secret." + "0f" * 15, "secret"):
        assert parse_token(bad) is None, bad


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(Path(tmp_path_factory.mktemp("ca")))


def test_fingerprint_and_matching(ca: CertificateAuthority) -> None:
    der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.decode())
    assert fingerprint_pem(ca.cert_pem) == fingerprint_der(der) == ca.fingerprint and len(ca.fingerprint) == 32
    _, chain_pem = ca.issue_server([])
    chain = [ssl.PEM_cert_to_DER_cert(c + "-----END CERTIFICATE-----\n")
             for c in chain_pem.decode().split("-----END CERTIFICATE-----\n") if c.strip()]
    assert len(chain) == 2
    found = ca_matching(chain, ca.fingerprint)
    assert found is not None and fingerprint_pem(found) == ca.fingerprint
    assert ca_matching(chain, "0" * 32) is None
