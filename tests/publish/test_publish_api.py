"""PublishApi.handle and .credential against a real SQLite store and the example registry."""

from __future__ import annotations

import pytest

from gateway.errors import Forbidden, TokenExpired, Unauthorized
from gateway.publish_api import PublishCredential
from gateway.store import run_store
from tests.publish.conftest import API_KEY, token

KEY = PublishCredential(subject="key:test")
ACME = PublishCredential(subject="jwt:svc", tenant="acme")
GLOBEX = PublishCredential(subject="jwt:svc", tenant="globex")


def activity(goal: str = "g42", n: int = 1) -> dict:
    return {
        "goalId": goal,
        "activity": {
            "id": f"a{n}",
            "kind": "comment",
            "actorId": "alice",
            "text": "nice",
            "createdAt": "2026-02-17T10:00:00Z",
        },
    }


def like(n: int = 1) -> dict:
    return {"postId": "p1", "likerId": f"u{n}", "likeCount": n, "createdAt": "2026-02-17T10:00:00Z"}


def viewers() -> dict:
    return {"goalId": "g42", "viewerIds": ["bob"], "count": 1}


def durable(users=("bob",), **extra) -> dict:
    return {
        "type": "goal.activity.created",
        "payload": activity(),
        "to": {"users": list(users)},
        **extra,
    }


async def head(store, user: str) -> int:
    return (await run_store(store.stream_position, user)).seq


# -- credentials ----------------------------------------------------------------


async def test_api_key_credential_names_the_key_by_fingerprint(api):
    credential = await api.credential(None, API_KEY)
    assert credential.tenant is None
    assert credential.subject.startswith("key:")
    assert API_KEY not in credential.subject


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [
        (None, None),
        ("", None),
        (None, "wrong-key"),
        (None, ""),
        ("Bearer not-a-jwt", None),
        ("Basic abc", None),
        (f"Bearer {token('svc', scopes=['publish'])}", "wrong-key"),
    ],
)
async def test_missing_or_wrong_credentials_are_unauthorized(api, authorization, api_key):
    with pytest.raises(Unauthorized):
        await api.credential(authorization, api_key)


async def test_expired_token_is_unauthorized(api):
    expired = token("svc", scopes=["publish"], now=1_000_000, ttl_s=10)
    with pytest.raises(TokenExpired):
        await api.credential(f"Bearer {expired}", None)


async def test_token_without_publish_scope_is_forbidden(api):
    with pytest.raises(Forbidden):
        await api.credential(f"Bearer {token('alice', tenant='acme')}", None)


async def test_publish_token_carries_its_tenant(api):
    credential = await api.credential(
        f"Bearer {token('svc', scopes=['publish'], tenant='acme')}", None
    )
    assert credential.tenant == "acme"
    assert credential.subject == "jwt:svc" or credential.subject.endswith("svc")
    assert "acme" in credential.idempotency_scope


# -- durable events ---------------------------------------------------------------


async def test_durable_event_is_appended_to_each_recipient_and_fanned_out(api, store, fanout):
    status, body = await api.handle(KEY, durable(users=["bob", "carol", "bob"]))
    assert status == 202
    assert body == {
        "results": [
            {
                "type": "goal.activity.created",
                "recipients": {"bob": 1, "carol": 1},
                "replayed": False,
            }
        ],
        "replayed": False,
    }
    assert [(e.user_id, e.seq, e.type) for e in fanout.events] == [
        ("bob", 1, "goal.activity.created"),
        ("carol", 1, "goal.activity.created"),
    ]
    stored = await run_store(store.events_after, "bob", 0)
    assert [(e.seq, e.payload) for e in stored] == [(1, activity())]

    status, body = await api.handle(KEY, durable(users=["bob"]))
    assert (status, body["results"][0]["recipients"]) == (202, {"bob": 2})


