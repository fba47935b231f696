"""What the gateway serves to browsers: the SDK.

`GET /client/cutover.js` (and `cutover.d.ts`): the browser SDK of
`clients/js/`, one ES module any origin may import (a public static file:
`Access-Control-Allow-Origin: *`), with an ETag so browsers revalidate.

The files are read from the source tree (`clients/js/`), once, at start-up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response, request

from gateway.errors import NotFound

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["CLIENT_DIR", "Asset", "install"]

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "js"

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
    """Add the SDK's routes to `app`."""
    sdk = _assets(CLIENT_DIR, ("cutover.js", "cutover.d.ts"))

    @app.get("/client/<name>")
    async def client_file(name: str) -> Response:
        asset = sdk.get(name)
        if asset is None:
            raise NotFound("no such client file (the SDK is clients/js/cutover.js)")
        return asset.response(public=True)
