"""What the gateway serves to browsers: the SDK and, where enabled, the demo page.

- `GET /client/cutover.js` (and `cutover.d.ts`): the browser SDK of
  `clients/js/`, one ES module any origin may import (a public static file:
  `Access-Control-Allow-Origin: *`), with an ETag so browsers revalidate.
- `GET /demo` and its assets (`clients/js/demo/`), with `POST /demo/token`
  minting short tokens for the demo users, only when `--demo-page` is on
  (`cutover demo` turns it on) and the node signs with an HS256 secret;
  elsewhere these paths answer 404 like any unknown one.

The files are read from the source tree (`clients/js/`), once, at start-up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response, request

from gateway.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["CLIENT_DIR", "DEMO_TOKEN_MAX_TTL_S", "Asset", "install"]

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "js"
DEMO_TOKEN_MIN_TTL_S = 5
DEMO_TOKEN_MAX_TTL_S = 86_400

TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}


@attrs.frozen
class Asset:
    """A static file held in memory with its validator."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        kind = TYPES.get("".join(path.suffixes[-1:]), "application/octet-stream")
        return cls(body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def response(self, *, public: bool = False) -> Response:
        if self.etag in (request.headers.get("if-none-match") or ""):
            response = Response(b"", status=304)
        else:
            response = Response(self.body, content_type=self.content_type)
        response.headers["ETag"] = self.etag
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if public:
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response


def _assets(directory: Path, names: tuple[str, ...]) -> dict[str, Asset]:
    return {name: Asset.read(directory / name) for name in names if (directory / name).is_file()}


def install(app: Any, settings: Settings) -> None:
    """Add the SDK's routes, and the demo page's when it is enabled, to `app`."""
    sdk = _assets(CLIENT_DIR, ("cutover.js", "cutover.d.ts"))

    @app.get("/client/<name>")
    async def client_file(name: str) -> Response:
        asset = sdk.get(name)
        if asset is None:
            raise NotFound("no such client file (the SDK is clients/js/cutover.js)")
        return asset.response(public=True)

    if not settings.demo_page:
        return
    demo = _assets(CLIENT_DIR / "demo", ("index.html", "demo.js", "demo.css"))

    @app.get("/demo")
    async def demo_page() -> Response:
        return demo["index.html"].response()

    @app.get("/demo/<name>")
    async def demo_file(name: str) -> Response:
        asset = demo.get(name)
        if asset is None or name == "index.html":
            raise NotFound("no such demo file")
        return asset.response()

    @app.post("/demo/token")
    async def demo_token() -> Response:
        from gateway.auth import mint_token
        from gateway.demo import DEMO_USERS

        if not settings.jwt_secret:
            raise NotFound("demo tokens need an HS256 secret (--jwt-secret)")
        try:
            body = json.loads(await request.get_data() or b"{}")
        except ValueError:
            raise BadRequest("the body is a JSON object {user, ttlS?}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body is a JSON object {user, ttlS?}")
        user = body.get("user")
        if user not in DEMO_USERS:
            raise BadRequest(f"user must be one of {', '.join(DEMO_USERS)}", path="user")
        ttl = body.get("ttlS", 3600)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool):
            raise BadRequest("ttlS must be a number of seconds", path="ttlS")
        ttl = min(max(float(ttl), DEMO_TOKEN_MIN_TTL_S), DEMO_TOKEN_MAX_TTL_S)
        token = mint_token(
            settings.jwt_secret,
            user,
            ttl_s=ttl,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            name=DEMO_USERS[user],
        )
        payload = {"token": token, "user": user, "name": DEMO_USERS[user], "ttlS": ttl}
        return Response(json.dumps(payload), content_type="application/json")
