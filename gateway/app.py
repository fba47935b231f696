"""The quart-trio application: HTTP endpoints of both paths over one runtime.

Endpoints: `POST /graphql` (the polling path), `POST /realtime/tickets`,
`POST /realtime/events` (the publish API), `GET /contracts/schema.json`,
`GET /metrics`, `GET /healthz`, `GET /readyz`, `GET /cluster/nodes`; `GET /ws`
(the push path) is served by the front acceptor (`gateway.front`) before this app.

`gateway.admission` sits in front of the app: credentials and body limits
are checked before any body is read. Every error answers the contract's JSON
shape `{"error": {"code", "message", "path"?}}`, 404, 405, 413 and 500
included; `/graphql` answers GraphQL's own `{"errors": [...]}` for requests
that reach the GraphQL executor.

For browsers: `POST /realtime/parity` and `GET /realtime/parity` (parity
beacons, `gateway.beacons`), `GET /client/cutover.js` and, with `--demo-page`,
`GET /demo` (`gateway.browser`); `gateway.cors` answers preflights and adds
`Access-Control-Allow-Origin` for the allowed origins.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.admission import Admission, Route, body_overflowed, credential_of
from gateway.beacons import ParityBeacons
from gateway.browser import install as install_browser_files
from gateway.cors import Cors
from gateway.errors import BadRequest, CutoverError, PayloadTooLarge, RateLimited
from gateway.events import iso
from gateway.graphql import FairShare, PollingExecutor, QueryLimits, RequestContext
from gateway.store import run_store
from ops import metrics

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.publish_api import PublishCredential
    from gateway.runtime import Runtime

__all__ = ["create_app", "error_response"]

log = logging.getLogger("cutover.app")

# Codes of the HTTP statuses Quart and Werkzeug raise themselves.
STATUS_CODES = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
}


def error_response(error: CutoverError) -> Response:
    body = json.dumps({"error": error.to_payload()})
    response = Response(body, status=error.status, content_type="application/json")
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, PayloadTooLarge):
        response.headers["Connection"] = "close"  # the rest of the body is never read
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return response


def json_response(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


async def read_json(limit: int) -> Any:
    """The request body as JSON: 413 past `limit`, 400 when it is not JSON."""
    data = await request.get_data()
    if body_overflowed(request.scope):
        raise PayloadTooLarge(f"the request body is over {limit:,} bytes, this endpoint's limit")
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest("request body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from None


def create_app(runtime: Runtime) -> QuartTrio:
    """The app serving `runtime`; every endpoint shares its store, hub and config."""
    settings = runtime.settings
    app = QuartTrio("cutover")
    # Admission ends every body at its endpoint's limit first; this is a backstop.
    app.config["MAX_CONTENT_LENGTH"] = max(
        settings.graphql_max_body_bytes, settings.publish_max_body_bytes
    )
    executor = PollingExecutor(
        QueryLimits.from_settings(settings),
        cache_bytes=settings.graphql_cache_bytes,
        audit=getattr(runtime, "audit", None),  # None: no shadow audit (tests)
    )
    fair_share = FairShare(settings.graphql_slots_per_user, settings.graphql_queue_per_user)

    async def bearer(headers) -> Principal:
        return await runtime.bearer(headers.get("authorization"))

    async def publisher(headers) -> PublishCredential:
        return await runtime.publisher_credential(
            headers.get("authorization"), headers.get("x-api-key")
        )

    app.asgi_app = Admission(  # type: ignore[method-assign,assignment]  # ASGI middleware (Quart's way) on a plain-dict scope
        app.asgi_app,
        {
            ("POST", "/graphql"): Route(settings.graphql_max_body_bytes, bearer),
            ("POST", "/realtime/tickets"): Route(settings.http_max_body_bytes, bearer),
            ("POST", "/realtime/events"): Route(settings.publish_max_body_bytes, publisher),
            ("POST", "/realtime/parity"): Route(settings.http_max_body_bytes, bearer),
        },
        default_max_body_bytes=settings.http_max_body_bytes,
    )

    @app.errorhandler(CutoverError)
    async def on_refusal(error: CutoverError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status >= 500:
            code, message = "INTERNAL", "internal error"
        else:
            code = STATUS_CODES.get(status, "BAD_REQUEST")
            message = {404: "no such endpoint", 405: "method not allowed"}.get(
                status, error.description or error.name
            )
        response = json_response({"error": {"code": code, "message": message}}, status)
        if status == 413:
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def on_crash(error: Exception) -> Response:
        log.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
        return json_response({"error": {"code": "INTERNAL", "message": "internal error"}}, 500)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok", "node": settings.node_id})

    @app.get("/readyz")
    async def readyz() -> Response:
        if runtime.draining:
            return json_response({"status": "draining"}, 503)
        if not runtime.backplane_ready():
            return json_response({"status": "backplane unavailable"}, 503)
        try:
            with trio.fail_after(2):
                await run_store(runtime.store.stream_position, "readyz-probe")
        except (trio.TooSlowError, Exception) as exc:
            return json_response({"status": "store unavailable", "detail": str(exc)}, 503)
        return json_response({"status": "ready", "connections": len(runtime.hub)})

    @app.get("/cluster/nodes")
    async def cluster_nodes() -> Response:
        """The live nodes and their connection counts (`cutover ops status`)."""
        try:
            return json_response(await runtime.cluster_nodes())
        except (trio.TooSlowError, Exception) as exc:
            return json_response({"status": "backplane unavailable", "detail": str(exc)}, 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.get("/contracts/schema.json")
    async def contract_schema() -> Response:
        return json_response(runtime.contract_schema())

    @app.post("/realtime/tickets")
    async def tickets() -> Response:
        principal = credential_of(request.scope) or await bearer(request.headers)
        await request.get_data()  # ignored, but read: the connection stays in step
        if body_overflowed(request.scope):
            raise PayloadTooLarge(f"this endpoint takes at most {settings.http_max_body_bytes:,}")
        ticket, expires_at = await run_store(runtime.tickets.issue, principal)
        return json_response({"ticket": ticket, "expiresAt": iso_from_epoch(expires_at)}, 201)

    @app.post("/graphql")
    async def graphql() -> Response:
        principal = credential_of(request.scope) or await bearer(request.headers)
        body = await read_json(settings.graphql_max_body_bytes)
        viewer = runtime.viewer(principal)
        ctx = RequestContext(
            viewer=viewer,
            domain=runtime.domain,
            realtime_config=runtime.realtime_config_for(request.host),
        )
        async with fair_share.slot(viewer.user_id):
            status, result = await run_store(executor.execute, body, ctx, limiter="graphql")
        for outcome in ctx.outcomes:
            await runtime.publish(outcome)
        return json_response(result, status)

    @app.post("/realtime/events")
    async def publish_events() -> Response:
        credential = credential_of(request.scope) or await publisher(request.headers)
        body = await read_json(settings.publish_max_body_bytes)
        status, result = await runtime.publish_api(credential, body)
        return json_response(result, status)

    # Browsers: parity beacons, the SDK (and the demo page where enabled), and CORS
    # for the endpoints a page on another origin calls.
    ParityBeacons.for_runtime(runtime).install(app, bearer)
    install_browser_files(app, settings)
    app.asgi_app = Cors(app.asgi_app, settings.allowed_origins)  # type: ignore[method-assign,assignment]  # ASGI middleware (Quart's way) on a plain-dict scope
    return app


def iso_from_epoch(seconds: float) -> str:
    return iso(dt.datetime.fromtimestamp(seconds, dt.UTC))
