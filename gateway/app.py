"""The quart-trio application: HTTP endpoints of both paths over one runtime.

Endpoints: `POST /graphql` (the polling path), `POST /realtime/tickets`,
`POST /realtime/events` (the publish API), `GET /contracts/schema.json`,
`GET /metrics`, `GET /healthz`, `GET /readyz`; `GET /ws` (the push path) is
mounted at the ASGI level by `gateway.ws.quart_adapter`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.errors import BadRequest, CutoverError
from gateway.events import iso
from gateway.graphql import RequestContext, execute_request
from gateway.store import run_store
from ops import metrics

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["create_app", "error_response"]


def error_response(error: CutoverError) -> Response:
    body = json.dumps({"error": error.to_payload()})
    response = Response(body, status=error.status, content_type="application/json")
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def json_response(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def create_app(runtime: Runtime) -> QuartTrio:
    """The app serving `runtime`; every endpoint shares its store, hub and config."""
    app = QuartTrio("cutover")
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024

    @app.before_request
    async def read_body_first() -> None:
        # Read the whole body before any refusal: a response sent while part of
        # the request is still unread leaves a keep-alive connection out of step.
        if request.method == "POST":
            await request.get_data()

    @app.errorhandler(CutoverError)
    async def on_refusal(error: CutoverError) -> Response:
        return error_response(error)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok", "node": runtime.settings.node_id})

    @app.get("/readyz")
    async def readyz() -> Response:
        if runtime.draining:
            return json_response({"status": "draining"}, 503)
        try:
            with trio.fail_after(2):
                await run_store(runtime.store.stream_position, "readyz-probe")
        except (trio.TooSlowError, Exception) as exc:
            return json_response({"status": "store unavailable", "detail": str(exc)}, 503)
        return json_response({"status": "ready", "connections": len(runtime.hub)})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.get("/contracts/schema.json")
    async def contract_schema() -> Response:
        return json_response(runtime.contract_schema())

    @app.post("/realtime/tickets")
    async def tickets() -> Response:
        principal = await runtime.bearer(request.headers.get("Authorization"))
        ticket, expires_at = await run_store(runtime.tickets.issue, principal)
        return json_response({"ticket": ticket, "expiresAt": iso_from_epoch(expires_at)}, 201)

    @app.post("/graphql")
    async def graphql() -> Response:
        principal = await runtime.bearer(request.headers.get("Authorization"))
        try:
            body = json.loads(await request.get_data(as_text=True))
        except ValueError as exc:
            raise BadRequest(f"request body is not JSON: {exc}") from exc
        ctx = RequestContext(
            viewer=runtime.viewer(principal),
            domain=runtime.domain,
            realtime_config=runtime.realtime_config_for(request.host),
        )
        status, result = await run_store(execute_request, body, ctx, limiter="graphql")
        for outcome in ctx.outcomes:
            await runtime.publish(outcome)
        return json_response(result, status)

    @app.post("/realtime/events")
    async def publish_events() -> Response:
        credential = await runtime.publisher_credential(
            request.headers.get("Authorization"), request.headers.get("X-Api-Key")
        )
        try:
            body = json.loads(await request.get_data(as_text=True))
        except ValueError as exc:
            raise BadRequest(f"request body is not JSON: {exc}") from exc
        status, result = await runtime.publish_api(credential, body)
        return json_response(result, status)

    @app.errorhandler(404)
    async def not_found(_error: Exception) -> Response:
        return json_response({"error": {"code": "NOT_FOUND", "message": "no such endpoint"}}, 404)

    @app.errorhandler(405)
    async def not_allowed(_error: Exception) -> Response:
        return json_response(
            {"error": {"code": "BAD_REQUEST", "message": "method not allowed"}}, 405
        )

    return app


def iso_from_epoch(seconds: float) -> str:
    return iso(dt.datetime.fromtimestamp(seconds, dt.UTC))
