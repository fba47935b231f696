"""The Redis backplane: nodes of one cluster in one process, on a real Redis.

Each test is a cluster of two or three nodes (a hub and a `RedisBackplane`
each) sharing one fake store and domain, with real `Connection`s on memory
transports. Most tests use the machine's Redis under a prefix of their own;
the outage tests start a redis-server of their own and kill it.
"""

from __future__ import annotations

import shutil
import time

import coredis
import pytest
import trio

from gateway.errors import RateLimited
from gateway.events import Ephemeral
from gateway.ws.redis_backplane import (
    Channels,
    Interest,
    decode_message,
    encode_durable,
    encode_ephemeral,
)

from .redis_nodes import SHARED_REDIS, Cluster, RedisServer

pytestmark = pytest.mark.redis

GUARD_S = 10


@pytest.fixture
async def redis():
    try:
        client = coredis.Redis.from_url(SHARED_REDIS, decode_responses=True)
        async with client:
            with trio.fail_after(2):
                await client.ping()
            yield client
    except (coredis.exceptions.ConnectionError, trio.TooSlowError):
        pytest.skip(f"no Redis at {SHARED_REDIS}")


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def cluster(nursery, redis):
    cluster = Cluster(nursery, SHARED_REDIS)
    yield cluster
    with trio.fail_after(GUARD_S):
        for node in cluster.nodes:
            await node.stop()
    keys = await cluster.redis_keys(redis)
    # A reaper's claim on a node may outlive the test; it expires on its own.
    leftovers = {key for key in keys if await redis.ttl(key) < 0}
    if keys:
        await redis.delete(list(keys))
    assert not leftovers, f"nodes that left gracefully left keys behind: {sorted(leftovers)}"
    for node in cluster.nodes:
        assert node.hub.is_empty()


async def numsub(redis, *channels: str) -> dict[str, int]:
    return dict(await redis.pubsub_numsub(*channels))


async def next_of_type(client, kind: str) -> dict:
    while True:
        envelope = await client.receive()
        if envelope["type"] == kind:
            return envelope


# -- names and messages (no Redis) --------------------------------------------------------


def test_an_event_for_several_users_goes_to_each_channel_narrowed_to_its_user():
    channels = Channels("p:")
    event = Ephemeral("x.y", {"n": 1}, users=("a", "acme/b", "a"))
    routed = channels.of_ephemeral(event)
    assert [(c, e.users) for c, e in routed] == [
        ("p:user:a", ("a",)),
        ("p:user:acme/b", ("acme/b",)),
    ]
    assert {e.id for _, e in routed} == {event.id}
    topic = Ephemeral("t", {}, topic="event:e1", exclude_user="a")
    assert channels.of_ephemeral(topic) == [("p:topic:event:e1", topic)]
    tenant = Ephemeral("system.notice", {}, broadcast=True, tenant="acme")
    assert channels.of_ephemeral(tenant) == [("p:tenant:acme", tenant)]
    everyone = Ephemeral("system.notice", {}, broadcast=True)
    assert channels.of_ephemeral(everyone) == [("p:everyone", everyone)]


def test_interest_counts_tenant_and_everyone_channels_by_their_users():
    interest = Interest(Channels("p:"))
    interest.follow("user", "acme/a")
    interest.follow("user", "acme/b")
    interest.follow("user", "c")
    interest.follow("topic", "presence:c")
    assert interest.wanted() == {
        "p:user:acme/a", "p:user:acme/b", "p:user:c", "p:tenant:acme", "p:everyone",
        "p:topic:presence:c",
    }  # fmt: skip
    interest.unfollow("user", "acme/a")
    assert "p:tenant:acme" in interest.wanted()
    interest.unfollow("user", "acme/b")
    interest.unfollow("topic", "presence:c")
    assert interest.wanted() == {"p:user:c", "p:everyone"}
    interest.unfollow("user", "c")
    assert interest.wanted() == set() and interest.users == set()
    assert interest.user_of("p:user:acme/a") == "acme/a" and interest.user_of("p:tenant:x") is None


