"""End to end: a backend publishes through a real node; real WebSocket clients receive."""

from __future__ import annotations

import itertools

import httpx
import trio

from gateway.publish import TrioPublisher, event
from tests.e2e.client import ws_connect
from tests.publish.conftest import E2E_API_KEY

_ids = itertools.count(1)


def fresh(prefix: str = "e2e") -> str:
    return f"{prefix}-{next(_ids)}"


def activity(n: int = 1, goal: str = "g42") -> dict:
    return {
        "goalId": goal,
        "activity": {
            "id": f"a{n}",
            "kind": "progress",
            "actorId": "alice",
            "progress": n,
            "createdAt": "2026-02-17T10:00:00Z",
        },
    }


def viewers(*ids: str) -> dict:
    return {"goalId": "g42", "viewerIds": list(ids), "count": len(ids)}


def connect(server, user: str, tenant: str | None = None):
    return ws_connect(server, user, token=server.token(user, tenant=tenant))


async def post(server, body, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{server.url}/realtime/events",
            json=body,
            headers={"X-Api-Key": E2E_API_KEY} if headers is None else headers,
        )


async def welcome_seq(server, user: str, tenant: str | None = None) -> int:
    async with connect(server, user, tenant) as ws:
        welcome = await ws.next_of("session.welcome")
        return welcome["payload"]["seq"]


async def test_durable_events_arrive_with_contiguous_seq(server):
    user = fresh()
    with trio.fail_after(30):
        async with (
            connect(server, user) as ws,
            TrioPublisher(server.url, api_key=E2E_API_KEY) as pub,
        ):
            welcome = await ws.next_of("session.welcome")
            assert welcome["payload"]["seq"] == 0
            await pub.publish("goal.activity.created", activity(1), users=[user])
            await pub.publish_batch(
                [event("goal.activity.created", activity(n), users=[user]) for n in range(2, 6)]
            )
            received = [await ws.next_of("goal.activity.created") for _ in range(5)]
    assert [e["seq"] for e in received] == [1, 2, 3, 4, 5]
    assert [e["payload"]["activity"]["id"] for e in received] == ["a1", "a2", "a3", "a4", "a5"]
    assert len({e["id"] for e in received}) == 5


async def test_ephemeral_topic_events_reach_subscribers_only(server):
    watcher, bystander = fresh(), fresh()
    with trio.fail_after(30):
        async with (
            connect(server, watcher, "acme") as ws,
            connect(server, bystander, "acme") as other,
            TrioPublisher(
                server.url, token=server.token("planner", tenant="acme", scopes=["publish"])
            ) as pub,
        ):
            await ws.next_of("session.welcome")
            await other.next_of("session.welcome")
            reply = await ws.call("subscribe", {"topic": "goal:acme/g42"})
            assert reply["type"] == "ack", reply
            result = await pub.publish("goal.viewers.updated", viewers("x"), topic="goal:g42")
            assert result.recipients == {} and result.topic == "goal:g42"
            got = await ws.next_of("goal.viewers.updated")
            assert got["payload"] == viewers("x")
            assert "seq" not in got or got["seq"] is None
            # the bystander gets the next durable event first: it never saw the topic event
            await pub.publish("goal.activity.created", activity(), users=[bystander])
            first = await other.next_of("goal.viewers.updated", "goal.activity.created")
            assert first["type"] == "goal.activity.created"
    assert await welcome_seq(server, watcher, "acme") == 0


async def test_resume_after_a_disconnect_delivers_what_was_missed(server):
    user = fresh()
    with trio.fail_after(30):
        async with TrioPublisher(server.url, api_key=E2E_API_KEY) as pub:
            async with connect(server, user) as ws:
                welcome = await ws.next_of("session.welcome")
                epoch = welcome["payload"]["epoch"]
                for n in (1, 2):
                    await pub.publish("goal.activity.created", activity(n), users=[user])
                seen = [await ws.next_of("goal.activity.created") for _ in range(2)]
            last = seen[-1]["seq"]
            await pub.publish_batch(
                [event("goal.activity.created", activity(n), users=[user]) for n in (3, 4, 5)]
            )
            async with connect(server, user) as ws:
                await ws.next_of("session.welcome")
                await ws.send("session.resume", {"epoch": epoch, "lastSeq": last})
                replayed = [await ws.next_of("goal.activity.created") for _ in range(3)]
                resumed = await ws.next_of("session.resumed", "session.reset")
    assert [e["seq"] for e in seen] == [1, 2]
    assert [e["seq"] for e in replayed] == [3, 4, 5]
    assert [e["payload"]["activity"]["id"] for e in replayed] == ["a3", "a4", "a5"]
    assert resumed["type"] == "session.resumed"
    assert resumed["payload"]["toSeq"] == 5


