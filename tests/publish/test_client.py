"""The publisher clients against a real node, including retries that lose an answer."""

from __future__ import annotations

import itertools

import httpx
import pytest
import trio

from gateway.publish import Publisher, PublishError, TrioPublisher, event
from tests.publish.conftest import E2E_API_KEY

_users = itertools.count(1)


def fresh_user() -> str:
    return f"client-user-{next(_users)}"


def like(n: int = 1) -> dict:
    return {"postId": "p1", "likerId": f"u{n}", "likeCount": n, "createdAt": "2026-02-17T10:00:00Z"}


def no_wait(_attempt: int) -> float:
    return 0.0


def test_sync_publish_and_batch(server):
    user = fresh_user()
    with Publisher(server.url, api_key=E2E_API_KEY) as pub:
        result = pub.publish("feed.like.created", like(), users=[user])
        assert (result.type, result.recipients, result.replayed) == (
            "feed.like.created",
            {user: 1},
            False,
        )
        assert result.idempotency_key and result.idempotency_key.startswith("pub_")
        results = pub.publish_batch(
            [event("feed.like.created", like(n), users=[user]) for n in range(3)]
        )
        assert [r.recipients[user] for r in results] == [2, 3, 4]


def test_sync_publish_with_a_token(server):
    user = fresh_user()
    token = server.token("planner", scopes=["publish"])
    with Publisher(server.url, token=token) as pub:
        assert pub.publish("feed.like.created", like(), users=[user]).recipients == {user: 1}


def test_sync_errors_carry_status_code_and_path(server):
    with Publisher(server.url, api_key=E2E_API_KEY, retries=0) as pub:
        with pytest.raises(PublishError) as caught:
            pub.publish("feed.like.created", {"postId": "p1"}, users=["x"])
        assert (caught.value.status, caught.value.code) == (422, "PAYLOAD_INVALID")
        assert caught.value.path == "payload.likerId"
    with Publisher(server.url, api_key="wrong", retries=0) as pub:
        with pytest.raises(PublishError) as caught:
            pub.publish("feed.like.created", like(), users=["x"])
        assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")


def test_exactly_one_credential_and_one_audience():
    with pytest.raises(ValueError):
        Publisher("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        Publisher("http://127.0.0.1:1", token="t", api_key="k")
    with pytest.raises(ValueError):
        event("feed.like.created", like(), users=["a"], topic="post:p1")


def test_sync_retry_after_a_lost_answer_does_not_publish_twice(server):
    """The first attempt reaches the node but its answer is lost (503): the retry is a replay."""
    user = fresh_user()
    real = httpx.Client(timeout=10)
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        forwarded = real.send(
            httpx.Request(
                request.method, request.url, headers=request.headers, content=request.content
            )
        )
        attempts.append(forwarded.status_code)
        if len(attempts) == 1:
            return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "lost"}})
        return httpx.Response(
            forwarded.status_code, content=forwarded.content, headers=forwarded.headers
        )

    client = httpx.Client(transport=httpx.MockTransport(flaky))
    with Publisher(server.url, api_key=E2E_API_KEY, client=client, backoff=no_wait) as pub:
        result = pub.publish("feed.like.created", like(), users=[user])
    real.close()
    assert attempts == [202, 202]
    assert result.recipients == {user: 1}
    assert result.replayed is True
    with Publisher(server.url, api_key=E2E_API_KEY) as pub:
        assert pub.publish("feed.like.created", like(), users=[user]).recipients == {user: 2}


def test_sync_gives_up_after_its_retries():
    calls: list[int] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(down))
    with (
        Publisher(
            "http://127.0.0.1:9", api_key="k", client=client, retries=2, backoff=no_wait
        ) as pub,
        pytest.raises(PublishError) as caught,
    ):
        pub.publish("feed.like.created", like(), users=["a"])
    assert caught.value.status == 0
    assert len(calls) == 3


async def test_trio_publisher(server):
    user = fresh_user()
    with trio.fail_after(20):
        async with TrioPublisher(server.url, api_key=E2E_API_KEY) as pub:
            first = await pub.publish(
                "feed.like.created", like(), users=[user], idempotency_key="k-1"
            )
            again = await pub.publish(
                "feed.like.created", like(), users=[user], idempotency_key="k-1"
            )
            batch = await pub.publish_batch([event("feed.like.created", like(2), users=[user])])
            with pytest.raises(PublishError) as caught:
                await pub.publish("no.such.type", {}, users=[user])
    assert first.recipients == again.recipients == {user: 1}
    assert (first.replayed, again.replayed) == (False, True)
    assert batch[0].recipients == {user: 2}
    assert (caught.value.status, caught.value.code, caught.value.path) == (
        422,
        "UNKNOWN_EVENT_TYPE",
        "type",
    )


async def test_trio_retries_429_honouring_retry_after(server):
    user = fresh_user()
    real = httpx.AsyncClient(timeout=10)
    answers: list[int] = []

    async def limited(request: httpx.Request) -> httpx.Response:
        if not answers:
            answers.append(429)
            return httpx.Response(
                429,
                headers={"Retry-After": "0"},
                json={"error": {"code": "RATE_LIMITED", "message": "slow"}},
            )
        forwarded = await real.send(
            httpx.Request(
                request.method, request.url, headers=request.headers, content=request.content
            )
        )
        answers.append(forwarded.status_code)
        return httpx.Response(
            forwarded.status_code, content=forwarded.content, headers=forwarded.headers
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(limited))
    with trio.fail_after(20):
        async with TrioPublisher(
            server.url, api_key=E2E_API_KEY, client=client, backoff=no_wait
        ) as pub:
            result = await pub.publish("feed.like.created", like(), users=[user])
        await real.aclose()
    assert answers == [429, 202]
    assert (result.recipients, result.replayed) == ({user: 1}, False)