def test_a_redis_url_that_is_not_redis_is_refused_at_start():
    from gateway.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="--redis-url 'http://cache:6379'"):
        Settings(jwt_secret="s" * 32, redis_url="http://cache:6379").check()
    Settings(jwt_secret="s" * 32, redis_url="redis://cache:6379/0").check()


def test_messages_round_trip():
    from gateway.events import StoredEvent

    event = StoredEvent(
        "acme/a", "ep", 3, "evt_1", "chat.message", {"b": [1]}, "2026-01-01T00:00:00.000Z"
    )
    assert decode_message(encode_durable("n1", [event])) == ("n1", [event], None)
    notice = Ephemeral("system.notice", {"t": 1}, broadcast=True, tenant="acme", users=())
    typing = Ephemeral("chat.typing.start", {}, cls="drop", users=("a", "b"), exclude_user="a")
    assert decode_message(encode_ephemeral("n2", notice)) == ("n2", [], notice)
    assert decode_message(encode_ephemeral("n2", typing))[2] == typing


# -- delivery across nodes ---------------------------------------------------------------


async def test_a_durable_event_reaches_the_node_of_its_user_and_no_other(cluster, redis):
    a, b, c = await cluster.node("A"), await cluster.node("B"), await cluster.node("C")
    bob = await b.connect("bob")
    await c.connect("carol")
    assert await numsub(redis, cluster.channel("user", "bob")) == {
        cluster.channel("user", "bob"): 1
    }
    latencies = []
    with trio.fail_after(GUARD_S):
        for n in range(20):
            event = cluster.store.append("bob", payload={"n": n})
            started = time.perf_counter()
            await a.hub.publish([event])
            received = await next_of_type(bob, "notification.new")
            latencies.append(time.perf_counter() - started)
            assert received["seq"] == event.seq and received["payload"] == {"n": n}
    assert c.backplane.stats["received"] == 0  # C has no bob: it never heard of him
    assert b.backplane.stats["received"] == 20
    latencies.sort()
    print(
        f"A -> B delivery over Redis: p50 {latencies[10] * 1000:.2f} ms, max {latencies[-1] * 1000:.2f} ms"
    )


async def test_topic_events_and_typing_reach_subscribers_on_other_nodes(cluster, redis):
    a, b = await cluster.node("A"), await cluster.node("B")
    cluster.domain.conversations["c1"] = {"alice", "bob"}
    alice = await a.connect("alice")
    bob = await b.connect("bob")
    await bob.send("subscribe", {"topic": "conversation:c1"}, id="s1")
    assert (await next_of_type(bob, "ack"))["replyTo"] == "s1"
    await alice.send("subscribe", {"topic": "conversation:c1"}, id="s2")
    await next_of_type(alice, "ack")
    await b.backplane.settled()
    await a.backplane.settled()
    topic = cluster.channel("topic", "conversation:c1")
    assert (await numsub(redis, topic))[topic] == 2  # one subscriber per node
    with trio.fail_after(GUARD_S):
        await alice.send("chat.typing", {"conversationId": "c1", "state": "started"}, id="t1")
        typing = await next_of_type(bob, "chat.typing.started")
        assert typing["payload"] == {"conversationId": "c1", "userId": "alice"}
        counters = Ephemeral(
            "event.counters.updated", {"going": 3}, cls="latest", topic="conversation:c1"
        )
        await b.hub.publish([], [counters])
        assert (await next_of_type(alice, "event.counters.updated"))["payload"] == {"going": 3}


async def test_a_subscribe_ack_means_the_topic_is_live_on_this_node(cluster, redis):
    """No `settled()` here: the ack alone promises that another node's events arrive."""
    a, b = await cluster.node("A"), await cluster.node("B")
    alice = await a.connect("alice")
    for n, topic in enumerate(("presence:bob", "presence:carol", "presence:dave")):
        await alice.send("subscribe", {"topic": topic}, id=f"s{n}")
        assert (await next_of_type(alice, "ack"))["replyTo"] == f"s{n}"
        channel = cluster.channel("topic", topic)
        assert channel in a.backplane._subscribed  # before any other await
        assert (await numsub(redis, channel))[channel] == 1
        with trio.fail_after(GUARD_S):
            await b.hub.publish([], [Ephemeral("user.presence.updated", {"n": n}, topic=topic)])
            assert (await next_of_type(alice, "user.presence.updated"))["payload"] == {"n": n}


