"""A connection over the in-memory transport: welcome, actions, errors, closes."""

from __future__ import annotations

import json

import trio

from gateway.ws.connection import WsSettings


def reply_to(action_id):
    return lambda envelope: envelope.get("replyTo") == action_id


async def ask(client, action, payload=None, *, id="c1"):
    await client.send(action, payload, id=id)
    with trio.fail_after(10):
        envelope, _ = await client.receive_until(reply_to(id))
    return envelope


async def test_welcome_carries_the_session_fields(world, autojump_clock):
    world.store.append("alice")
    conn, client = await world.connect("alice", welcome=False)
    with trio.fail_after(5):
        welcome = await client.receive()
    assert welcome["type"] == "session.welcome" and welcome["v"] == 1
    payload = welcome["payload"]
    assert payload["connectionId"] == conn.id
    assert payload["userId"] == "alice"
    assert (payload["epoch"], payload["seq"]) == (world.store.epoch, 1)
    assert payload["heartbeatIntervalMs"] == 30000
    assert payload["idleTimeoutMs"] == 75000
    assert payload["protocol"] == {"min": 1, "max": 1}
    assert payload["domains"]["chat"]["stage"] == "LIVE"
    assert payload["limits"]["maxFrameBytes"] == 65536
    assert payload["limits"]["actionsPerSecond"] == 20


async def test_ping_pong(world, autojump_clock):
    _, client = await world.connect("alice")
    pong = await ask(client, "ping")
    assert pong["type"] == "ping.pong" and "serverTime" in pong["payload"]
    assert "seq" not in pong or pong["seq"] is None


async def test_durable_events_after_welcome_in_order(world, autojump_clock):
    _, client = await world.connect("alice")
    await world.publish(world.store.append("alice"), world.store.append("alice"))
    with trio.fail_after(5):
        first, second = await client.receive(), await client.receive()
    assert (first["seq"], second["seq"]) == (1, 2)


async def test_subscribe_authorized_forbidden_and_unsubscribe(world, autojump_clock):
    world.domain.conversations["c"] = {"alice", "bob"}
    conn, client = await world.connect("alice")
    ack = await ask(client, "subscribe", {"topic": "conversation:c"}, id="s1")
    assert ack["type"] == "ack" and ack["payload"] == {"topic": "conversation:c"}
    assert conn in world.hub.subscribers("conversation:c")
    refused = await ask(client, "subscribe", {"topic": "conversation:other"}, id="s2")
    assert refused["type"] == "error" and refused["payload"]["code"] == "FORBIDDEN"
    ack = await ask(client, "unsubscribe", {"topic": "conversation:c"}, id="s3")
    assert ack["payload"] == {"topic": "conversation:c"}
    assert world.hub.subscribers("conversation:c") == []


async def test_notification_subscribe_is_acked(world, autojump_clock):
    _, client = await world.connect("alice")
    ack = await ask(client, "notification.subscribe")
    assert ack["type"] == "ack"


async def test_chat_send_acks_and_fans_out_to_participants_and_other_devices(world, autojump_clock):
    world.domain.conversations["c"] = {"alice", "bob"}
    _, alice = await world.connect("alice")
    _, alice_phone = await world.connect("alice")
    _, bob = await world.connect("bob")
    payload = {"conversationId": "c", "body": "hi", "clientMessageId": "k1"}
    await alice.send("chat.send", payload, id="m1")
    with trio.fail_after(5):
        ack, before = await alice.receive_until(reply_to("m1"))
        events = before or [await alice.receive()]
    assert ack["type"] == "ack" and ack["payload"]["message"]["body"] == "hi"
    assert [e["type"] for e in events] == ["chat.message"]
    for client in (alice_phone, bob):
        with trio.fail_after(5):
            event = await client.receive()
        assert event["type"] == "chat.message" and event["seq"] == 1
        assert event["payload"]["message"]["body"] == "hi"


