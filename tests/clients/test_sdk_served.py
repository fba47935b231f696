"""The browser SDK served by every node at /client/cutover.js, over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

SDK = Path(__file__).resolve().parents[2] / "clients" / "js" / "cutover.js"
EVIL = "http://evil.example"


async def test_the_sdk_is_served_to_any_origin_with_a_validator(make_server):
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        sdk = await http.get("/client/cutover.js", headers={"Origin": EVIL})
        again = await http.get("/client/cutover.js", headers={"If-None-Match": sdk.headers["etag"]})
        types = await http.get("/client/cutover.d.ts")
        other = await http.get("/client/secrets.js")
    assert sdk.status_code == 200
    assert sdk.headers["content-type"] == "text/javascript; charset=utf-8"
    assert sdk.content == SDK.read_bytes()
    assert sdk.headers["access-control-allow-origin"] == "*"
    assert again.status_code == 304 and again.content == b""
    assert types.status_code == 200 and b"export function createClient" in types.content
    assert other.status_code == 404 and other.json()["error"]["code"] == "NOT_FOUND"