async def test_revocation_reaches_the_users_node(cluster):
    a, b = await cluster.node("A"), await cluster.node("B")
    cluster.domain.conversations["c1"] = {"alice", "bob"}
    bob = await b.connect("bob")
    await bob.send("subscribe", {"topic": "conversation:c1"}, id="s1")
    await next_of_type(bob, "ack")
    revoked = Ephemeral(
        "subscription.revoked",
        {"topic": "conversation:c1", "reason": "LEFT_CONVERSATION"},
        users=("bob",),
    )
    with trio.fail_after(GUARD_S):
        await a.hub.publish([], [revoked])
        await next_of_type(bob, "subscription.revoked")
    assert b.hub.subscribers("conversation:c1") == []


async def test_subscriptions_follow_the_local_members(cluster, redis):
    _a, b = await cluster.node("A"), await cluster.node("B")
    user, tenant, topic = (
        cluster.channel("user", "acme/bob"),
        cluster.channel("tenant", "acme"),
        cluster.channel("topic", "presence:x"),
    )
    tab1 = await b.connect("acme/bob")
    tab2 = await b.connect("acme/bob")
    await tab1.send("subscribe", {"topic": "presence:x"}, id="s")
    await next_of_type(tab1, "ack")
    await tab2.send("subscribe", {"topic": "presence:x"}, id="s")
    await next_of_type(tab2, "ack")
    await b.backplane.settled()
    assert await numsub(redis, user, tenant, topic, cluster.channel("everyone")) == {
        user: 1, tenant: 1, topic: 1, cluster.channel("everyone"): 1,
    }  # fmt: skip
    await b.disconnect(tab1)
    await b.backplane.settled()
    assert await numsub(redis, user, tenant, topic) == {user: 1, tenant: 1, topic: 1}
    await tab2.send("unsubscribe", {"topic": "presence:x"}, id="u")
    await next_of_type(tab2, "ack")
    await b.backplane.settled()
    assert (await numsub(redis, topic))[topic] == 0
    await b.disconnect(tab2)
    await b.backplane.settled()
    assert await redis.pubsub_channels(f"{cluster.prefix}*") == set()
    assert b.backplane.stats["subscribed"] == b.backplane.stats["unsubscribed"] == 4


async def test_a_tenant_broadcast_reaches_that_tenant_only(cluster, redis):
    a, b, c = await cluster.node("A"), await cluster.node("B"), await cluster.node("C")
    acme = await b.connect("acme/alice")
    globex = await b.connect("globex/bob")
    plain = await c.connect("carol")
    assert (await numsub(redis, cluster.channel("tenant", "acme")))[
        cluster.channel("tenant", "acme")
    ] == 1
    with trio.fail_after(GUARD_S):
        notice = Ephemeral("system.notice", {"text": "acme only"}, broadcast=True, tenant="acme")
        await a.hub.publish([], [notice])
        assert (await next_of_type(acme, "system.notice"))["payload"]["text"] == "acme only"
        everyone = Ephemeral("system.notice", {"text": "all"}, broadcast=True)
        await a.hub.publish([], [everyone])
        for client in (acme, globex, plain):
            assert (await next_of_type(client, "system.notice"))["payload"]["text"] == "all"
    assert c.backplane.stats["received"] == 1  # the operator's notice, not acme's


async def test_a_node_skips_its_own_messages(cluster):
    a, _b = await cluster.node("A"), await cluster.node("B")
    alice = await a.connect("alice")
    event = cluster.store.append("alice")
    with trio.fail_after(GUARD_S):
        await a.hub.publish([event])
        assert (await next_of_type(alice, "notification.new"))["seq"] == event.seq
        await trio.sleep(0.2)
    assert a.backplane.stats["received"] == 0
    assert a.hub.delivered_durable == 1


