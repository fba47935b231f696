"""The HTTP app around the polling path, in process: a crash answers the contract's
JSON error (never an HTML page), and admission runs before any endpoint."""

from __future__ import annotations

import attrs

from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import Unauthorized


@attrs.define
class CrashingRuntime:
    """Just enough of a Runtime: every call that reaches it fails."""

    settings: Settings = attrs.Factory(lambda: Settings(jwt_secret="s" * 32))
    evidence: None = None  # no parity evidence book
    bearer_calls: int = 0

    def contract_schema(self) -> dict:
        raise RuntimeError("boom: a bug, not a refusal")

    async def bearer(self, header: str | None):
        self.bearer_calls += 1
        raise Unauthorized("missing Authorization: Bearer token")


async def test_an_unhandled_error_answers_500_in_json():
    app = create_app(CrashingRuntime())  # type: ignore[arg-type]
    response = await app.test_client().get("/contracts/schema.json")
    assert response.status_code == 500
    assert response.content_type == "application/json"
    assert await response.get_json() == {"error": {"code": "INTERNAL", "message": "internal error"}}


async def test_admission_refuses_before_the_endpoint_runs():
    runtime = CrashingRuntime()
    app = create_app(runtime)  # type: ignore[arg-type]
    response = await app.test_client().post("/graphql", data=b'{"query": "{ me { id } }"}')
    assert response.status_code == 401 and runtime.bearer_calls == 1
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.get_json())["error"]["code"] == "UNAUTHORIZED"


class BrokenAuthRuntime(CrashingRuntime):
    async def bearer(self, header: str | None):
        raise RuntimeError("the key store is down")


async def test_a_crash_while_admitting_answers_500_in_json():
    app = create_app(BrokenAuthRuntime())  # type: ignore[arg-type]
    response = await app.test_client().post("/graphql", data=b"{}")
    assert response.status_code == 500
    assert await response.get_json() == {"error": {"code": "INTERNAL", "message": "internal error"}}