async def test_chat_read_delivered_and_errors_from_the_domain(world, autojump_clock):
    world.domain.conversations["c"] = {"alice", "bob"}
    _, client = await world.connect("alice")
    ack = await ask(client, "chat.read", {"conversationId": "c"}, id="r1")
    assert ack["payload"]["conversation"]["id"] == "c"
    ack = await ask(client, "chat.delivered", {"conversationId": "c", "messageIds": ["m1"]}, id="d")
    assert ack["type"] == "ack"
    missing = await ask(client, "chat.read", {"conversationId": "nope"}, id="r2")
    assert missing["payload"]["code"] == "NOT_FOUND"
    world.domain.conversations["private"] = {"bob"}
    forbidden = await ask(
        client,
        "chat.send",
        {"conversationId": "private", "body": "x", "clientMessageId": "k"},
        id="r3",
    )
    assert forbidden["payload"]["code"] == "FORBIDDEN"


async def test_unexpected_failure_is_internal_and_the_connection_survives(world, autojump_clock):
    world.domain.conversations["c"] = {"alice"}
    world.domain.fail_next = RuntimeError("boom")
    _, client = await world.connect("alice")
    error = await ask(client, "chat.read", {"conversationId": "c"}, id="x")
    assert error["type"] == "error" and error["payload"]["code"] == "INTERNAL"
    assert "boom" not in error["payload"]["message"]
    assert (await ask(client, "ping", id="p"))["type"] == "ping.pong"


async def test_typing_reaches_other_subscribers_and_auto_stops_after_six_seconds(
    world, autojump_clock
):
    world.domain.conversations["c"] = {"alice", "bob"}
    _, alice = await world.connect("alice")
    _, bob = await world.connect("bob")
    for client in (alice, bob):
        await ask(client, "subscribe", {"topic": "conversation:c"}, id="s")
    start = trio.current_time()
    ack = await ask(alice, "chat.typing", {"conversationId": "c", "state": "started"}, id="t")
    assert ack["type"] == "ack"
    with trio.fail_after(10):
        started = await bob.receive()
        stopped = await bob.receive()
    assert started["type"] == "chat.typing.started"
    assert started["payload"] == {"conversationId": "c", "userId": "alice"}
    assert stopped["type"] == "chat.typing.stopped"
    assert 6 <= trio.current_time() - start < 6.5
    # the typist does not see their own typing
    pong = await ask(alice, "ping", id="p")
    assert pong["type"] == "ping.pong"


async def test_typing_renewed_is_not_stopped_and_disconnect_stops_it(world, autojump_clock):
    world.domain.conversations["c"] = {"alice", "bob"}
    alice_conn, alice = await world.connect("alice")
    _, bob = await world.connect("bob")
    await ask(bob, "subscribe", {"topic": "conversation:c"}, id="s")
    start = trio.current_time()
    await ask(alice, "chat.typing", {"conversationId": "c", "state": "started"}, id="t1")
    await trio.sleep(4)
    await ask(alice, "chat.typing", {"conversationId": "c", "state": "started"}, id="t2")
    await trio.sleep(4)  # 8 s after the first start, 4 s after the renewal
    alice.close()
    with trio.fail_after(5):
        await alice_conn.closed.wait()
        types = [(await bob.receive())["type"] for _ in range(3)]
    assert types == ["chat.typing.started", "chat.typing.started", "chat.typing.stopped"]
    assert trio.current_time() - start < 10


async def test_presence_across_two_connections_of_one_user(world, autojump_clock):
    _, watcher = await world.connect("w")
    await ask(watcher, "subscribe", {"topic": "presence:u"}, id="s")
    tab1, c1 = await world.connect("u")
    tab2, c2 = await world.connect("u")
    await ask(c1, "presence.set", {"status": "AWAY"}, id="a")
    await ask(c2, "presence.set", {"status": "AWAY"}, id="b")
    await ask(c2, "presence.set", {"status": "ONLINE"}, id="c")
    c2.close()
    await tab2.closed.wait()
    c1.close()
    await tab1.closed.wait()
    calls = [status for user, status in world.domain.presence_calls if user == "u"]
    assert calls == ["ONLINE", "AWAY", "ONLINE", "AWAY", "OFFLINE"]
    with trio.fail_after(5):
        last = await watcher.receive()
    assert last["type"] == "user.presence.updated"
    assert last["payload"]["status"] in ("ONLINE", "AWAY", "OFFLINE")