# -- presence ----------------------------------------------------------------------------------


async def test_presence_is_the_aggregate_over_every_node(cluster):
    a, b, c = await cluster.node("A"), await cluster.node("B"), await cluster.node("C")
    watcher = await a.connect("alice")
    await watcher.send("subscribe", {"topic": "presence:bob"}, id="w")
    await next_of_type(watcher, "ack")
    await a.backplane.settled()

    async def seen() -> str:
        return (await next_of_type(watcher, "user.presence.updated"))["payload"]["status"]

    with trio.fail_after(GUARD_S):
        on_b = await b.connect("bob")
        assert await seen() == "ONLINE"
        on_c = await c.connect("bob")
        await on_b.send("presence.set", {"status": "AWAY"}, id="p")
        await next_of_type(on_b, "ack")
        await c.disconnect(on_c)  # B alone holds bob now, AWAY
        assert await seen() == "AWAY"
        await b.disconnect(on_b)
        assert await seen() == "OFFLINE"
    calls = [call for call in cluster.domain.presence_calls if call[0] == "bob"]
    assert calls == [("bob", "ONLINE"), ("bob", "AWAY"), ("bob", "OFFLINE")]


async def test_a_dead_nodes_users_go_offline_when_its_lease_expires(cluster, redis):
    a = await cluster.node("A", lease_ttl_s=1.0)
    b = await cluster.node("B", lease_ttl_s=1.0)
    watcher = await a.connect("alice")
    await watcher.send("subscribe", {"topic": "presence:bob"}, id="w")
    await next_of_type(watcher, "ack")
    await a.backplane.settled()
    with trio.fail_after(GUARD_S):
        await b.hub.claim("bob", 1)  # the handshake's slot, as the endpoint claims it
        bob = await b.connect("bob")
        assert (await next_of_type(watcher, "user.presence.updated"))["payload"][
            "status"
        ] == "ONLINE"
        with pytest.raises(RateLimited):
            await a.hub.claim("bob", 1)
        # B dies: its backplane stops without a goodbye, its connection stays behind.
        b.backplane.leave_on_exit = False
        b.scope.cancel()
        await b.stopped.wait()
        died = trio.current_time()
        status = (await next_of_type(watcher, "user.presence.updated"))["payload"]["status"]
        took = trio.current_time() - died
    assert status == "OFFLINE"
    assert took < 1.0 + 3 * 0.25 + 1.0, took  # the TTL, a janitor round, slack
    print(f"OFFLINE announced {took:.2f} s after the node died (lease TTL 1 s)")
    await a.hub.claim("bob", 1)  # the dead node's slot is reclaimed
    a.hub.release_slot("bob")
    assert await redis.exists([cluster.channel("node", "B")]) == 0
    # what is left of B in this process: end it quietly
    await b.disconnect(bob)
    b.hub.release_slot("bob")
    cluster.nodes.remove(b)


async def test_a_node_restarted_under_its_id_clears_what_it_left(cluster):
    a = await cluster.node("A")
    b = await cluster.node("B")
    watcher = await a.connect("alice")
    await watcher.send("subscribe", {"topic": "presence:bob"}, id="w")
    await next_of_type(watcher, "ack")
    await a.backplane.settled()
    with trio.fail_after(GUARD_S):
        bob = await b.connect("bob")
        assert (await next_of_type(watcher, "user.presence.updated"))["payload"][
            "status"
        ] == "ONLINE"
        b.backplane.leave_on_exit = False
        b.scope.cancel()
        await b.stopped.wait()
        await b.disconnect(bob)
        cluster.nodes.remove(b)
        await cluster.node("B")  # long before the old lease expires
        assert (await next_of_type(watcher, "user.presence.updated"))["payload"][
            "status"
        ] == "OFFLINE"


# -- connection slots ---------------------------------------------------------------------------