async def test_tenants_never_see_each_others_events(server):
    name = fresh("bob")
    acme = server.token("acme-svc", tenant="acme", scopes=["publish"])
    globex = server.token("globex-svc", tenant="globex", scopes=["publish"])
    with trio.fail_after(30):
        async with (
            connect(server, name, "acme") as a,
            connect(server, name, "globex") as g,
            connect(server, name) as bare,
            TrioPublisher(server.url, token=acme) as acme_pub,
            TrioPublisher(server.url, token=globex) as globex_pub,
        ):
            for ws in (a, g, bare):
                await ws.next_of("session.welcome")
            assert (await a.call("subscribe", {"topic": "goal:acme/g42"}))["type"] == "ack"
            assert (await g.call("subscribe", {"topic": "goal:globex/g42"}))["type"] == "ack"
            refused = await g.call("subscribe", {"topic": "goal:acme/g42"})
            assert refused["type"] == "error"

            await acme_pub.publish("goal.activity.created", activity(1), users=[name])
            await acme_pub.publish("goal.viewers.updated", viewers("acme-only"), topic="goal:g42")
            got = await a.next_of("goal.activity.created")
            assert (got["seq"], got["payload"]["activity"]["id"]) == (1, "a1")
            assert (await a.next_of("goal.viewers.updated"))["payload"] == viewers("acme-only")

            # markers: the first thing the others receive is their own tenant's
            await globex_pub.publish("goal.viewers.updated", viewers("globex"), topic="goal:g42")
            await globex_pub.publish("goal.activity.created", activity(9), users=[name])
            async with TrioPublisher(server.url, api_key=E2E_API_KEY) as bare_pub:
                await bare_pub.publish("goal.activity.created", activity(8), users=[name])
            g_first = await g.next_of("goal.viewers.updated", "goal.activity.created")
            g_second = await g.next_of("goal.viewers.updated", "goal.activity.created")
            bare_first = await bare.next_of("goal.viewers.updated", "goal.activity.created")
    assert g_first["payload"] == viewers("globex")
    assert (g_second["seq"], g_second["payload"]["activity"]["id"]) == (1, "a9")
    assert (bare_first["seq"], bare_first["payload"]["activity"]["id"]) == (1, "a8")
    # a tenant credential cannot name another tenant's user or topic
    response = await post(
        server,
        {
            "type": "goal.activity.created",
            "payload": activity(),
            "to": {"users": [f"globex/{name}"]},
        },
        {"Authorization": f"Bearer {acme}"},
    )
    assert response.status_code == 403
    response = await post(
        server,
        {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": "goal:globex/g42"}},
        {"Authorization": f"Bearer {acme}"},
    )
    assert response.status_code == 403
    assert await welcome_seq(server, name, "globex") == 1


async def test_refusals_get_their_documented_answer_and_change_nothing(server):
    user = fresh()
    good = {"type": "goal.activity.created", "payload": activity(), "to": {"users": [user]}}
    cases = [
        ({**good, "payload": {"activity": activity()["activity"]}}, None, 422, "PAYLOAD_INVALID"),
        ({**good, "type": "goal.activity.deleted"}, None, 422, "UNKNOWN_EVENT_TYPE"),
        (good, {}, 401, "UNAUTHORIZED"),
        (good, {"X-Api-Key": "wrong"}, 401, "UNAUTHORIZED"),
        (good, {"Authorization": "Bearer nonsense"}, 401, "UNAUTHORIZED"),
        (good, {"Authorization": f"Bearer {server.token('svc')}"}, 403, "FORBIDDEN"),
        ({"events": [good] * 1001}, None, 413, "BATCH_TOO_LARGE"),
        ({"events": [good, good, {**good, "payload": {}}]}, None, 422, "PAYLOAD_INVALID"),
    ]
    with trio.fail_after(60):
        for body, headers, status, code in cases:
            response = await post(server, body, headers)
            assert response.status_code == status, (code, response.text)
            assert response.json()["error"]["code"] == code
        path = (await post(server, cases[-1][0])).json()["error"]["path"]
        assert path == "events[2].payload.goalId"
        assert await welcome_seq(server, user) == 0


async def test_replaying_an_idempotency_key_changes_nothing(server):
    user = fresh()
    body = {
        "type": "goal.activity.created",
        "payload": activity(),
        "to": {"users": [user]},
        "idempotencyKey": fresh("key"),
    }
    with trio.fail_after(30):
        first = await post(server, body)
        async with connect(server, user) as ws:
            await ws.next_of("session.welcome")
            second = await post(server, body)
            await post(server, {**body, "idempotencyKey": fresh("key"), "payload": activity(2)})
            got = await ws.next_of("goal.activity.created")
    assert (first.status_code, second.status_code) == (202, 202)
    assert (
        first.json()["results"][0]["recipients"]
        == second.json()["results"][0]["recipients"]
        == {user: 1}
    )
    assert (first.json()["replayed"], second.json()["replayed"]) == (False, True)
    # the replay was not fanned out again: the next live event is the new one, seq 2
    assert (got["seq"], got["payload"]["activity"]["id"]) == (2, "a2")
    assert await welcome_seq(server, user) == 2