async def test_tenant_credential_appends_to_tenant_qualified_streams(api, store, fanout):
    status, body = await api.handle(ACME, durable(users=["bob"]))
    assert status == 202
    assert body["results"][0]["recipients"] == {"bob": 1}
    assert [e.user_id for e in fanout.events] == ["acme/bob"]
    assert await head(store, "acme/bob") == 1
    assert await head(store, "bob") == 0
    assert await head(store, "globex/bob") == 0


@pytest.mark.parametrize("credential", [ACME, KEY])
@pytest.mark.parametrize("user", ["globex/bob", "acme/bob", "/bob"])
async def test_qualified_user_ids_are_forbidden(api, store, fanout, credential, user):
    status, body = await api.handle(credential, durable(users=["carol", user]))
    assert status == 403
    assert body["error"]["code"] == "FORBIDDEN"
    assert body["error"]["path"] == "to.users[1]"
    assert fanout.calls == []
    for stream in ("carol", "acme/carol", "globex/bob", "acme/bob"):
        assert await head(store, stream) == 0


# -- ephemeral topic events ---------------------------------------------------------


async def test_topic_publish_is_ephemeral_in_the_credentials_tenant(api, store, fanout):
    event = {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": "goal:g42"}}
    status, body = await api.handle(ACME, event)
    assert status == 202
    assert body["results"] == [
        {"type": "goal.viewers.updated", "recipients": {}, "topic": "goal:g42", "replayed": False}
    ]
    assert fanout.events == []
    [ephemeral] = fanout.ephemeral
    assert (ephemeral.type, ephemeral.topic, ephemeral.cls, ephemeral.payload) == (
        "goal.viewers.updated",
        "goal:acme/g42",
        "latest",
        viewers(),
    )
    assert ephemeral.key == "goal.viewers.updated:goal:acme/g42"


async def test_topic_publish_without_tenant_keeps_the_topic(api, fanout):
    event = {
        "type": "feed.post.typing",
        "payload": {"postId": "p1", "userId": "u1", "typing": True},
        "to": {"topic": "post:p1"},
    }
    assert (await api.handle(KEY, event))[0] == 202
    assert [e.topic for e in fanout.ephemeral] == ["post:p1"]


@pytest.mark.parametrize("topic", ["goal:globex/g42", "goal:acme/g42"])
async def test_naming_a_tenant_topic_is_forbidden(api, fanout, topic):
    event = {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": topic}}
    status, body = await api.handle(ACME, event)
    assert (status, body["error"]["code"], body["error"]["path"]) == (403, "FORBIDDEN", "to.topic")
    assert fanout.calls == []


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "status", "code", "path"),
    [
        (
            {
                "type": "goal.activity.created",
                "payload": {"activity": {}},
                "to": {"users": ["bob"]},
            },
            422,
            "PAYLOAD_INVALID",
            "payload.goalId",
        ),
        (
            durable() | {"payload": activity() | {"goalId": ""}},
            422,
            "PAYLOAD_INVALID",
            "payload.goalId",
        ),
        (
            {
                "type": "sms.message.received",
                "to": {"users": ["bob"]},
                "payload": {
                    "messageId": "m1",
                    "from": "12345",
                    "body": "hi",
                    "receivedAt": "2026-02-17T10:00:00Z",
                },
            },
            422,
            "PAYLOAD_INVALID",
            "payload.from",
        ),
        (durable() | {"type": "goal.activity.deleted"}, 422, "UNKNOWN_EVENT_TYPE", "type"),
        (durable() | {"type": "chat.message"}, 422, "NOT_PUBLISHABLE", "type"),
        (durable() | {"to": {"topic": "goal:g42"}}, 422, "WRONG_RECIPIENTS", "to.topic"),
        (
            {"type": "goal.viewers.updated", "payload": viewers(), "to": {"users": ["bob"]}},
            422,
            "WRONG_RECIPIENTS",
            "to.users",
        ),
        (
            {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": "post:p1"}},
            422,
            "WRONG_RECIPIENTS",
            "to.topic",
        ),
        (durable() | {"to": {}}, 400, "BAD_REQUEST", "to"),
        (durable() | {"to": {"users": ["bob"], "topic": "goal:g1"}}, 400, "BAD_REQUEST", "to"),
        (durable() | {"to": {"users": []}}, 400, "BAD_REQUEST", "to.users"),
        (durable() | {"to": {"users": [7]}}, 400, "BAD_REQUEST", "to.users[0]"),
        (
            durable() | {"to": {"users": [f"u{i}" for i in range(1001)]}},
            413,
            "TOO_MANY_RECIPIENTS",
            "to.users",
        ),
        ({"payload": activity(), "to": {"users": ["bob"]}}, 400, "BAD_REQUEST", "type"),
        (
            {"type": "goal.activity.created", "to": {"users": ["bob"]}},
            400,
            "BAD_REQUEST",
            "payload",
        ),
        (durable() | {"idempotencyKey": ""}, 400, "BAD_REQUEST", "idempotencyKey"),
        (durable() | {"idempotencyKey": "k" * 256}, 400, "BAD_REQUEST", "idempotencyKey"),
        ({"events": []}, 400, "BAD_REQUEST", "events"),
        ({"events": {"type": "x"}}, 400, "BAD_REQUEST", "events"),
    ],
)
async def test_refusals_answer_with_a_path_and_change_nothing(
    api, store, fanout, event, status, code, path
):
    got_status, body = await api.handle(KEY, event)
    assert got_status == status, body
    assert body["error"]["code"] == code
    assert body["error"]["path"] == path
    assert body["error"]["message"]
    assert fanout.calls == []
    assert await head(store, "bob") == 0


@pytest.mark.parametrize("body", [[], "text", None, 3])
async def test_a_body_that_is_not_an_object_is_a_bad_request(api, body):
    status, answer = await api.handle(KEY, body)
    assert (status, answer["error"]["code"]) == (400, "BAD_REQUEST")


# -- batches ---------------------------------------------------------------------------


async def test_batch_commits_every_event_in_order(api, store, fanout):
    events = [durable(users=["bob"]) | {"payload": activity(n=n)} for n in range(5)]
    events.append(
        {"type": "feed.like.created", "payload": like(), "to": {"users": ["bob", "carol"]}}
    )
    events.append(
        {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": "goal:g42"}}
    )
    status, body = await api.handle(KEY, {"events": events})
    assert status == 202
    assert [r["recipients"] for r in body["results"]] == [
        {"bob": 1},
        {"bob": 2},
        {"bob": 3},
        {"bob": 4},
        {"bob": 5},
        {"bob": 6, "carol": 1},
        {},
    ]
    assert len(fanout.calls) == 1
    assert [e.seq for e in fanout.events if e.user_id == "bob"] == [1, 2, 3, 4, 5, 6]
    assert [e.topic for e in fanout.ephemeral] == ["goal:g42"]
    stored = await run_store(store.events_after, "bob", 0)
    assert [e.payload["activity"]["id"] for e in stored[:5]] == ["a0", "a1", "a2", "a3", "a4"]


async def test_batch_with_one_invalid_event_commits_nothing(api, store, fanout):
    events = [durable(users=["bob"]) for _ in range(5)]
    events[3] = durable(users=["bob"]) | {"payload": {"activity": activity()["activity"]}}
    status, body = await api.handle(KEY, {"events": events})
    assert status == 422
    assert body["error"]["path"] == "events[3].payload.goalId"
    assert fanout.calls == []
    assert await head(store, "bob") == 0


async def test_batch_over_the_limit_is_refused_with_413(api, store, fanout):
    status, body = await api.handle(KEY, {"events": [durable() for _ in range(1001)]})
    assert (status, body["error"]["code"], body["error"]["path"]) == (
        413,
        "BATCH_TOO_LARGE",
        "events",
    )
    assert await head(store, "bob") == 0
    status, body = await api.handle(KEY, {"events": [durable() for _ in range(1000)]})
    assert status == 202
    assert body["results"][-1]["recipients"] == {"bob": 1000}


async def test_duplicate_key_within_a_batch_is_a_bad_request(api, store):
    events = [durable(idempotencyKey="k1"), durable(idempotencyKey="k1")]
    status, body = await api.handle(KEY, {"events": events})
    assert (status, body["error"]["code"]) == (400, "BAD_REQUEST")
    assert await head(store, "bob") == 0


# -- idempotency -------------------------------------------------------------------------


async def test_replay_returns_the_original_answer_and_appends_nothing(api, store, fanout):
    first = await api.handle(KEY, durable(users=["bob", "carol"], idempotencyKey="req-1"))
    assert first[0] == 202
    assert first[1]["results"][0]["idempotencyKey"] == "req-1"
    await api.handle(KEY, durable(users=["bob"]))  # bob's head moves on to 2
    calls = len(fanout.calls)

    status, body = await api.handle(KEY, durable(users=["bob", "carol"], idempotencyKey="req-1"))
    assert status == 202
    assert body["replayed"] is True
    assert body["results"] == [{**first[1]["results"][0], "replayed": True}]
    assert body["results"][0]["recipients"] == {"bob": 1, "carol": 1}
    assert len(fanout.calls) == calls
    assert await head(store, "bob") == 2
    assert await head(store, "carol") == 1


async def test_replay_of_a_topic_publish_is_not_fanned_out_again(api, fanout):
    event = {"type": "goal.viewers.updated", "payload": viewers(), "to": {"topic": "goal:g42"}}
    event["idempotencyKey"] = "t-1"
    await api.handle(ACME, event)
    status, body = await api.handle(ACME, event)
    assert (status, body["replayed"]) == (202, True)
    assert len(fanout.ephemeral) == 1


async def test_batch_mixing_replays_and_new_events(api, store):
    await api.handle(KEY, durable(idempotencyKey="a"))
    status, body = await api.handle(
        KEY, {"events": [durable(idempotencyKey="a"), durable(idempotencyKey="b")]}
    )
    assert status == 202
    assert [(r["recipients"], r["replayed"]) for r in body["results"]] == [
        ({"bob": 1}, True),
        ({"bob": 2}, False),
    ]
    assert body["replayed"] is False
    assert await head(store, "bob") == 2


async def test_reusing_a_key_for_a_different_event_is_refused_and_rolls_back(api, store, fanout):
    await api.handle(KEY, durable(idempotencyKey="a"))
    changed = durable(idempotencyKey="a") | {"payload": activity(n=2)}
    status, body = await api.handle(KEY, {"events": [durable(users=["carol"]), changed]})
    assert (status, body["error"]["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert body["error"]["path"] == "events[1].idempotencyKey"
    assert await head(store, "carol") == 0
    assert await head(store, "bob") == 1
    assert len(fanout.calls) == 1


async def test_keys_are_scoped_by_credential(api, store):
    await api.handle(ACME, durable(idempotencyKey="same"))
    status, body = await api.handle(GLOBEX, durable(idempotencyKey="same"))
    assert (status, body["replayed"]) == (202, False)
    other = PublishCredential(subject="jwt:other", tenant="acme")
    status, body = await api.handle(other, durable(idempotencyKey="same"))
    assert (status, body["replayed"]) == (202, False)
    assert await head(store, "acme/bob") == 2
    assert await head(store, "globex/bob") == 1


async def test_keys_are_remembered_for_24_hours(api, store, clock):
    await api.handle(KEY, durable(idempotencyKey="day"))
    clock.now += 86_400 - 1
    assert (await api.handle(KEY, durable(idempotencyKey="day")))[1]["replayed"] is True
    assert await head(store, "bob") == 1
    clock.now += 2
    status, body = await api.handle(KEY, durable(idempotencyKey="day"))
    assert (status, body["replayed"]) == (202, False)
    assert body["results"][0]["recipients"] == {"bob": 2}