async def test_bad_frames_get_errors_and_the_connection_stays_open(world, autojump_clock):
    _, client = await world.connect("alice")
    await client.send_text("not json")
    with trio.fail_after(5):
        error = await client.receive()
    assert error["type"] == "error" and error["payload"]["code"] == "BAD_REQUEST"
    bad_shape = await ask(client, "chat.send", {"conversationId": "c"}, id="b1")
    assert bad_shape["payload"]["code"] == "BAD_REQUEST"
    assert bad_shape["payload"]["path"].startswith("payload")
    unknown = await ask(client, "teleport", {}, id="u1")
    assert unknown["payload"]["code"] == "UNKNOWN_ACTION"
    assert (await ask(client, "ping", id="p"))["type"] == "ping.pong"
    assert client.close_code is None


async def test_unsupported_version_errors_then_closes_4000(world, autojump_clock):
    _, client = await world.connect("alice")
    await client.send("ping", id="v", v=2)
    with trio.fail_after(5):
        envelopes = await client.drain()
    assert envelopes[-1]["payload"]["code"] == "UNSUPPORTED_VERSION"
    assert client.close_code == 4000


async def test_repeated_protocol_violations_close_4000(world, autojump_clock):
    _, client = await world.connect("alice")
    for _ in range(10):
        await client.send_text("{")
    with trio.fail_after(5):
        envelopes = await client.drain()
    assert [e["payload"]["code"] for e in envelopes] == ["BAD_REQUEST"] * 10
    assert client.close_code == 4000


async def test_oversized_frame_closes_1009(world, autojump_clock):
    _, client = await world.connect("alice")
    await client.send("ping", {"pad": "x" * 70_000}, id="big")
    with trio.fail_after(5):
        await client.drain()
    assert client.close_code == 1009


async def test_rate_limited_with_retry_after(world, autojump_clock):
    _, client = await world.connect("alice")
    for i in range(45):
        await client.send("ping", id=f"p{i}")
    with trio.fail_after(5):
        replies = [await client.receive() for _ in range(45)]
    assert [r["type"] for r in replies[:40]] == ["ping.pong"] * 40
    limited = replies[40:]
    assert all(r["payload"]["code"] == "RATE_LIMITED" for r in limited)
    assert all(r["payload"]["retryAfterMs"] > 0 for r in limited)
    assert [r["replyTo"] for r in limited] == [f"p{i}" for i in range(40, 45)]
    await trio.sleep(1)
    assert (await ask(client, "ping", id="later"))["type"] == "ping.pong"


