"""The pieces of `gateway.client` the harness stands on, without a server: GraphQL
over several nodes and for several users, one failure for every way a request
fails, sessions that keep little, pings at the announced heartbeat, and calls
from several tasks over one session."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio.testing

from gateway.client import Caller, GraphQL, GraphQLFailed, Session, websocket_url
from parity.driver import ActionFailed, _call


@pytest.mark.parametrize(
    ("base", "ws"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
        ("https://rt.example.com/", "wss://rt.example.com/ws"),
    ],
)
def test_a_nodes_websocket_endpoint_follows_its_base_url(base, ws):
    assert websocket_url(base) == ws


def _http(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_requests_take_turns_over_the_nodes_and_may_speak_for_another_user():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        return httpx.Response(200, json={"data": {"ok": True}})

    async with _http(handler) as http:
        gql = GraphQL(http, ["http://a/", "http://b"], "mine")
        answer = await gql.request("{ ok }")
        assert answer.data == {"ok": True}
        assert answer.size == len(b'{"data":{"ok":true}}')
        assert await gql.query("{ ok }", token="theirs") == {"ok": True}
        await gql.query("{ ok }")
    assert seen == [("a", "Bearer mine"), ("b", "Bearer theirs"), ("a", "Bearer mine")]


async def test_a_single_node_without_a_token_sends_no_authorization():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"data": {}})

    async with _http(handler) as http:
        await GraphQL(http, "http://a").query("{ ok }")
        with pytest.raises(ValueError):
            GraphQL(http, [])
    assert seen == [None]


@pytest.mark.parametrize(
    ("answer", "status", "text"),
    [
        (httpx.Response(200, json={"errors": [{"message": "no"}]}), 200, "HTTP 200: [{"),
        (httpx.Response(502, text="<html>bad gateway</html>"), 502, "HTTP 502: not JSON"),
        (httpx.Response(401, json={"error": "UNAUTHORIZED"}), 401, "HTTP 401: {'error'"),
        (httpx.Response(200, json={"data": None}), 200, "HTTP 200: {'data': None}"),
        (httpx.ConnectError("refused"), 0, "ConnectError: refused"),
    ],
)
async def test_every_way_a_request_fails_is_one_error(answer, status, text):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with _http(handler) as http:
        with pytest.raises(GraphQLFailed) as caught:
            await GraphQL(http, "http://a", "t").query("{ ok }")
    assert caught.value.status == status
    assert str(caught.value).startswith(text)


async def test_a_ticket_that_cannot_be_fetched_is_a_failed_request():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    async with _http(handler) as http:
        with pytest.raises(GraphQLFailed) as caught:
            await GraphQL(http, "http://a", "t").ticket()
    assert caught.value.status == 0


class FakeSocket:
    """A WebSocket connection's two ends as memory channels."""

    def __init__(self) -> None:
        self.to_client, self._inbox = trio.open_memory_channel[str](16)
        self.sent: list[dict] = []

    async def get_message(self) -> str:
        return await self._inbox.receive()

    async def send_message(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def push(self, *envelopes: dict) -> None:
        """One frame holding `envelopes`."""
        self.to_client.send_nowait("\n".join(json.dumps(e) for e in envelopes))


async def test_a_session_counts_frames_and_bytes_and_keeps_only_its_history():
    ws = FakeSocket()
    session = Session(ws, history=1)  # type: ignore[arg-type]
    ws.push({"type": "a"}, {"type": "b"})
    ws.push({"type": "c"})
    assert [(await session.next())["type"] for _ in range(3)] == ["a", "b", "c"]
    assert session.frames == 2
    assert session.received_bytes == len('{"type": "a"}\n{"type": "b"}') + len('{"type": "c"}')
    assert list(session.seen) == [{"type": "c"}]


async def test_a_session_without_history_still_matches_replies_in_order():
    ws = FakeSocket()
    session = Session(ws, history=0)  # type: ignore[arg-type]
    action_id = await session.send("ping")
    ws.push({"type": "x"}, {"type": "pong", "replyTo": action_id})
    assert (await session.reply_to(str(action_id)))["type"] == "pong"
    assert (await session.next())["type"] == "x"  # kept, in order
    assert list(session.seen) == []


async def test_keep_alive_pings_at_half_the_announced_heartbeat(autojump_clock):
    ws = FakeSocket()
    session = Session(ws)  # type: ignore[arg-type]
    with trio.move_on_after(16):
        await session.keep_alive({"heartbeatIntervalMs": 10_000})
    assert [e["action"] for e in ws.sent] == ["ping"] * 3
    ws.sent.clear()
    with trio.move_on_after(3.5):
        await session.keep_alive({"heartbeatIntervalMs": 200})  # at most once a second
    assert len(ws.sent) == 3


async def test_calls_from_several_tasks_each_get_their_own_reply():
    ws = FakeSocket()
    caller = Caller(Session(ws, history=0))  # type: ignore[arg-type]
    replies: dict[str, dict] = {}

    async def call(name: str) -> None:
        replies[name] = await caller.call("chat.read", {"conversationId": name})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run)
        nursery.start_soon(call, "c1")
        nursery.start_soon(call, "c2")
        await trio.testing.wait_all_tasks_blocked()
        ids = {e["payload"]["conversationId"]: e["id"] for e in ws.sent}
        ws.push(
            {"type": "ok", "replyTo": ids["c2"], "payload": {"for": "c2"}},
            {"type": "chat.message", "seq": 1, "payload": {}},
            {"type": "error", "replyTo": ids["c1"], "payload": {"code": "NOT_FOUND"}},
        )
        await trio.testing.wait_all_tasks_blocked()
        assert replies["c2"]["payload"] == {"for": "c2"}
        assert replies["c1"]["type"] == "error"
        assert caller._waiting == {}
        nursery.cancel_scope.cancel()


async def test_the_driver_fails_a_step_on_an_error_reply_or_no_reply(autojump_clock):
    ws = FakeSocket()
    caller = Caller(Session(ws, history=0))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run)

        async def answer_with_error() -> None:
            await trio.testing.wait_all_tasks_blocked()
            ws.push({"type": "error", "replyTo": ws.sent[-1]["id"], "payload": {"code": "X"}})

        nursery.start_soon(answer_with_error)
        with pytest.raises(ActionFailed, match=r"chat\.send"):
            await _call(caller, "chat.send", {})
        with pytest.raises(trio.TooSlowError):
            await _call(caller, "presence.set", {"status": "AWAY"})
        nursery.cancel_scope.cancel()
