"""TokenIssuer and the pure helpers of the data plane's token check."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth import jwt

from tgi_operator.emulator.dataplane import bearer_token, service_audiences
from tgi_operator.emulator.identity import GOOGLE_ISSUER, InvalidToken, TokenIssuer, subject_for_email

URL = "http://127.0.0.1:40001"
EMAIL = "invoker@p.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


def test_minted_token_has_googles_shape(issuer: TokenIssuer) -> None:
    token = issuer.mint(EMAIL, URL, lifetime_s=600)
    header = jwt.decode_header(token)
    claims = jwt.decode(token, verify=False)
    assert header == {"alg": "RS256", "kid": issuer.kid, "typ": "JWT"}
    assert claims["iss"] == GOOGLE_ISSUER
    assert claims["aud"] == URL
    assert claims["email"] == EMAIL and claims["email_verified"] is True
    assert claims["sub"] == claims["azp"] == subject_for_email(EMAIL)
    assert claims["exp"] - claims["iat"] == 600


def test_verify_returns_the_email(issuer: TokenIssuer) -> None:
    assert issuer.verify(issuer.mint(EMAIL, URL), URL) == EMAIL
    assert issuer.verify(issuer.mint(EMAIL, URL + "/"), service_audiences(URL)) == EMAIL


@pytest.mark.parametrize(
    "make_token, audience",
    [
        pytest.param(lambda i: i.mint(EMAIL, "http://127.0.0.1:40002"), URL, id="other audience"),
        pytest.param(lambda i: i.mint(EMAIL, URL, lifetime_s=-60), URL, id="expired"),
        pytest.param(lambda i: TokenIssuer().mint(EMAIL, URL), URL, id="other signer"),
        pytest.param(lambda i: i.mint(EMAIL, URL)[:-6] + "AAAAAA", URL, id="tampered signature"),
        pytest.param(lambda i: "not-a-jwt", URL, id="garbage"),
        pytest.param(lambda i: "ya29.an-access-token", URL, id="access token"),
    ],
)
def test_verify_refuses(issuer: TokenIssuer, make_token, audience: str) -> None:
    with pytest.raises(InvalidToken):
        issuer.verify(make_token(issuer), audience)


def test_key_round_trips_through_pem(issuer: TokenIssuer) -> None:
    token = issuer.mint(EMAIL, URL)
    restored = TokenIssuer(issuer.key_pem())
    assert restored.kid == issuer.kid
    assert restored.verify(token, URL) == EMAIL


def test_jwks_holds_the_verifying_key(issuer: TokenIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert key["kid"] == issuer.kid and key["alg"] == "RS256"

    def uint(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    public = rsa.RSAPublicNumbers(uint(key["e"]), uint(key["n"])).public_key()
    token = issuer.mint(EMAIL, URL)
    signed, _, signature = token.rpartition(".")
    public.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        signed.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_pem_certs_verify_with_google_auth(issuer: TokenIssuer) -> None:
    token = issuer.mint(EMAIL, URL)
    assert jwt.decode(token, certs=issuer.pem_certs(), audience=URL)["email"] == EMAIL


@pytest.mark.parametrize("bad", ["", None])
def test_mint_needs_email_and_audience(issuer: TokenIssuer, bad) -> None:
    with pytest.raises(ValueError):
        issuer.mint(bad, URL)
    with pytest.raises(ValueError):
        issuer.mint(EMAIL, bad)


def test_subject_is_stable_numeric_and_distinct() -> None:
    first = subject_for_email("a@p.iam.gserviceaccount.com")
    assert first == subject_for_email("a@p.iam.gserviceaccount.com")
    assert first.isdigit() and len(first) == 21
    assert first != subject_for_email("b@p.iam.gserviceaccount.com")


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, ""),
        ({"Authorization": "Bearer "}, ""),
        ({"X-Serverless-Authorization": "Bearer id", "Authorization": "Bearer app"}, "id"),
        ({"Authorization": "Bearer app"}, "app"),
    ],
)
def test_bearer_token(headers: dict[str, str], expected: str | None) -> None:
    assert bearer_token(headers) == expected


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5", "http://127.0.0.1:5/"])
def test_service_audiences_accept_both_slash_forms(uri: str) -> None:
    assert service_audiences(uri) == ["http://127.0.0.1:5", "http://127.0.0.1:5/"]
