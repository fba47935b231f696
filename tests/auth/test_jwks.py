"""Verification against a JWKS document served by a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import jwks_client
from jwt.algorithms import RSAAlgorithm

from gateway.auth import AuthConfig, Authenticator, mint_token
from gateway.errors import TokenExpired, Unauthorized


def _pem_private(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class JwksServer:
    """A tiny HTTP server answering GET /jwks.json with the keys it holds."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def add_key(self, private_key, kid: str) -> None:
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_server(signing_key):
    server = JwksServer()
    server.add_key(signing_key, "k1")
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


def _token(key, kid: str, **kwargs) -> str:
    token = mint_token(_pem_private(key), "jwks-user", algorithm="RS256", **kwargs)
    # Re-sign with a kid header: mint_token does not set one.
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, _pem_private(key), algorithm="RS256", headers={"kid": kid})


def test_jwks_token_is_verified_and_keys_are_cached(jwks_server, signing_key):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks_server.url))
    assert auth.blocking
    assert auth.verify(_token(signing_key, "k1")).user_id == "jwks-user"
    assert auth.verify(_token(signing_key, "k1", admin=True)).is_admin
    assert jwks_server.fetches == 1


def test_jwks_unknown_kid_and_foreign_signer_are_refused(jwks_server, signing_key):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks_server.url))
    with pytest.raises(Unauthorized):
        auth.verify(_token(signing_key, "no-such-kid"))
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="signature"):
        auth.verify(_token(impostor, "k1"))


def test_jwks_rotation_picks_up_a_new_key_after_the_cooldown(jwks_server, signing_key, monkeypatch):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks_server.url))
    assert auth.verify(_token(signing_key, "k1")).user_id == "jwks-user"
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks_server.add_key(rotated, "k2")
    # Right after a fetch, an unknown kid does not make the node hammer the JWKS endpoint.
    with pytest.raises(Unauthorized, match="k2"):
        auth.verify(_token(rotated, "k2"))
    assert jwks_server.fetches == 1
    later = time.monotonic() + 31
    monkeypatch.setattr(jwks_client, "time", SimpleNamespace(monotonic=lambda: later))
    assert auth.verify(_token(rotated, "k2")).user_id == "jwks-user"
    assert jwks_server.fetches == 2


def test_unreachable_jwks_is_unauthorized():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens on the port any more
    auth = Authenticator(
        AuthConfig(algorithms=("RS256",), jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized) as info:
        auth.verify(_token(key, "k1"))
    assert not isinstance(info.value, TokenExpired)


async def test_verify_async_fetches_in_a_worker_thread(jwks_server, signing_key):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks_server.url))
    with trio.fail_after(10):
        principal = await auth.bearer_async(f"Bearer {_token(signing_key, 'k1')}")
        assert principal.user_id == "jwks-user"
        with pytest.raises(TokenExpired):
            await auth.verify_async(_token(signing_key, "k1", ttl_s=-30))
    assert jwks_server.fetches == 1
    assert auth.jwks_limiter.borrowed_tokens == 0


def test_static_key_and_jwks_together(jwks_server, signing_key):
    static = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    static_pem = (
        static.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = Authenticator(
        AuthConfig(algorithms=("RS256",), public_key=static_pem, jwks_url=jwks_server.url)
    )
    no_kid = mint_token(_pem_private(static), "static-user", algorithm="RS256")
    assert auth.verify(no_kid).user_id == "static-user"
    assert jwks_server.fetches == 0
    assert auth.verify(_token(signing_key, "k1")).user_id == "jwks-user"
    assert jwks_server.fetches == 1


def test_tokens_verified_against_a_jwks_are_not_kept(jwks_server, signing_key):
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks_server.url))
    assert auth.verify(_token(signing_key, "k1")).user_id == "jwks-user"
    assert len(auth.verified) == 0  # a key taken out of the set must end its tokens at once
