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

`POST /graphql`, `POST /realtime/events` and `POST /realtime/tickets` (and the
preflights of `/graphql` and `/realtime/tickets`) are also served by the
front's lean HTTP/1.1 path (`gateway.http_lean`) without Hypercorn's ASGI
layer and Quart: both serve the same `Endpoint` functions with the same
admission `Route`s, CORS layer and error answers (`lean_routes`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.utils import get_host

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

__all__ = [
    "INTERNAL_ERROR",
    "Endpoint",
    "GraphQLCaller",
    "LeanRoutes",
    "create_app",
    "error_headers",
    "error_response",
    "http_error_answer",
    "lean_routes",
    "log_crash",
]

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


#: The body of every 500 answer.
INTERNAL_ERROR = {"error": {"code": "INTERNAL", "message": "internal error"}}

#: A POST endpoint as a plain function: (credential found by admission, the body
#: as received, whether it went past the limit) -> (status, JSON payload); raises
#: a CutoverError to refuse.
EndpointRun = Callable[[Any, bytes, bool], Awaitable[tuple[int, Any]]]


@attrs.frozen
class Endpoint:
    """A POST endpoint served by the app and by the front's lean HTTP path alike."""

    admission: Route
    run: EndpointRun


@attrs.frozen
class LeanRoutes:
    """What the front's lean HTTP path needs of the app: the endpoints it serves
    (by path, method POST), the app's CORS layer, and Quart's body timeout."""

    endpoints: Mapping[str, Endpoint]
    cors: Cors
    body_timeout_s: float | None


LEAN_ROUTES_KEY = "cutover.lean_routes"


@attrs.frozen
class GraphQLCaller:
    """The credential of a `POST /graphql`: who calls, and the host they called
    (the `websocketUrl` a snapshot names is on it), as Quart's `request.host`."""

    principal: Principal
    host: str

    @classmethod
    def of(cls, principal: Principal, headers: Mapping[str, str]) -> GraphQLCaller:
        # Plain HTTP only (the front has no TLS), so the scheme is always http.
        return cls(principal, get_host("http", headers.get("host")))


def lean_routes(app: QuartTrio) -> LeanRoutes:
    """The lean HTTP path's share of `app` (made by `create_app`)."""
    return app.extensions[LEAN_ROUTES_KEY]


def error_headers(error: CutoverError) -> list[tuple[str, str]]:
    """The headers of a refusal's answer besides its content type and length."""
    headers: list[tuple[str, str]] = []
    if error.status == 401:
        headers.append(("WWW-Authenticate", "Bearer"))
    if isinstance(error, PayloadTooLarge):
        headers.append(("Connection", "close"))  # the rest of the body is never read
    if isinstance(error, RateLimited):
        headers.append(("Retry-After", str(max(1, -(-error.retry_after_ms // 1000)))))
    return headers


def error_response(error: CutoverError) -> Response:
    body = json.dumps({"error": error.to_payload()})
    response = Response(body, status=error.status, content_type="application/json")
    for name, value in error_headers(error):
        response.headers[name] = value
    return response


def http_error_answer(error: HTTPException) -> tuple[int, dict, list[tuple[str, str]]]:
    """The JSON answer to an HTTP error Quart or Werkzeug raise: (status, body, headers)."""
    status = error.code or 500
    if status >= 500:
        code, message = "INTERNAL", "internal error"
    else:
        code = STATUS_CODES.get(status, "BAD_REQUEST")
        message = {404: "no such endpoint", 405: "method not allowed"}.get(
            status, error.description or error.name
        )
    headers = [("Connection", "close")] if status == 413 else []
    return status, {"error": {"code": code, "message": message}}, headers


def log_crash(method: str, path: str, error: BaseException) -> None:
    log.error("unhandled error in %s %s", method, path, exc_info=error)


def json_response(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def parse_json(data: bytes, overflowed: bool, limit: int) -> Any:
    """A request body as JSON: 413 when it went past `limit`, 400 when it is not JSON."""
    if overflowed:
        raise PayloadTooLarge(f"the request body is over {limit:,} bytes, this endpoint's limit")
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest("request body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from None


async def serve_endpoint(
    endpoint: Endpoint, authenticate: Callable[..., Awaitable[Any]]
) -> Response:
    """`endpoint` for the current Quart request."""
    credential = credential_of(request.scope) or await authenticate(request.headers)
    data = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    status, payload = await endpoint.run(credential, data, body_overflowed(request.scope))
    return json_response(payload, status)


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

    async def graphql_caller(headers) -> GraphQLCaller:
        return GraphQLCaller.of(await bearer(headers), headers)

    async def publisher(headers) -> PublishCredential:
        return await runtime.publisher_credential(
            headers.get("authorization"), headers.get("x-api-key")
        )

    async def issue_ticket(principal: Principal, _data: bytes, overflowed: bool) -> tuple[int, Any]:
        # The body is ignored, but read: the connection stays in step.
        if overflowed:
            raise PayloadTooLarge(f"this endpoint takes at most {settings.http_max_body_bytes:,}")
        ticket, expires_at = await run_store(runtime.tickets.issue, principal)
        return 201, {"ticket": ticket, "expiresAt": iso_from_epoch(expires_at)}

    async def publish(
        credential: PublishCredential, data: bytes, overflowed: bool
    ) -> tuple[int, Any]:
        body = parse_json(data, overflowed, settings.publish_max_body_bytes)
        return await runtime.publish_api(credential, body)

    async def graphql(caller: GraphQLCaller, data: bytes, overflowed: bool) -> tuple[int, Any]:
        body = parse_json(data, overflowed, settings.graphql_max_body_bytes)
        viewer = runtime.viewer(caller.principal)
        ctx = RequestContext(
            viewer=viewer,
            domain=runtime.domain,
            realtime_config=runtime.realtime_config_for(caller.host),
        )
        async with fair_share.slot(viewer.user_id):
            status, result = await run_store(executor.execute, body, ctx, limiter="graphql")
        for outcome in ctx.outcomes:
            await runtime.publish(outcome)
        return status, result

    ticket_endpoint = Endpoint(Route(settings.http_max_body_bytes, bearer), issue_ticket)
    publish_endpoint = Endpoint(Route(settings.publish_max_body_bytes, publisher), publish)
    graphql_endpoint = Endpoint(Route(settings.graphql_max_body_bytes, graphql_caller), graphql)

    app.asgi_app = Admission(  # type: ignore[method-assign,assignment]  # ASGI middleware (Quart's way) on a plain-dict scope
        app.asgi_app,
        {
            ("POST", "/graphql"): graphql_endpoint.admission,
            ("POST", "/realtime/tickets"): ticket_endpoint.admission,
            ("POST", "/realtime/events"): publish_endpoint.admission,
            ("POST", "/realtime/parity"): Route(settings.http_max_body_bytes, bearer),
        },
        default_max_body_bytes=settings.http_max_body_bytes,
    )

    @app.errorhandler(CutoverError)
    async def on_refusal(error: CutoverError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status, payload, headers = http_error_answer(error)
        response = json_response(payload, status)
        for name, value in headers:
            response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def on_crash(error: Exception) -> Response:
        log_crash(request.method, request.path, error)
        return json_response(INTERNAL_ERROR, 500)

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
        return await serve_endpoint(ticket_endpoint, bearer)

    @app.post("/graphql")
    async def graphql_route() -> Response:
        return await serve_endpoint(graphql_endpoint, graphql_caller)

    @app.post("/realtime/events")
    async def publish_events() -> Response:
        return await serve_endpoint(publish_endpoint, publisher)

    # Browsers: parity beacons, the SDK (and the demo page where enabled), and CORS
    # for the endpoints a page on another origin calls.
    ParityBeacons.for_runtime(runtime).install(app, bearer)
    install_browser_files(app, settings)
    cors = Cors(app.asgi_app, settings.allowed_origins)
    app.asgi_app = cors  # type: ignore[method-assign,assignment]  # ASGI middleware (Quart's way) on a plain-dict scope
    app.extensions[LEAN_ROUTES_KEY] = LeanRoutes(
        endpoints={
            "/graphql": graphql_endpoint,
            "/realtime/events": publish_endpoint,
            "/realtime/tickets": ticket_endpoint,
        },
        cors=cors,
        body_timeout_s=app.config["BODY_TIMEOUT"],
    )
    return app


def iso_from_epoch(seconds: float) -> str:
    return iso(dt.datetime.fromtimestamp(seconds, dt.UTC))
