"""CORS for pages on other origins, over real HTTP against `cutover serve`: preflights
and `Access-Control-Allow-Origin` for the allowed origins only, on the endpoints a
browser calls (tickets, GraphQL, parity beacons)."""

from __future__ import annotations

import httpx

APP = "http://app.example"
EVIL = "http://evil.example"


async def test_cors_for_the_allowed_origins_only(make_server):
    server = make_server("--allowed-origins", f"{APP},http://other.example")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    token = server.token("cors-user")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for path in ("/graphql", "/realtime/tickets", "/realtime/parity"):
            ok = await http.options(path, headers={"Origin": APP, **preflight})
            assert ok.status_code == 204, path
            assert ok.headers["access-control-allow-origin"] == APP
            assert ok.headers["access-control-allow-methods"] == "POST"
            assert ok.headers["access-control-allow-headers"] == "Authorization, Content-Type"
            assert "origin" in ok.headers["vary"].lower()
            refused = await http.options(path, headers={"Origin": EVIL, **preflight})
            assert refused.status_code == 403, path
            assert "access-control-allow-origin" not in refused.headers
        answered = await http.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Origin": APP, "Authorization": f"Bearer {token}"},
        )
        unauthorized = await http.post("/realtime/tickets", headers={"Origin": APP})
        ticket = await http.post(
            "/realtime/tickets", headers={"Origin": APP, "Authorization": f"Bearer {token}"}
        )
        evil = await http.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Origin": EVIL, "Authorization": f"Bearer {token}"},
        )
        publish = await http.options("/realtime/events", headers={"Origin": APP, **preflight})
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == APP
    assert answered.json()["data"]["me"]["id"] == "cors-user"
    assert unauthorized.status_code == 401, "errors carry the header too, so the page can read them"
    assert unauthorized.headers["access-control-allow-origin"] == APP
    assert "Retry-After" in unauthorized.headers["access-control-expose-headers"]
    assert ticket.status_code == 201 and ticket.headers["access-control-allow-origin"] == APP
    assert evil.status_code == 200, (
        "a non-browser client is served, but a browser gets nothing to read"
    )
    assert "access-control-allow-origin" not in evil.headers
    assert "access-control-allow-origin" not in publish.headers, "the publish API is for backends"


async def test_no_cors_without_an_allow_list(make_server):
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        preflight = await http.options(
            "/graphql", headers={"Origin": APP, "Access-Control-Request-Method": "POST"}
        )
        post = await http.post("/graphql", json={"query": "{ me { id } }"}, headers={"Origin": APP})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in post.headers
