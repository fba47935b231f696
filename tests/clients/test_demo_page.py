"""The demo page over real HTTP: off on `cutover serve` unless `--demo-page`; with
it, the page, its script and short tokens for the demo users only."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_page_is_off_unless_enabled(make_server):
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        page = await http.get("/demo")
        token = await http.post("/demo/token", json={"user": "alice"})
    assert page.status_code == 404
    assert token.status_code == 404


async def test_the_demo_page_and_its_tokens_when_enabled(make_server):
    server = make_server("--demo-page")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        page = await http.get("/demo")
        script = await http.get("/demo/demo.js")
        token = await http.post("/demo/token", json={"user": "bob", "ttlS": 1})
        stranger = await http.post("/demo/token", json={"user": "mallory"})
        broken = await http.post("/demo/token", content=b"[")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/demo/demo.js"' in page.text
    assert 'from "/client/cutover.js"' in script.text
    claims = jwt.decode(
        token.json()["token"], server.secret, algorithms=["HS256"], audience="cutover"
    )
    assert claims["sub"] == "bob" and 5 <= claims["exp"] - claims["iat"] <= 6, "clamped to 5 s"
    assert stranger.status_code == 400 and stranger.json()["error"]["path"] == "user"
    assert broken.status_code == 400


def test_the_demo_banner_teaches_tickets_and_where_the_secret_is(tmp_path, monkeypatch):
    from gateway.config import Settings
    from gateway.demo import banner, prepare

    monkeypatch.chdir(tmp_path)
    settings = Settings(demo=True, bind="127.0.0.1:8090")
    prepare(settings)
    text = banner(settings, {"event": "gth_1"})
    assert "http://127.0.0.1:8090/demo?user=alice" in text
    assert "POST http://127.0.0.1:8090/realtime/tickets" in text
    assert "ws://127.0.0.1:8090/ws?ticket=<ticket>" in text
    assert "?token=" not in text, "the legacy handshake is not what a newcomer should copy"
    assert "cutover token USER --demo" in text and "var/cutover-demo.secret" in text
    assert settings.demo_page and settings.parity_sample_rate == 1.0
    assert (tmp_path / "var" / "cutover-demo-rollout.toml").is_file()
    again = Settings(demo=True)
    prepare(again)
    assert again.jwt_secret == settings.jwt_secret, "the secret outlives a restart of the demo"


@pytest.mark.slow
def test_cutover_token_signs_with_the_demo_secret(tmp_path):
    import subprocess
    import sys

    def token(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "token", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            timeout=60,
        )

    missing = token("alice", "--demo")
    assert missing.returncode == 2 and "run `cutover demo`" in missing.stderr
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "cutover-demo.secret").write_text("demo-secret-0123456789abcdef0123\n")
    minted = token("alice", "--demo", "--ttl", "60")
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(
        minted.stdout.strip(),
        "demo-secret-0123456789abcdef0123",
        algorithms=["HS256"],
        audience="cutover",
    )
    assert claims["sub"] == "alice"
    plain = token("alice")
    assert plain.returncode == 2 and "--demo" in plain.stderr
