"""JWT verification: the accepted tokens, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import AuthConfig, Authenticator, Principal, mint_token
from gateway.config import ConfigError
from gateway.errors import TokenExpired, Unauthorized

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token assembled without PyJWT, so nothing refuses to build it."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "u1", "aud": "cutover", "iat": now, "exp": now + 600, **extra}


def _pem_private(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_public(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hs() -> Authenticator:
    return Authenticator(AuthConfig(secret=SECRET))


def test_valid_hs256_token_gives_its_principal(hs):
    token = mint_token(SECRET, "alice", name="Alice", tenant="acme", scopes=["read", "write"])
    principal = hs.verify(token)
    assert principal.user_id == "acme/alice"  # a tenant's users live in its own namespace
    assert principal.subject == "alice"
    assert principal.name == "Alice"
    assert principal.tenant == "acme"
    assert principal.scopes == frozenset({"read", "write"})
    assert not principal.is_admin
    assert principal.token == token
    assert principal.expires_at == pytest.approx(time.time() + 3600, abs=5)


def test_admin_scope_is_parsed(hs):
    principal = hs.verify(mint_token(SECRET, "root", admin=True))
    assert principal.is_admin
    assert "admin" in principal.scopes


def test_scopes_list_claim_is_merged_with_scope_string(hs):
    token = jwt.encode(_claims(scope="read admin", scopes=["export"]), SECRET, algorithm="HS256")
    assert hs.verify(token).scopes == frozenset({"read", "admin", "export"})


def test_expired_token_is_token_expired(hs):
    token = mint_token(SECRET, "alice", ttl_s=-10)
    with pytest.raises(TokenExpired, match="expired"):
        hs.verify(token)


def test_leeway_accepts_a_just_expired_token():
    auth = Authenticator(AuthConfig(secret=SECRET, leeway_s=60))
    assert auth.verify(mint_token(SECRET, "alice", ttl_s=-10)).user_id == "alice"


def test_wrong_signature_is_unauthorized_not_expired(hs):
    token = mint_token("another-secret-of-sufficient-length!", "alice")
    with pytest.raises(Unauthorized, match="signature") as info:
        hs.verify(token)
    assert not isinstance(info.value, TokenExpired)


def test_expired_token_with_a_wrong_signature_is_unauthorized(hs):
    token = mint_token("another-secret-of-sufficient-length!", "alice", ttl_s=-10)
    with pytest.raises(Unauthorized) as info:
        hs.verify(token)
    assert not isinstance(info.value, TokenExpired)


def test_alg_none_token_is_refused(hs):
    token = _hand_made({"alg": "none", "typ": "JWT"}, _claims())
    with pytest.raises(Unauthorized, match="'none' is not accepted"):
        hs.verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_none_is_refused_in_configuration(alg):
    with pytest.raises(ConfigError, match="none"):
        AuthConfig(secret=SECRET, algorithms=("HS256", alg))


def test_mixing_hmac_and_asymmetric_is_refused_in_configuration(rsa_key):
    with pytest.raises(ConfigError, match="mixes"):
        AuthConfig(secret=SECRET, public_key=_pem_public(rsa_key), algorithms=("HS256", "RS256"))


def test_configuration_needs_a_key_for_its_algorithms():
    with pytest.raises(ConfigError, match="secret"):
        AuthConfig(secret=None)
    with pytest.raises(ConfigError, match="public key"):
        AuthConfig(secret=SECRET, algorithms=("RS256",))


def test_algorithm_confusion_hs256_with_the_public_key_is_refused(rsa_key):
    public_pem = _pem_public(rsa_key)
    auth = Authenticator(AuthConfig(algorithms=("RS256",), public_key=public_pem))
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims()).encode())}".encode()
    )
    signature = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    token = f"{signing_input.decode()}.{_b64(signature)}"
    with pytest.raises(Unauthorized, match="'HS256' is not accepted"):
        auth.verify(token)
    # The real RS256 token for the same claims is accepted: the refusal is the algorithm.
    good = jwt.encode(_claims(), _pem_private(rsa_key), algorithm="RS256")
    assert auth.verify(good).user_id == "u1"


def test_wrong_audience_is_refused(hs):
    token = mint_token(SECRET, "alice", audience="someone-else")
    with pytest.raises(Unauthorized, match="audience"):
        hs.verify(token)


def test_missing_audience_is_refused_when_configured(hs):
    token = mint_token(SECRET, "alice", audience=None)
    with pytest.raises(Unauthorized, match="'aud'"):
        hs.verify(token)


def test_audience_is_not_checked_when_not_configured():
    auth = Authenticator(AuthConfig(secret=SECRET, audience=None))
    assert auth.verify(mint_token(SECRET, "alice", audience="anything")).user_id == "alice"
    assert auth.verify(mint_token(SECRET, "bob", audience=None)).user_id == "bob"


def test_issuer_is_checked_when_configured():
    auth = Authenticator(AuthConfig(secret=SECRET, issuer="https://id.example"))
    assert auth.verify(mint_token(SECRET, "a", issuer="https://id.example")).user_id == "a"
    with pytest.raises(Unauthorized, match="issuer"):
        auth.verify(mint_token(SECRET, "a", issuer="https://evil.example"))
    with pytest.raises(Unauthorized, match="'iss'"):
        auth.verify(mint_token(SECRET, "a"))


def test_issuer_is_ignored_when_not_configured(hs):
    assert hs.verify(mint_token(SECRET, "a", issuer="https://any.example")).user_id == "a"


def test_missing_exp_is_refused(hs):
    claims = _claims()
    del claims["exp"]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="'exp'"):
        hs.verify(token)


def test_missing_or_empty_sub_is_refused(hs):
    claims = _claims()
    del claims["sub"]
    with pytest.raises(Unauthorized, match="'sub'"):
        hs.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    with pytest.raises(Unauthorized, match="sub"):
        hs.verify(jwt.encode(_claims(sub=""), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "token",
    ["", "   ", "garbage", "a.b", "a.b.c", "x" * 20_000, "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig"],
)
def test_malformed_tokens_are_unauthorized(hs, token):
    with pytest.raises(Unauthorized) as info:
        hs.verify(token)
    assert not isinstance(info.value, TokenExpired)
    assert info.value.code == "UNAUTHORIZED"


def test_bearer_parses_the_authorization_header(hs):
    token = mint_token(SECRET, "alice")
    assert hs.bearer(f"Bearer {token}").user_id == "alice"
    assert hs.bearer(f"bearer   {token} ").user_id == "alice"
    for bad in (None, "", "Bearer", "Bearer ", f"Basic {token}", token):
        with pytest.raises(Unauthorized):
            hs.bearer(bad)


def test_rs256_with_a_pem_public_key(rsa_key):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), public_key=_pem_public(rsa_key)))
    token = mint_token(_pem_private(rsa_key), "carol", algorithm="RS256", admin=True)
    principal = auth.verify(token)
    assert principal.user_id == "carol" and principal.is_admin
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="signature"):
        auth.verify(mint_token(_pem_private(other), "carol", algorithm="RS256"))


def test_public_key_may_be_a_pem_file(tmp_path, rsa_key):
    path = tmp_path / "key.pem"
    path.write_text(_pem_public(rsa_key))
    auth = Authenticator(AuthConfig(algorithms=("RS256",), public_key=str(path)))
    assert auth.verify(mint_token(_pem_private(rsa_key), "dan", algorithm="RS256")).user_id == "dan"


def test_unusable_public_key_is_a_configuration_error():
    with pytest.raises(ConfigError, match="jwt_public_key"):
        Authenticator(AuthConfig(algorithms=("RS256",), public_key="-----BEGIN PUBLIC KEY-----\nx"))


def test_es256_with_a_pem_public_key(ec_key, rsa_key):
    auth = Authenticator(AuthConfig(algorithms=("ES256",), public_key=_pem_public(ec_key)))
    token = mint_token(_pem_private(ec_key), "erin", algorithm="ES256")
    assert auth.verify(token).user_id == "erin"
    # An RS256 token is refused by an ES256-only configuration, whoever signed it.
    with pytest.raises(Unauthorized, match="'RS256' is not accepted"):
        auth.verify(mint_token(_pem_private(rsa_key), "erin", algorithm="RS256"))


async def test_verify_async_without_jwks_verifies_inline(hs):
    assert not hs.blocking
    principal = await hs.verify_async(mint_token(SECRET, "alice"))
    assert principal.user_id == "alice"
    assert (await hs.bearer_async(f"Bearer {mint_token(SECRET, 'bob')}")).user_id == "bob"
    with pytest.raises(TokenExpired):
        await hs.verify_async(mint_token(SECRET, "alice", ttl_s=-5))


def test_principal_claims_round_trip():
    principal = Principal("t/u", frozenset({"a", "admin"}), "t", "N", 123.0, token="tok")
    again = Principal.from_claims(principal.to_claims())
    assert again == Principal("t/u", frozenset({"a", "admin"}), "t", "N", 123.0)
    assert "tok" not in repr(principal)


def test_mint_token_refuses_to_mint_unsigned_tokens():
    with pytest.raises(ValueError, match="unsigned"):
        mint_token(SECRET, "alice", algorithm="none")


def test_mint_token_never_rounds_a_short_ttl_down_to_expired():
    token = mint_token(SECRET, "alice", ttl_s=0.5, now=1_800_000_000.25)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == 1_800_000_001
    assert claims["iat"] == 1_800_000_000


def test_a_subject_cannot_pose_as_a_tenant_user(hs):
    with pytest.raises(Unauthorized, match="must not contain"):
        hs.verify(mint_token(SECRET, "acme/alice"))