async def test_sustained_flood_closes_4008(world, autojump_clock):
    _, client = await world.connect("alice")

    async def flood():
        try:
            for i in range(1000):
                await client.send("ping", id=f"f{i}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            envelopes = await client.drain()
    assert client.close_code == 4008
    codes = [e["payload"].get("code") for e in envelopes if e["type"] == "error"]
    assert codes and set(codes) == {"RATE_LIMITED"}


async def test_slow_consumer_is_closed_4008_and_resumes_without_loss(world, autojump_clock):
    small = WsSettings(send_buffer_items=8)
    conn, client = await world.connect("alice", client_buffer=1, settings=small)
    for _ in range(30):
        await world.publish(world.store.append("alice"))
    # the writer is stuck on the unread frame until the send timeout, then ends
    with trio.fail_after(small.slow_consumer_timeout_s + 1):
        await conn.closed.wait()
    assert client.close_code == 4008
    seen = [e["seq"] for e in await client.drain()]
    assert seen == list(range(1, len(seen) + 1))
    # the client comes back and resumes from what it saw
    _, again = await world.connect("alice")
    await again.send("session.resume", {"epoch": world.store.epoch, "lastSeq": seen[-1]}, id="r")
    with trio.fail_after(5):
        resumed, replayed = await again.receive_until(reply_to("r"))
    assert [e["seq"] for e in replayed] == list(range(seen[-1] + 1, 31))
    assert resumed["payload"] == {"fromSeq": seen[-1] + 1, "toSeq": 30}


async def test_resume_reset_on_epoch_change(world, autojump_clock):
    _, client = await world.connect("alice")
    reset = await ask(client, "session.resume", {"epoch": "gone", "lastSeq": 3}, id="r")
    assert reset["type"] == "session.reset"
    assert reset["payload"]["reason"] == "EPOCH_CHANGED"


async def test_token_expiry_sends_error_and_closes_4001(world, autojump_clock):
    _, client = await world.connect("alice", ttl_s=60)
    start = trio.current_time()
    with trio.fail_after(120):
        envelopes = await client.drain()
    assert envelopes[-1]["type"] == "error"
    assert envelopes[-1]["payload"]["code"] == "TOKEN_EXPIRED"
    assert client.close_code == 4001
    assert 59 <= trio.current_time() - start <= 61


async def test_refresh_extends_the_session(world, autojump_clock):
    _, client = await world.connect("alice", ttl_s=60)
    ack = await ask(client, "auth.refresh", {"token": "alice:600"}, id="a")
    assert ack["type"] == "ack" and ack["payload"]["expiresAt"].endswith("Z")
    other = await ask(client, "auth.refresh", {"token": "mallory:600"}, id="b")
    assert other["payload"]["code"] == "UNAUTHORIZED"
    expired = await ask(client, "auth.refresh", {"token": "expired"}, id="c")
    assert expired["payload"]["code"] == "TOKEN_EXPIRED"
    for _ in range(4):  # stay active past the first token's expiry
        await trio.sleep(30)
        await ask(client, "ping", id="p")
    assert client.close_code is None


async def test_idle_connection_is_closed(world, autojump_clock):
    _, client = await world.connect("alice")
    await trio.sleep(60)
    await ask(client, "ping", id="p")  # activity resets the idle timer
    start = trio.current_time()
    with trio.fail_after(200):
        await client.drain()
    assert client.close_code == 1001
    assert 74 <= trio.current_time() - start <= 76


async def test_graceful_shutdown_reconnect_then_1012_each_with_a_different_delay(
    world, autojump_clock
):
    clients = [(await world.connect(f"u{i}"))[1] for i in range(5)]
    with trio.fail_after(15):
        assert await world.hub.shutdown(grace_s=10)
    delays = []
    for client in clients:
        envelopes = await client.drain()
        assert envelopes[-1]["type"] == "system.reconnect"
        assert envelopes[-1]["payload"]["reason"] == "SERVER_RESTART"
        delays.append(envelopes[-1]["payload"]["retryAfterMs"])
        assert client.close_code == 1012
    assert len(set(delays)) == 5


async def test_frames_batch_several_envelopes(world, autojump_clock):
    _, client = await world.connect("alice")
    events = [world.store.append("alice") for _ in range(3)]
    world.hub.deliver_durable(events)
    with trio.fail_after(5):
        frame = await client.receive_frame()
    assert [json.loads(line)["seq"] for line in frame.split("\n")] == [1, 2, 3]


async def test_negative_last_seq_is_a_bad_request(world, autojump_clock):
    _, client = await world.connect("alice")
    error = await ask(client, "session.resume", {"epoch": world.store.epoch, "lastSeq": -1})
    assert error["payload"]["code"] == "BAD_REQUEST"
    assert error["payload"]["path"] == "payload.lastSeq"


async def test_a_failing_tail_does_not_end_the_connection(world, autojump_clock):
    _, client = await world.connect("alice")
    calls = {"n": 0}
    real = world.store.stream_position

    def flaky(user_id):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("database is locked")
        return real(user_id)

    world.store.stream_position = flaky
    world.store.append("alice")  # its notification is lost: only tailing finds it
    with trio.fail_after(30):
        event = await client.receive()
    assert event["seq"] == 1 and calls["n"] >= 2
    assert client.close_code is None


async def test_metrics_count_overflows_disconnects_and_actions(world, autojump_clock):
    from ops.metrics import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    overflows = sample("cutover_send_buffer_overflows_total")
    closed_4008 = sample("cutover_disconnects_total", code="4008")
    pings = sample("cutover_actions_total", action="ping", outcome="ok")
    _, client = await world.connect("bob")
    await ask(client, "ping")
    assert sample("cutover_actions_total", action="ping", outcome="ok") == pings + 1
    conn, _ = await world.connect(
        "alice", client_buffer=1, settings=WsSettings(send_buffer_items=4)
    )
    for _ in range(20):
        await world.publish(world.store.append("alice"))
    with trio.fail_after(30):
        await conn.closed.wait()
    assert sample("cutover_send_buffer_overflows_total") == overflows + 1
    assert sample("cutover_disconnects_total", code="4008") == closed_4008 + 1


async def test_event_committed_while_connecting_arrives_without_waiting_for_the_tail(
    world, autojump_clock
):
    real = world.store.stream_position
    committed = []

    def position_then_commit(user_id):
        cursor = real(user_id)
        if not committed:
            # committed and published after the position was read
            committed.append(world.store.append("alice"))
            world.hub.deliver_durable(committed)
        return cursor

    world.store.stream_position = position_then_commit
    start = trio.current_time()
    _, client = await world.connect("alice")
    with trio.fail_after(1):
        event = await client.receive()
    assert event["seq"] == 1
    assert trio.current_time() - start < 1


async def test_a_resume_larger_than_the_send_buffer_is_paced_not_cut_off(world, autojump_clock):
    for _ in range(200):
        world.store.append("alice", "notification.new", {"pad": "x" * 500})
    small = WsSettings(send_buffer_items=8, send_buffer_bytes=4096)
    _, client = await world.connect("alice", client_buffer=1, settings=small)
    await client.send("session.resume", {"epoch": world.store.epoch, "lastSeq": 0}, id="r")
    seqs = []
    with trio.fail_after(120):
        while True:
            envelope = await client.receive()
            if envelope.get("replyTo") == "r":
                break
            seqs.append(envelope["seq"])
            await trio.sleep(0.2)  # a slow reader, but one that keeps reading
    assert seqs == list(range(1, 201))
    assert envelope["payload"] == {"fromSeq": 1, "toSeq": 200}
    assert client.close_code is None


class TenantTopics:
    """App-declared `goal:<tenant>/<id>` topics; None for every other topic."""

    async def allowed(self, user_id, tenant, topic):
        await trio.lowlevel.checkpoint()
        if not topic.startswith("goal:"):
            return None
        return tenant is not None and topic.startswith(f"goal:{tenant}/")


async def test_app_declared_topics_are_authorized_by_the_topic_authorizer(world, autojump_clock):
    from gateway.ws.connection import Connection
    from gateway.ws.transport import MemoryTransport

    from .conftest import Principal, Viewer, inline_runner

    world.domain.conversations["c"] = {"acme/ann"}
    transport = MemoryTransport()
    conn = Connection(
        transport,
        Principal("acme/ann", tenant="acme", expires_at=10**10),
        hub=world.hub,
        store=world.store,
        domain=world.domain,
        runner=inline_runner,
        viewer_factory=lambda p: Viewer(p.user_id),
        topic_authorizer=TenantTopics(),
    )
    world.nursery.start_soon(conn.serve)
    world.connections.append((conn, transport.client))
    client = transport.client
    await client.receive()
    ok = await ask(client, "subscribe", {"topic": "goal:acme/g1"}, id="a")
    assert ok["type"] == "ack"
    other = await ask(client, "subscribe", {"topic": "goal:globex/g1"}, id="b")
    assert other["payload"]["code"] == "FORBIDDEN"
    builtin = await ask(client, "subscribe", {"topic": "conversation:c"}, id="c")
    assert builtin["type"] == "ack"
    assert world.hub.subscribers("goal:acme/g1") == [conn]