async def test_the_connection_limit_holds_across_nodes_under_concurrent_claims(cluster, redis):
    a, b = await cluster.node("A"), await cluster.node("B")
    granted: list[str] = []
    refused: list[str] = []

    async def claim(node) -> None:
        try:
            await node.hub.claim("dave", 5)
        except RateLimited:
            refused.append(node.name)
        else:
            granted.append(node.name)

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as racing:
            for i in range(24):
                racing.start_soon(claim, (a, b)[i % 2])
    assert len(granted) == 5 and len(refused) == 19, (granted, refused)
    held = await redis.hgetall(cluster.channel("slots", "dave"))
    assert sum(int(v) for v in held.values()) == 5
    assert a.hub.slots_held("dave") + b.hub.slots_held("dave") == 5
    # what A releases, B may take
    released = a.hub.slots_held("dave")
    for _ in range(released):
        a.hub.release_slot("dave")
    with trio.fail_after(GUARD_S):
        while "A" in await redis.hgetall(cluster.channel("slots", "dave")):
            await trio.sleep(0.01)
        for _ in range(released):
            await b.hub.claim("dave", 5)
        with pytest.raises(RateLimited):
            await b.hub.claim("dave", 5)
    for _ in range(b.hub.slots_held("dave")):
        b.hub.release_slot("dave")
    with trio.fail_after(GUARD_S):
        while await redis.exists([cluster.channel("slots", "dave")]):
            await trio.sleep(0.01)


# -- Redis goes away ------------------------------------------------------------------------------


async def test_delivery_survives_a_redis_restart(nursery, own_redis):
    cluster = Cluster(nursery, own_redis.url)
    a, b = await cluster.node("A"), await cluster.node("B")
    bob = await b.connect("bob")
    try:
        with trio.fail_after(GUARD_S):
            first = cluster.store.append("bob")
            await a.hub.publish([first])
            assert (await next_of_type(bob, "notification.new"))["seq"] == 1

            own_redis.kill()
            while a.backplane.ready or b.backplane.ready:
                await trio.sleep(0.01)
            # Published while Redis is away: the store tail delivers it.
            during = cluster.store.append("bob", payload={"during": True})
            await a.hub.publish([during])
            got = await next_of_type(bob, "notification.new")
            assert got["seq"] == 2 and got["payload"] == {"during": True}

            restarted = trio.current_time()
            await trio.to_thread.run_sync(own_redis.start)
            await a.backplane.settled()
            await b.backplane.settled()
            recovered = trio.current_time() - restarted
            after = cluster.store.append("bob", payload={"after": True})
            await a.hub.publish([after])
            assert (await next_of_type(bob, "notification.new"))["payload"] == {"after": True}
            # the first and the last came over Redis (the last may also have been
            # filled from the store by the reconnect's catch-up, a moment sooner)
            while b.backplane.stats["received"] < 2:
                await trio.sleep(0.01)
        print(f"delivery over Redis resumed {recovered:.2f} s after redis-server restarted")
    finally:
        with trio.fail_after(GUARD_S):
            for node in cluster.nodes:
                await node.stop()


async def test_events_published_while_redis_is_down_reach_every_node_after_it(nursery, own_redis):
    """A notification lost in Redis (here: a node publishing while Redis is down
    for it) is still delivered, by the reconnect's catch-up or the tail."""
    cluster = Cluster(nursery, own_redis.url)
    a = await cluster.node("A")
    b = await cluster.node(
        "B", tail_interval_s=3600
    )  # only the reconnect's catch-up can deliver it
    bob = await b.connect("bob")
    try:
        with trio.fail_after(GUARD_S):
            own_redis.kill()
            while b.backplane.ready:
                await trio.sleep(0.01)
            lost = cluster.store.append("bob")
            await a.hub.publish([lost])
            await trio.to_thread.run_sync(own_redis.start)
            got = await next_of_type(bob, "notification.new")
            assert got["seq"] == lost.seq
    finally:
        with trio.fail_after(GUARD_S):
            for node in cluster.nodes:
                await node.stop()
