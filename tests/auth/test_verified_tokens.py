"""The cache of verified tokens: a hit skips the signature check, never at or past
the token's `exp` plus the leeway; bounded, least recently used out first; a
token that fails is never kept; another token never reads an entry not its own;
safe from several threads. (Off with a JWKS: `test_jwks.py`.)"""

from __future__ import annotations

import threading
import time

import jwt
import pytest

from gateway.auth import AuthConfig, Authenticator, Principal, VerifiedTokens, mint_token
from gateway.errors import TokenExpired, Unauthorized

SECRET = "s3cret-for-tests-only-0123456789abcdef"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _principal(user: str, expires_at: float = 2_000.0) -> Principal:
    return Principal(user_id=user, expires_at=expires_at)


def test_an_entry_is_never_returned_at_or_past_its_end():
    clock = Clock(1_000.0)
    tokens = VerifiedTokens(clock=clock)
    alice = _principal("alice")
    tokens.put("t-alice", alice, until=1_010.0)
    assert tokens.get("t-alice") is alice
    clock.now = 1_009.999
    assert tokens.get("t-alice") is alice
    clock.now = 1_010.0
    assert tokens.get("t-alice") is None
    assert len(tokens) == 0  # dropped when looked at
    clock.now = 1_000.0
    assert tokens.get("t-alice") is None  # gone for good


def test_the_least_recently_used_goes_first_past_the_bound():
    tokens = VerifiedTokens(max_entries=3, clock=Clock(0.0))
    for n in range(3):
        tokens.put(f"t{n}", _principal(f"u{n}"), until=10.0)
    assert tokens.get("t0") is not None  # t1 is now the least recently used
    tokens.put("t3", _principal("u3"), until=10.0)
    assert len(tokens) == 3
    assert tokens.get("t1") is None
    assert [tokens.get(f"t{n}").user_id for n in (0, 2, 3)] == ["u0", "u2", "u3"]


def test_another_token_never_hits_an_entry_not_its_own():
    tokens = VerifiedTokens(clock=Clock(0.0))
    tokens.put("header.claims.signature", _principal("alice"), until=10.0)
    for other in ("header.claims.signaturf", "header.claims.signatur", " header.claims.signature"):
        assert tokens.get(other) is None


def test_a_verified_token_is_kept_until_exp_plus_the_leeway():
    clock = Clock(time.time())
    auth = Authenticator(AuthConfig(secret=SECRET, leeway_s=30), VerifiedTokens(clock=clock))
    token = mint_token(SECRET, "alice", ttl_s=600)
    first = auth.verify(token)
    assert len(auth.verified) == 1
    assert auth.verify(f"  {token} ") is first  # a hit: the same principal
    clock.now = first.expires_at + 30 - 0.001
    assert auth.verify(token) is first
    clock.now = first.expires_at + 30
    assert auth.verified.get(token) is None  # its end: never used from here on


def test_a_hit_skips_the_signature_check(monkeypatch):
    auth = Authenticator(AuthConfig(secret=SECRET))
    token = mint_token(SECRET, "alice")
    principal = auth.verify(token)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(jwt, "decode", no_decode)
    assert auth.verify(token) is principal
    with pytest.raises(AssertionError, match="decoded again"):
        auth.verify(mint_token(SECRET, "bob"))  # another token: verified in full


def test_tokens_that_fail_are_never_kept():
    auth = Authenticator(AuthConfig(secret=SECRET))
    failing = [
        (mint_token(SECRET, "alice", ttl_s=-10), TokenExpired),
        (mint_token("another-secret-of-sufficient-length!", "alice"), Unauthorized),
        (jwt.encode({"sub": "a/b", "aud": "cutover", "exp": 2**40}, SECRET), Unauthorized),
        ("not-a-jwt", Unauthorized),
    ]
    for token, error in failing:
        for _ in range(2):
            with pytest.raises(error):
                auth.verify(token)
    assert len(auth.verified) == 0
    alice = mint_token(SECRET, "alice")
    auth.verify(alice)
    flipped = "B" if alice[-10] == "A" else "A"  # a signature character carrying 6 bits
    tampered = alice[:-10] + flipped + alice[-9:]
    with pytest.raises(Unauthorized):
        auth.verify(tampered)
    assert len(auth.verified) == 1


def test_safe_from_several_threads():
    tokens = VerifiedTokens(max_entries=64, clock=Clock(0.0))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2_000):
                token = f"t{n}-{i % 100}"
                tokens.put(token, _principal(token), until=10.0)
                found = tokens.get(token)
                assert found is None or found.user_id == token
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(tokens) == 64
