"""TokenVerifier: EdDSA/ES256/RS256 tokens minted with real keys, and every way a token is refused."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edged.chat.identity import (
    BadKey,
    InvalidToken,
    TokenVerifier,
    key_id,
    load_public_key,
    mint,
    split_pem_bundle,
)
from edged.chat.model import Chatter


def public_pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


ED = ed25519.Ed25519PrivateKey.generate()
EC = ec.generate_private_key(ec.SECP256R1())
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("key", [ED, EC, RSA], ids=["EdDSA", "ES256", "RS256"])
def test_each_algorithm_verifies_to_the_chatter_its_claims_name(key: object) -> None:
    token = mint(key, user_id="1234", login="Alice_1", display_name="Alice", roles=["moderator", "vip", "wizard"],
                 now=time.time(), color="#FF0000")
    chatter = TokenVerifier([public_pem(key)]).verify(token)  # type: ignore[arg-type]
    assert chatter == Chatter(user_id="1234", login="alice_1", display_name="Alice",
                              roles=frozenset({"moderator", "vip"}), color="#FF0000")
    assert chatter.is_moderator and not chatter.anonymous


def test_display_name_defaults_to_the_login_and_roles_to_none() -> None:
    token = mint(ED, user_id="9", login="bob", now=time.time())
    assert TokenVerifier([public_pem(ED)]).verify(token) == Chatter(user_id="9", login="bob", display_name="bob")


def test_expired_token_is_refused_but_skew_within_the_leeway_is_not() -> None:
    v = TokenVerifier([public_pem(ED)])
    old = mint(ED, user_id="1", login="a", now=time.time() - 3600, ttl_seconds=60)
    with pytest.raises(InvalidToken, match="expired"):
        v.verify(old)
    just = mint(ED, user_id="1", login="a", now=time.time() - 70, ttl_seconds=60)  # 10 s past exp
    assert v.verify(just).login == "a"


def test_token_from_an_untrusted_key_is_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    token = mint(other, user_id="1", login="a", now=time.time())
    with pytest.raises(InvalidToken, match="no trusted EdDSA key|matches no trusted key"):
        TokenVerifier([public_pem(ED)]).verify(token)


def test_without_a_kid_every_key_of_the_type_is_tried() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode({"sub": "7", "login": "carol", "exp": int(time.time()) + 60}, ED, algorithm="EdDSA")
    assert TokenVerifier([public_pem(other), public_pem(ED)]).verify(token).user_id == "7"


def test_a_token_whose_algorithm_does_not_fit_the_key_is_refused() -> None:
    # the classic confusion: HS256 with the public key's bytes as the shared secret
    hs = jwt.encode({"sub": "1", "login": "a", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken, match="HS256"):
        TokenVerifier([public_pem(ED)]).verify(hs)
    es_claiming = mint(EC, user_id="1", login="a", now=time.time())
    with pytest.raises(InvalidToken, match="no trusted ES256 key"):
        TokenVerifier([public_pem(ED)]).verify(es_claiming)


@pytest.mark.parametrize("claims, reason", [
    ({"login": "a"}, "sub"),
    ({"sub": "", "login": "a"}, "sub"),
    ({"sub": "1"}, "login"),
    ({"sub": "1", "login": "has space"}, "login"),
    ({"sub": "1", "login": "x" * 26}, "login"),
    ({"sub": "1", "login": "a", "roles": "moderator"}, "roles"),
    ({"sub": "1", "login": "a", "display_name": 5}, "display_name"),
])
def test_unusable_claims_are_refused(claims: dict[str, object], reason: str) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, ED, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match=reason):
        TokenVerifier([public_pem(ED)]).verify(token)


def test_a_token_without_exp_is_refused() -> None:
    token = jwt.encode({"sub": "1", "login": "a"}, ED, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="exp"):
        TokenVerifier([public_pem(ED)]).verify(token)


def test_a_token_not_valid_yet_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "1", "login": "a", "nbf": now + 600, "exp": now + 900}, ED, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="not valid yet"):
        TokenVerifier([public_pem(ED)]).verify(token)


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "x" * 10_000])
def test_junk_is_refused(junk: str) -> None:
    with pytest.raises(InvalidToken):
        TokenVerifier([public_pem(ED)]).verify(junk)


def test_without_keys_every_token_is_refused_until_keys_arrive() -> None:
    v = TokenVerifier()
    token = mint(ED, user_id="1", login="a", now=time.time())
    assert not v.has_keys
    with pytest.raises(InvalidToken, match="no token verification keys"):
        v.verify(token)
    v.update_keys([public_pem(ED)])
    assert v.verify(token).login == "a"
    v.update_keys([])  # replaced, not merged
    with pytest.raises(InvalidToken):
        v.verify(token)


def test_bad_pems_are_skipped_and_the_rest_still_verify() -> None:
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    v = TokenVerifier([b"not a pem", public_pem(small_rsa), public_pem(p384), public_pem(ED), public_pem(ED)])
    assert [k.kid for k in v.keys] == [key_id(ED.public_key())]  # duplicates collapse
    with pytest.raises(BadKey, match="2048"):
        load_public_key(public_pem(small_rsa))
    with pytest.raises(BadKey, match="P-256"):
        load_public_key(public_pem(p384))


def test_a_bundle_splits_into_its_pem_blocks() -> None:
    bundle = public_pem(ED) + b"\n# comment\n" + public_pem(EC) + public_pem(RSA).rstrip(b"\n")
    blocks = split_pem_bundle(bundle)
    assert [load_public_key(b).algorithm for b in blocks] == ["EdDSA", "ES256", "RS256"]


def test_an_rs256_token_fits_the_irc_pass_line_in_both_forms() -> None:
    from edged.chat.identity import case_safe_token
    from edged.protocols.irc.framing import LineBuffer

    token = mint(RSA, user_id="1", login="alice", display_name="Alice", roles=("moderator", "subscriber"),
                 ttl_seconds=3600, now=time.time())
    for form in (token, case_safe_token(token)):
        assert len(form) > 512
        buf = LineBuffer()
        buf.feed(f"PASS oauth:{form}\r\n".encode())
        [msg] = buf.messages()
        assert msg.params[0] == f"oauth:{form}"
